"""Looks: each family renders deterministically, ``Rendered.pose`` is the true homography of the
housing top on every family (black housing and 10 degree tilt included), held-out families are
never drawn for training, and builds record each row's look."""

from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np
import pytest

from dataset_tools.compose import SampleSpec, make_sample
from dataset_tools.looks import (
    CLASSIC,
    HELD_OUT_FAMILIES,
    LOOK_FAMILIES,
    TRAIN_FAMILIES,
    Look,
    draw_look,
    resolve_looks,
)
from dataset_tools.looks.camera import Camera
from dataset_tools.looks.frame import plane_frame
from dataset_tools.looks.scene import _layers, _warp
from dataset_tools.render import ConnectorSpec, Nuisances, Pose, render_connector
from qeu_space.geometry import CompositeLayout
from qeu_space.vocabulary import ALL_POSITIONS, DefectKind, Finding

GEO = CompositeLayout(448).connector
FAMILIES = list(LOOK_FAMILIES)
LOOKED = [f for f in FAMILIES if f != CLASSIC]
DEFECTS = (
    Finding(ALL_POSITIONS[2], DefectKind.BENT, "left"),
    Finding(ALL_POSITIONS[13], DefectKind.MISSING),
    Finding(ALL_POSITIONS[22], DefectKind.SHORT),
)


def _render(family: str, seed: int, findings=DEFECTS):
    rng = np.random.default_rng(seed)
    look = draw_look(family, rng, GEO)
    return render_connector(ConnectorSpec(findings=findings), GEO, Nuisances(), rng, look=look)


@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_renders_the_same_bytes_from_the_same_seed(family):
    a, b, c = _render(family, 7), _render(family, 7), _render(family, 8)
    assert a.image.shape == (GEO.height, GEO.width, 3) and a.image.dtype == np.uint8
    assert a.image.tobytes() == b.image.tobytes()
    assert np.array_equal(a.pose, b.pose)
    assert a.image.tobytes() != c.image.tobytes()
    assert a.look.family == family and a.look == b.look and a.look.classic == (family == CLASSIC)


def test_classic_look_is_the_first_renderer_byte_for_byte():
    spec = ConnectorSpec("ribbed", "mixed", DEFECTS)
    plain = render_connector(spec, GEO, Nuisances(), np.random.default_rng(3))
    classic = render_connector(
        spec, GEO, Nuisances(), np.random.default_rng(3), look=draw_look(CLASSIC, None)
    )
    assert plain.image.tobytes() == classic.image.tobytes()
    assert np.array_equal(plain.pose, classic.pose)
    assert classic.top_pose is None  # a flat drawing: the tops' plane is the pose's


def _still(look: Look, **camera) -> Look:
    """The look with a noiseless, sharp, lossless camera (and any camera setting given)."""
    cam = replace(look.camera, read_noise=0.0, shot_noise=0.0, defocus=0.0, dof=0.0, jpeg=None)
    return replace(look, camera=replace(cam, **camera))


def _socket_contrast(image: np.ndarray, pose: np.ndarray, offset=(0.0, 0.0)) -> np.ndarray:
    """Per site: the housing's grey level (half a pitch beside the site, between sockets) minus
    the mean grey level of a small disc around ``pose`` of the site centre (+ ``offset``)."""
    grey = image.astype(np.float32).mean(axis=2)
    px, py = GEO.pitch
    r = GEO.socket_size * 0.3
    out = []
    for p in ALL_POSITIONS:
        cx, cy = GEO.pin_center(p)
        values = []
        for x, y in ((cx + offset[0], cy + offset[1]), (cx + px / 2, cy)):
            u, v, w = pose @ np.array([x, y, 1.0])
            u, v = u / w, v / w
            ys, xs = np.mgrid[0 : grey.shape[0], 0 : grey.shape[1]] + 0.5
            values.append(grey[(xs - u) ** 2 + (ys - v) ** 2 <= r * r].mean())
        out.append(values[1] - values[0])
    return np.array(out)


CASES = [(f, {}) for f in LOOKED] + [
    ("black-on-wood", {"tilt": 10.0, "tilt_axis": 35.0}),
    ("dark-plastic", {"tilt": 10.0, "tilt_axis": 125.0, "focal": 2.0}),
    ("light-round", {"tilt": 10.0, "tilt_axis": 260.0, "scale": 0.8}),
]


