"""Registration finds the pin lattice of a moved product and refuses what is not a connector."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw
from scipy import ndimage as ndi

from dataset_tools.compose import compose
from dataset_tools.render import (
    HOUSINGS,
    PIN_STYLES,
    ConnectorSpec,
    Nuisances,
    Placement,
    Pose,
    render_connector,
    sockets_in_view,
)
from qeu_space.geometry import CompositeLayout, ConnectorGeometry
from qeu_space.views.registration import (
    NoConnectorError,
    Registration,
    canonical_composite,
    lattice_error,
    register,
    register_composite,
)
from qeu_space.vocabulary import ALL_POSITIONS, Direction, Finding

LAYOUT = CompositeLayout(448)
GEO = LAYOUT.connector
# the lighting / blur / noise / JPEG nuisances of the robustness benchmark's harshest settings
HARSH = Nuisances(
    gain=0.4, gradient=0.12, noise=8.0, blur=1.5, shift=0.0, rotation=0.0, jpeg=(50, 95),
    jpeg_probability=0.5, placement=Placement.off(),
)  # fmt: skip


def _defects(rng: np.random.Generator, n: int) -> tuple[Finding, ...]:
    out = []
    for i in rng.choice(len(ALL_POSITIONS), size=n, replace=False):
        kind = ("bent pin", "missing pin", "short pin")[rng.integers(3)]
        direction = list(Direction)[rng.integers(4)] if kind == "bent pin" else None
        out.append(Finding(ALL_POSITIONS[i], kind, direction))
    return tuple(out)


@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])  # fmt: skip
@given(
    dx=st.floats(-24, 24),
    dy=st.floats(-24, 24),
    angle=st.floats(-6, 6),
    scale=st.floats(0.88, 1.12),
    housing=st.sampled_from(HOUSINGS),
    pins=st.sampled_from(PIN_STYLES),
    defects=st.integers(0, 5),
    seed=st.integers(0, 2**16),
)
def test_registration_recovers_a_known_pose(dx, dy, angle, scale, housing, pins, defects, seed):
    """Any pose in the benchmark's ranges, up to five bent, missing or short pins: <= 1 px RMS."""
    rng = np.random.default_rng(seed)
    pose = Pose(dx, dy, angle, scale)
    spec = ConnectorSpec(housing, pins, _defects(rng, defects))
    rendered = render_connector(spec, GEO, HARSH, rng, pose=pose)
    try:
        reg = register(rendered.image)
    except NoConnectorError:
        # only a product partly out of view may be refused; one in view is always found
        assert not sockets_in_view(GEO, rendered.pose)
        return
    assert lattice_error(reg, rendered.pose) <= 1.0
    assert reg.residual < 1.0
    assert abs(reg.rotation - angle) < 0.5 and abs(reg.scale - scale) < 0.01


def test_a_missing_pin_is_an_inlier_and_a_bent_pin_does_not_pull_the_fit():
    rng = np.random.default_rng(3)
    bent = tuple(Finding(p, "bent pin", "right") for p in ("U1", "U2", "C1", "D1", "D2"))
    spec = ConnectorSpec("standard", "square", (*bent, Finding("C5", "missing pin")))
    rendered = render_connector(spec, GEO, Nuisances.off(), rng, pose=Pose(10, -6, 4, 1.05))
    reg = register(rendered.image)
    assert lattice_error(reg, rendered.pose) < 0.5
    assert "C5" in {p.name for p in reg.inliers}


@pytest.mark.parametrize("pins", PIN_STYLES)
def test_short_pins_sockets_are_inliers(pins):
    """A pin pushed into the housing still leaves a socket-sized dark square: a site that fits."""
    rng = np.random.default_rng(4)
    short = ("U1", "U5", "U9", "C2", "C4", "C6", "C8", "D1", "D5", "D9")
    spec = ConnectorSpec("ribbed", pins, tuple(Finding(p, "short pin") for p in short))
    rendered = render_connector(spec, GEO, HARSH, rng, pose=Pose(-12, 8, -5, 0.92))
    reg = register(rendered.image)
    assert lattice_error(reg, rendered.pose) < 1.0
    assert set(short) <= {p.name for p in reg.inliers} and len(reg.inliers) >= 15


def test_an_unmoved_product_registers_to_the_identity():
    rng = np.random.default_rng(0)
    rendered = render_connector(ConnectorSpec(), GEO, Nuisances.off(), rng)
    reg = register(rendered.image)
    assert np.allclose(reg.matrix, np.eye(3), atol=0.01 * 10)
    assert lattice_error(reg, np.eye(3)) < 0.3
    warped = np.asarray(reg.warp(Image.fromarray(rendered.image)), np.float32)
    assert np.abs(warped - rendered.image).mean() < 3.0


