"""The renderer and the composite: truth matches pixels, defects look like what they are."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from dataset_tools.compose import SampleSpec, compose, make_sample
from dataset_tools.render import (
    HOUSINGS,
    PIN_STYLES,
    ConnectorSpec,
    Nuisances,
    render_connector,
)
from qeu_space.geometry import CompositeLayout, ConnectorGeometry
from qeu_space.vocabulary import ALL_POSITIONS, DefectKind, Direction, Finding

GEO = CompositeLayout(448).connector


def _random_findings(rng: np.random.Generator, n: int) -> tuple[Finding, ...]:
    positions = rng.choice(len(ALL_POSITIONS), size=n, replace=False)
    out = []
    for i in positions:
        kind = rng.choice(list(DefectKind))
        direction = rng.choice(list(Direction)) if kind.has_direction else None
        out.append(Finding(ALL_POSITIONS[i], kind, direction))
    return tuple(out)


def _outside_boxes(shape, boxes, grow=0.0) -> np.ndarray:
    mask = np.ones(shape[:2], bool)
    for x1, y1, x2, y2 in boxes:
        mask[
            max(int(np.floor(y1 - grow)), 0) : int(np.ceil(y2 + grow)),
            max(int(np.floor(x1 - grow)), 0) : int(np.ceil(x2 + grow)),
        ] = False
    return mask


@pytest.mark.parametrize("housing, pins", list(itertools.product(HOUSINGS, PIN_STYLES)))
def test_clean_defects_change_pixels_only_inside_their_boxes(housing, pins):
    rng = np.random.default_rng(hash((housing, pins)) % 2**32)
    reference = render_connector(ConnectorSpec(housing, pins), GEO, Nuisances.off(), rng).image
    for n in (0, 1, 3):
        findings = _random_findings(rng, n)
        out = render_connector(ConnectorSpec(housing, pins, findings), GEO, Nuisances.off(), rng)
        diff = np.abs(out.image.astype(int) - reference).max(axis=2)
        boxes = [f.box for f in out.findings]
        assert not diff[_outside_boxes(diff.shape, boxes)].any(), "change outside a truth box"
        for box in boxes:  # and every defect does change its box
            x1, y1, x2, y2 = (int(v) for v in box)
            assert diff[y1:y2, x1:x2].max() > 60


def test_passed_composite_panels_differ_nowhere_without_nuisances():
    spec = SampleSpec("p", "standard", "mixed", (), True)
    sample = make_sample(spec, np.random.default_rng(0), nuisances=Nuisances.off())
    assert np.array_equal(sample.reference, sample.test)
    layout = sample.layout
    img = np.asarray(sample.image)
    ref = img[slice(*layout.crop_box("reference")[1::2]), slice(*layout.crop_box("reference")[::2])]
    tst = img[slice(*layout.crop_box("test")[1::2]), slice(*layout.crop_box("test")[::2])]
    assert np.array_equal(ref, tst)


def test_composite_boxes_are_in_composite_pixels_and_cover_the_change():
    findings = (Finding("U3", "bent pin", "left"), Finding("D9", "missing pin"))
    findings += (Finding("C4", "short pin"),)
    spec = SampleSpec("d", "ribbed", "square", findings, True)
    sample = make_sample(spec, np.random.default_rng(1), nuisances=Nuisances.off())
    img = np.asarray(sample.image).astype(int)
    layout = sample.layout
    x1, y1, x2, y2 = layout.crop_box("test")
    rx1, ry1, rx2, ry2 = layout.crop_box("reference")
    diff = np.zeros(img.shape[:2], int)
    diff[y1:y2, x1:x2] = np.abs(img[y1:y2, x1:x2] - img[ry1:ry2, rx1:rx2]).max(axis=2)
    assert diff.any()
    assert not diff[_outside_boxes(diff.shape, [f.box for f in sample.findings])].any()
    for f in sample.findings:
        cx, cy = (f.box[0] + f.box[2]) / 2, (f.box[1] + f.box[3]) / 2
        assert layout.position_at(cx, cy) == f.position


@pytest.mark.parametrize("direction", list(Direction))
def test_bent_pin_is_displaced_toward_its_direction(direction):
    geo = ConnectorGeometry(423, 204)
    finding = Finding("C5", "bent pin", direction)
    rng = np.random.default_rng(0)
    ref = render_connector(ConnectorSpec(), geo, Nuisances.off(), rng).image.astype(float)
    out = render_connector(ConnectorSpec(findings=(finding,)), geo, Nuisances.off(), rng)
    # where the bent image is brighter than the good one, metal has arrived: the tip
    gain = (out.image.astype(float) - ref).sum(axis=2).clip(min=0)
    ys, xs = np.nonzero(gain > 60)
    cx, cy = geo.pin_center(finding.position)
    dx, dy = direction.vector
    shift = (
        np.average(xs + 0.5, weights=gain[ys, xs]) - cx,
        np.average(ys + 0.5, weights=gain[ys, xs]) - cy,
    )
    assert shift[0] * dx + shift[1] * dy > 0.25 * geo.pin_size
    assert abs(shift[0] * dy) + abs(shift[1] * dx) < 0.25 * geo.pin_size  # not sideways


def test_missing_pin_leaves_a_dark_empty_socket():
    rng = np.random.default_rng(0)
    finding = Finding("U1", "missing pin")
    out = render_connector(ConnectorSpec(findings=(finding,)), GEO, Nuisances.off(), rng)
    ref = render_connector(ConnectorSpec(), GEO, Nuisances.off(), rng)
    cx, cy = (int(v) for v in GEO.pin_center(finding.position))
    assert out.image[cy - 3 : cy + 4, cx - 3 : cx + 4].mean() < 60  # the cavity
    assert ref.image[cy - 3 : cy + 4, cx - 3 : cx + 4].mean() > 120  # a pin


def _site(image: np.ndarray, geo: ConnectorGeometry, position, half: float) -> np.ndarray:
    """Grey values of the square of half side ``half`` around a pin centre."""
    cx, cy = geo.pin_center(position)
    x1, x2, y1, y2 = (round(v) for v in (cx - half, cx + half, cy - half, cy + half))
    return image[y1:y2, x1:x2].astype(float).mean(axis=2)


@pytest.mark.parametrize("pins", PIN_STYLES)
def test_short_pin_is_a_smaller_darker_centred_face_in_a_shadow_ring(pins):
    """Pushed into the housing: unlike a missing pin the socket holds metal, unlike a bent pin
    nothing moves; the face is smaller and darker than a good pin's, ringed by shadow."""
    geo = ConnectorGeometry(423, 204)
    kinds = {"good": None, "short": "short pin", "missing": "missing pin"}
    images = {}
    for name, kind in kinds.items():
        findings = (Finding("C5", kind),) if kind else ()
        spec = ConnectorSpec("standard", pins, findings)
        images[name] = render_connector(spec, geo, Nuisances.off(), np.random.default_rng(0)).image
    position = Finding("C5", "short pin").position
    socket = 0.58 * geo.pin_size  # inside the socket (whose half side is 0.725 pin)
    centre = {k: _site(v, geo, position, 0.12 * geo.pin_size).mean() for k, v in images.items()}
    assert centre["missing"] + 60 < centre["short"] < centre["good"] - 50  # dimmer metal
    site = {k: _site(v, geo, position, socket) for k, v in images.items()}
    lit = {k: (v > 50).sum() for k, v in site.items()}  # metal (socket, shadow: < 30 grey)
    assert lit["missing"] == 0 and 0.25 * lit["good"] < lit["short"] < 0.65 * lit["good"]
    ys, xs = np.nonzero(site["short"] > 50)  # the face is centred: no lateral offset
    assert abs(xs.mean() + 0.5 - socket) < 1.0 and abs(ys.mean() + 0.5 - socket) < 1.0
    # the shadow ring: between face and socket wall, darker than the empty socket's floor
    dx, dy = np.meshgrid(*(np.abs(np.arange(n) + 0.5 - socket) for n in site["short"].shape[::-1]))
    away = np.maximum(dx, dy) if pins == "square" else np.hypot(dx, dy)  # mixed: C is round
    band = (away > 0.38 * geo.pin_size) & (away < 0.5 * geo.pin_size)
    assert site["short"][band].mean() < 0.6 * site["missing"][band].mean()