@pytest.mark.parametrize("family, camera", CASES)
def test_pose_lands_on_every_socket_for_every_look(family, camera):
    """Empty sockets (all 27 pins missing) are darker than the housing exactly where ``pose``
    puts the socket centres, and not one pitch off (the periodic lattice's wrong window)."""
    rng = np.random.default_rng(11)
    look = _still(draw_look(family, rng, GEO), **camera)
    empty = tuple(Finding(p, DefectKind.MISSING) for p in ALL_POSITIONS)
    out = render_connector(ConnectorSpec(findings=empty), GEO, Nuisances(), rng, look=look)
    contrast = _socket_contrast(out.image, out.pose)
    assert contrast.min() > 4, f"{family}: a socket is not where pose says ({contrast.min():.1f})"
    px, _ = GEO.pitch
    shifted = _socket_contrast(out.image, out.pose, offset=(px / 2, 0.0))
    assert np.abs(shifted).mean() < contrast.mean() / 3


@pytest.mark.parametrize("tilt, axis", [(0.0, 0.0), (6.0, 80.0), (10.0, 200.0), (10.0, 315.0)])
def test_pose_is_the_exact_homography_of_the_socket_openings(tilt, axis):
    """The socket openings as drawn (before the sensor) are centred on ``pose`` of the canonical
    socket centres to a few hundredths of a pixel (the centroid of a projected square is not
    quite the projection of its centre: that, not the warp, is the residual)."""
    look = draw_look("any", np.random.default_rng(2), GEO)
    look = _still(look, tilt=tilt, tilt_axis=axis, focal=2.0, roll=4.0, dx=3.3, dy=-2.1)
    out = render_connector(ConnectorSpec(), GEO, Nuisances(), np.random.default_rng(0), look=look)
    _, holes, _, _ = _layers(look.product, GEO, ())
    hole = _warp(holes, out.pose @ plane_frame(GEO).to_canonical, (GEO.width, GEO.height))
    errors = []
    for p in ALL_POSITIONS:
        u, v, w = out.pose @ np.array([*GEO.pin_center(p), 1.0])
        c = np.array([u / w, v / w])
        x0, y0 = int(c[0]) - 15, int(c[1]) - 15
        win = hole[y0 : y0 + 31, x0 : x0 + 31]
        ys, xs = np.mgrid[y0 : y0 + 31, x0 : x0 + 31] + 0.5
        errors.append(
            np.hypot((win * xs).sum() / win.sum() - c[0], (win * ys).sum() / win.sum() - c[1])
        )
    assert max(errors) < 0.06


def test_a_tilted_camera_gives_a_perspective_pose_and_pin_parallax():
    look = _still(draw_look("steep-tilt", np.random.default_rng(4), GEO), tilt=9.0, focal=2.0)
    out = render_connector(ConnectorSpec(), GEO, Nuisances(), np.random.default_rng(0), look=look)
    assert abs(out.pose[2, 0]) + abs(out.pose[2, 1]) > 1e-5  # keystone: not an affine map
    from dataset_tools.looks.camera import Projector
    from dataset_tools.looks.defects import pin_height

    proj = Projector(out.look.camera, GEO)
    centres = np.array([GEO.pin_center(p) for p in ALL_POSITIONS])
    parallax = proj.project(centres, pin_height(GEO, look.product.pins)) - proj.project(centres, 0)
    assert np.linalg.norm(parallax, axis=1).max() > 1.0  # pin tops stand above the housing
    # top_pose is the pin tops' plane: the tops' true centres, not the sockets'
    tops = proj.project(centres, pin_height(GEO, look.product.pins))
    mapped = np.c_[centres, np.ones(len(centres))] @ out.top_pose.T
    assert np.allclose(mapped[:, :2] / mapped[:, 2:], tops, atol=1e-6)
    # and a pose given explicitly replaces the look's placement (like the classic renderer's)
    still = _still(look, tilt=0.0)
    placed = render_connector(
        ConnectorSpec(),
        GEO,
        Nuisances(),
        np.random.default_rng(0),
        look=still,
        pose=Pose(5, -3, 2, 0.95),
    )
    assert np.allclose(placed.pose, Pose(5, -3, 2, 0.95).matrix((GEO.width, GEO.height)), atol=1e-9)