def test_warp_puts_a_moved_product_back_where_the_canonical_one_is():
    rng = np.random.default_rng(1)
    spec = ConnectorSpec("ribbed", "round", (Finding("C7", "missing pin"),))
    still = render_connector(spec, GEO, Nuisances.off(), np.random.default_rng(1)).image
    moved = render_connector(spec, GEO, Nuisances.off(), rng, pose=Pose(-20, 12, -5, 0.9))
    canonical = np.asarray(register(moved.image).warp(Image.fromarray(moved.image)), np.float32)
    inner = (slice(20, -20), slice(20, -20))
    diff = np.abs(canonical - still.astype(np.float32))[inner].mean()
    baseline = np.abs(moved.image.astype(np.float32) - still)[inner].mean()
    assert diff < 8.0 < baseline  # resampling blurs a little; the move itself is far larger


def test_boxes_map_between_the_image_and_the_canonical_frame():
    reg = Registration(Pose(10, 5, 3, 1.1).matrix((GEO.width, GEO.height)), GEO, 0.0)
    box = GEO.pin_box(ALL_POSITIONS[13])
    back = reg.box_to_canonical(reg.box_to_image(box))
    assert back[0] <= box[0] and back[2] >= box[2]  # bounds of a turned box hold the box
    centre = np.array([[(box[0] + box[2]) / 2, (box[1] + box[3]) / 2]])
    assert np.allclose(reg.to_canonical(reg.to_image(centre)), centre)


def test_a_composite_registers_both_panels_and_keeps_its_labels():
    rng = np.random.default_rng(5)
    ref = render_connector(ConnectorSpec(), GEO, Nuisances.off(), rng)
    test = render_connector(
        ConnectorSpec(findings=(Finding("D6", "missing pin"),)),
        GEO,
        Nuisances.off(),
        rng,
        pose=Pose(18, -9, 5, 1.08),
    )
    composite = compose(ref.image, test.image, LAYOUT, labels_drawn=True)
    regs = register_composite(composite)
    assert lattice_error(regs.test, test.pose) < 1.0
    assert lattice_error(regs.reference, np.eye(3)) < 1.0
    canonical, _ = canonical_composite(composite)
    label_strip = (0, 0, LAYOUT.margins[0], LAYOUT.size)  # the row letters stay as drawn
    assert canonical.crop(label_strip).tobytes() == composite.crop(label_strip).tobytes()
    # the truth box, mapped into the canonical composite, lies on D6's cell
    box = regs.box_to_canonical(LAYOUT.to_composite(test.findings[0].box))
    assert LAYOUT.position_at((box[0] + box[2]) / 2, (box[1] + box[3]) / 2).name == "D6"


def _not_connectors() -> dict[str, Image.Image]:
    h, w = GEO.height, GEO.width
    rng = np.random.default_rng(0)
    images = {
        "black": Image.new("RGB", (w, h)),
        "white": Image.new("RGB", (w, h), (255, 255, 255)),
        "transparent": Image.new("RGBA", (w, h), (0, 0, 0, 0)),
        "grey": Image.new("L", (w, h), 128),
    }
    for sigma in (0, 2, 8):
        noise = rng.normal(128, 60, (h, w, 3))
        if sigma:
            noise = (ndi.gaussian_filter(noise, (sigma, sigma, 0)) - 128) * (1 + sigma) + 128
        images[f"noise sigma {sigma}"] = Image.fromarray(np.clip(noise, 0, 255).astype(np.uint8))
    squares = Image.new("RGB", (w, h), (200, 200, 200))
    draw = ImageDraw.Draw(squares)
    for x, y in rng.uniform((20, 20), (w - 20, h - 20), (40, 2)):
        draw.rectangle((x - 10, y - 10, x + 10, y + 10), fill=(20, 20, 20))
    images["random dark squares"] = squares
    stripes = np.zeros((h, w, 3), np.uint8)
    stripes[:, ::30] = 255
    images["stripes"] = Image.fromarray(ndi.maximum_filter(stripes, (1, 9, 1)))
    text = Image.new("RGB", (w, h), (235, 235, 235))
    ImageDraw.Draw(text).multiline_text((10, 10), "QEU\ninspection\nreport", fill=(0, 0, 0))
    images["text"] = text
    small = Image.new("RGB", (w, h), (38, 41, 47))  # a connector at half the expected size
    tiny = render_connector(ConnectorSpec(), ConnectorGeometry(w // 2, h // 2), Nuisances.off(),
                            rng).image  # fmt: skip
    small.paste(Image.fromarray(tiny), (w // 4, h // 4))
    images["connector at half size"] = small
    return images


@pytest.mark.parametrize("name", list(_not_connectors()))
def test_what_is_not_a_connector_is_refused_with_a_reason(name):
    image = _not_connectors()[name]
    with pytest.raises(NoConnectorError, match=r"^no connector found \(.+\)$"):
        register(image)


def test_a_composite_without_a_connector_names_the_panel():
    blank = Image.new("RGB", (448, 448), (24, 26, 30))
    with pytest.raises(NoConnectorError, match="reference product"):
        register_composite(blank)