@pytest.mark.parametrize(
    "nuisance",
    [
        Nuisances(0.2, 0, 0, 0, 0, 0, None),
        Nuisances(0, 0.2, 0, 0, 0, 0, None),
        Nuisances(0, 0, 5.0, 0, 0, 0, None),
        Nuisances(0, 0, 0, 1.0, 0, 0, None),
        Nuisances(0, 0, 0, 0, 1.0, 0, None),
        Nuisances(0, 0, 0, 0, 0, 2.0, None),
        Nuisances(0, 0, 0, 0, 0, 0, (30, 40), 1.0),
    ],
    ids=["gain", "gradient", "noise", "blur", "shift", "rotation", "jpeg"],
)
def test_each_nuisance_is_switchable_and_seeded(nuisance):
    spec = ConnectorSpec("stepped", "round")
    clean = render_connector(spec, GEO, Nuisances.off(), np.random.default_rng(5)).image
    a = render_connector(spec, GEO, nuisance, np.random.default_rng(5)).image
    b = render_connector(spec, GEO, nuisance, np.random.default_rng(5)).image
    assert np.array_equal(a, b), "same seed, same pixels"
    assert not np.array_equal(a, clean), "the nuisance changes the image"


def test_geometric_nuisances_move_the_boxes_with_the_pixels():
    findings = (Finding("U1", "bent pin", "up"), Finding("D9", "missing pin"))
    nuisance = Nuisances(
        gain=0.1, gradient=0.1, noise=0, blur=0, shift=1.0, rotation=2.0, jpeg=None
    )
    for seed in range(5):
        # identical draws for both: the only difference is the defect
        good = render_connector(ConnectorSpec(), GEO, nuisance, np.random.default_rng(seed))
        bad = render_connector(
            ConnectorSpec(findings=findings), GEO, nuisance, np.random.default_rng(seed)
        )
        diff = np.abs(bad.image.astype(int) - good.image).max(axis=2)
        boxes = [f.box for f in bad.findings]
        assert boxes != [GEO.defect_box(f.position, f.kind, f.direction) for f in findings]
        assert diff[_outside_boxes(diff.shape, boxes, grow=1.0)].max(initial=0) <= 2


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: ConnectorSpec(housing="round"), "unknown housing"),
        (lambda: ConnectorSpec(pins="hex"), "unknown pin style"),
        (lambda: ConnectorSpec(findings=(Finding("C1", "missing pin"),
                                         Finding("C1", "bent pin", "up"))),
         "one defect per pin site"),
        (lambda: ConnectorSpec(findings=(Finding("C1", "bent pin"),)), "needs a direction"),
        (lambda: Nuisances(rotation=5), "at most 2 degrees"),
        (lambda: Nuisances(noise=-1), ">= 0"),
        (lambda: Nuisances(jpeg=(90, 10)), "jpeg quality"),
        (lambda: CompositeLayout(50), "at least 96"),
        (lambda: compose(np.zeros((10, 10, 3), np.uint8), np.zeros((10, 10, 3), np.uint8),
                         CompositeLayout()), "uint8 RGB of 423 x 204"),
    ],
)  # fmt: skip
def test_bad_render_input_is_refused_clearly(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_unlabelled_composite_keeps_the_connector_where_it_was():
    findings = (Finding("C2", "missing pin"),)
    a = make_sample(SampleSpec("a", "standard", "square", findings, True), np.random.default_rng(3))
    b = make_sample(
        SampleSpec("a", "standard", "square", findings, False), np.random.default_rng(3)
    )
    assert a.findings == b.findings and [f.box for f in a.findings] == [f.box for f in b.findings]
    img_a, img_b = np.asarray(a.image), np.asarray(b.image)
    x1, y1, x2, y2 = a.layout.crop_box("test")
    assert np.array_equal(img_a[y1:y2, x1:x2], img_b[y1:y2, x1:x2])
    assert not np.array_equal(img_a, img_b)  # the labels are drawn only on one
    assert DefectKind.MISSING is a.findings[0].kind