@pytest.mark.parametrize("family", LOOKED)
def test_defect_boxes_hold_the_defects_in_image_pixels(family):
    """Rendered twice with the same shot and noise, good and defective differ most inside the
    boxes, and every box holds a change."""
    rng = np.random.default_rng(5)
    look = _still(draw_look(family, rng, GEO))
    good = render_connector(ConnectorSpec(), GEO, Nuisances(), np.random.default_rng(1), look=look)
    bad = render_connector(
        ConnectorSpec(findings=DEFECTS), GEO, Nuisances(), np.random.default_rng(1), look=look
    )
    diff = np.abs(bad.image.astype(int) - good.image).max(axis=2)
    inside = np.zeros(diff.shape, bool)
    for f in bad.findings:
        x1, y1, x2, y2 = f.box
        assert 0 <= x1 < x2 <= GEO.width and 0 <= y1 < y2 <= GEO.height
        box = diff[int(y1) : int(np.ceil(y2)), int(x1) : int(np.ceil(x2))]
        assert box.max() > 12, f"{f.position} {f.kind}: no change in its box"
        inside[int(y1) : int(np.ceil(y2)), int(x1) : int(np.ceil(x2))] = True
    assert diff[inside].sum() > 0.6 * diff.sum()  # what changes outside: cast shadows


def test_held_out_families_are_disjoint_from_training_and_never_drawn_by_it():
    assert set(HELD_OUT_FAMILIES) and len(HELD_OUT_FAMILIES) >= 2
    assert not set(HELD_OUT_FAMILIES) & set(TRAIN_FAMILIES)
    assert set(HELD_OUT_FAMILIES) | set(TRAIN_FAMILIES) == set(LOOK_FAMILIES)
    rng = np.random.default_rng(0)
    for family in TRAIN_FAMILIES:
        if family == CLASSIC:
            continue
        for _ in range(150):
            look = draw_look(family, rng, GEO)
            product = look.product
            assert not (product.housing.colour == "black" and product.bench.kind == "wood")
            for shot in (look, look.shot(rng, GEO)):
                assert shot.camera.tilt <= 6.5
    tilts = [draw_look("steep-tilt", rng, GEO).camera.tilt for _ in range(50)]
    assert min(tilts) >= 7.0 and max(tilts) <= 10.0
    woods = {draw_look("black-on-wood", rng, GEO).product.bench.kind for _ in range(20)}
    assert woods == {"wood"}


@pytest.mark.parametrize(
    "text, expected",
    [
        ("all", tuple(LOOK_FAMILIES)),
        ("train", TRAIN_FAMILIES),
        ("held-out", HELD_OUT_FAMILIES),
        ("any, classic,any", ("any", "classic")),
    ],
)
def test_resolve_looks(text, expected):
    assert resolve_looks(text) == expected


@pytest.mark.parametrize("text", ["", "nope", "any,nope", ","])
def test_unknown_looks_are_refused_in_one_line(text):
    with pytest.raises(ValueError) as e:
        resolve_looks(text)
    assert "\n" not in str(e.value) and "choose" in str(e.value)


def test_the_cli_refuses_unknown_looks_in_one_line(tmp_path, capsys):
    from dataset_tools.__main__ import main

    rc = main(
        ["build", "--config", "qa", "--num", "2", "--out", str(tmp_path / "d"), "--looks", "wood"]
    )
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err and "--looks" in err and "unknown look wood" in err


def test_a_sample_is_one_product_in_two_shots():
    spec = SampleSpec("s", "standard", "square", DEFECTS, True)
    sample = make_sample(spec, np.random.default_rng(9), look="dark-plastic")
    ref, test = sample.looks
    assert sample.look == "dark-plastic" and ref.product == test.product
    assert ref.camera != test.camera  # a new shot: placement, exposure, ...
    assert ref.camera.focal == pytest.approx(test.camera.focal, rel=0.02)
    assert sample.housing == ref.product.housing.colour
    assert not np.array_equal(sample.reference_pose, sample.test_pose)
    assert not np.array_equal(sample.test_top_pose, sample.test_pose)  # the pins stand up
    assert len(sample.findings) == 3
    classic = make_sample(spec, np.random.default_rng(9))
    assert classic.look == CLASSIC and classic.looks is None and classic.test_pose is not None
    assert np.array_equal(classic.test_top_pose, classic.test_pose)  # drawn flat


def test_builds_record_each_rows_look_and_add_the_held_out_looks_split():
    from dataset_tools.builders import BuildConfig, build_dataset

    dd = build_dataset(BuildConfig("od", num=4, looks="train", size=224, eval_fraction=0.5))
    assert list(dd) == ["train", "validation", "test", "test_unseen_housing", "test_held_out_looks"]
    for split, ds in dd.items():
        looks = set(ds["look"])
        allowed = HELD_OUT_FAMILIES if split == "test_held_out_looks" else TRAIN_FAMILIES
        assert looks <= set(allowed), (split, looks)
    cls = build_dataset(BuildConfig("cls", num=2, looks="held-out,classic", size=224))
    assert "test_held_out_looks" not in cls  # held-out looks asked for: no separate split
    assert set(cls["train"]["look"]) <= {"classic", *HELD_OUT_FAMILIES}


def test_a_jpeg_shot_is_decoded_in_rgb_order():
    look = _still(draw_look("grey-gold", np.random.default_rng(3), GEO))
    raw = render_connector(ConnectorSpec(), GEO, Nuisances(), np.random.default_rng(0), look=look)
    jpeg = replace(look, camera=replace(look.camera, jpeg=95))
    out = render_connector(ConnectorSpec(), GEO, Nuisances(), np.random.default_rng(0), look=jpeg)
    assert np.abs(out.image.astype(int) - raw.image).mean() < 3
    assert cv2.PSNR(out.image, raw.image) > 30


def test_the_card_names_the_looks_and_the_held_out_families():
    from dataset_tools.builders import BuildConfig
    from dataset_tools.card import dataset_card

    cfg = BuildConfig("qa", num=4, looks="train", size=224)
    splits = {s: 1 for s in cfg.split_sizes}
    text = str(dataset_card(cfg, {s: [] for s in splits}, splits, "python -m dataset_tools build"))
    assert "## Looks" in text and "`test_held_out_looks`" in text
    for name in (*TRAIN_FAMILIES, *HELD_OUT_FAMILIES):
        assert f"`{name}`" in text
    classic = str(dataset_card(BuildConfig("qa", num=4, size=224), {}, {"train": 4}, "cmd"))
    assert "`classic` look" in classic


def test_a_hand_made_family_draws_and_shoots():
    from dataset_tools.looks import LookFamily
    from dataset_tools.looks.camera import CameraRange

    family = LookFamily(
        "mine",
        "green housing on metal",
        housings=("green",),
        benches=("metal",),
        camera=CameraRange(tilt=(5.0, 5.0)),
    )
    rng = np.random.default_rng(0)
    look = draw_look(family, rng, GEO)
    assert look.product.housing.colour == "green" and look.camera.tilt == 5.0
    out = render_connector(ConnectorSpec(), GEO, Nuisances(), rng, look=look.shot(rng, GEO))
    assert out.image.shape == (GEO.height, GEO.width, 3)


@pytest.mark.parametrize(
    "colour, shape, top",
    [
        ("black", "round", "domed"),
        ("grey", "square", "flat"),
        ("blue", "square", "domed"),
        ("dark grey", "round", "flat"),
    ],
)
def test_defects_differ_by_geometry(colour, shape, top):
    """Top-down, one shot: a short pin shows a smaller metal face than a good pin, centred in
    its socket; a missing pin shows no metal; a bent pin's metal moves toward its direction."""
    from dataset_tools.looks import Product
    from dataset_tools.looks.bench import Bench
    from dataset_tools.looks.housing import Housing
    from dataset_tools.looks.light import Light
    from dataset_tools.looks.pins import Pins

    product = Product(Housing(colour), Pins(shape, "gold", top), Light("diffuse"), Bench())
    look = Look("any", product, Camera(read_noise=0.0, shot_noise=0.0, defocus=0.0))
    short, missing, bent = (
        Finding(ALL_POSITIONS[i], k, d)
        for i, k, d in (
            (15, DefectKind.SHORT, None),
            (22, DefectKind.MISSING, None),
            (2, DefectKind.BENT, "right"),
        )
    )
    spec = ConnectorSpec(findings=(short, missing, bent))
    good = render_connector(ConnectorSpec(), GEO, Nuisances(), np.random.default_rng(0), look=look)
    bad = render_connector(spec, GEO, Nuisances(), np.random.default_rng(0), look=look)
    grey_good = good.image.astype(np.float32).mean(axis=2)
    grey_bad = bad.image.astype(np.float32).mean(axis=2)
    r = int(GEO.socket_size / 2)
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    opening = np.maximum(np.abs(xx), np.abs(yy)) <= r - 1

    def metal(grey, position, dx=0):
        cx, cy = GEO.pin_center(position)
        x, y = int(cx) + dx, int(cy)
        return (grey[y - r : y + r + 1, x - r : x + r + 1] > 120) & opening

    good_mask = metal(grey_good, short.position)
    good_face = good_mask.sum()
    short_face = metal(grey_bad, short.position)
    assert 0 < short_face.sum() < 0.85 * good_face
    centre = np.array(np.nonzero(short_face)).mean(axis=1)
    # in place (a bent tip moves 15 px; a smaller, dimmer face thresholds a little off centre)
    assert np.abs(centre - np.array(np.nonzero(good_mask)).mean(axis=1)).max() < 3.0
    assert metal(grey_bad, missing.position).sum() < 0.05 * good_face
    moved = metal(grey_bad, bent.position, dx=int(GEO.pitch[0] * 0.34)).sum()
    assert moved > 0.5 * good_face and metal(grey_bad, bent.position).sum() < moved


@pytest.mark.parametrize("axis", [0.0, 90.0, 200.0, 315.0])
def test_pin_tops_stand_above_the_housing_under_tilt(axis):
    """At 10 degrees of tilt with a short lens, each pin's bright face is seen where its top
    (``height`` above the housing) projects, several pixels off the socket centre ``pose`` gives:
    parallax, drawn in the pixels."""
    from dataset_tools.looks import Product
    from dataset_tools.looks.bench import Bench
    from dataset_tools.looks.camera import Projector
    from dataset_tools.looks.defects import pin_height
    from dataset_tools.looks.housing import Housing
    from dataset_tools.looks.light import Light
    from dataset_tools.looks.pins import Pins

    product = Product(Housing("black"), Pins("square", "tin", "flat", height=1.6), Light(), Bench())
    camera = Camera(focal=2.0, tilt=10.0, tilt_axis=axis, read_noise=0, shot_noise=0, defocus=0)
    out = render_connector(
        ConnectorSpec(),
        GEO,
        Nuisances(),
        np.random.default_rng(0),
        look=Look("any", product, camera),
    )
    proj = Projector(out.look.camera, GEO)
    grey = out.image.astype(np.float32).mean(axis=2)
    centres = np.array([GEO.pin_center(p) for p in ALL_POSITIONS])
    base, top = proj.project(centres, 0.0), proj.project(centres, pin_height(GEO, product.pins))
    assert np.allclose(base, [(out.pose @ [*c, 1])[:2] / (out.pose @ [*c, 1])[2] for c in centres])
    to_top, along = [], []
    for b, t in zip(base, top, strict=True):
        x0, y0 = int(b[0]) - 16, int(b[1]) - 16
        w = np.clip(grey[y0 : y0 + 33, x0 : x0 + 33] - 150, 0, None)  # the bright tin face
        ys, xs = np.mgrid[y0 : y0 + 33, x0 : x0 + 33] + 0.5
        m = np.array([(w * xs).sum() / w.sum(), (w * ys).sum() / w.sum()])
        to_top.append(np.linalg.norm(m - t))
        along.append((m - b) @ (t - b) / ((t - b) @ (t - b)))
    assert np.linalg.norm(top - base, axis=1).mean() > 3.0
    assert np.mean(to_top) < 1.5 and np.mean(along) > 0.6
