"""SOARTC around the metric: grid positions, pictures, the CLI and the NSOART dataset variant."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from dataset_tools.compose import SampleSpec, make_sample
from dataset_tools.nsoart import nsoart_image
from dataset_tools.render import ConnectorSpec, Nuisances, render_connector
from qeu_space.geometry import CompositeLayout, ConnectorGeometry
from qeu_space.soartc import blend_heatmap, colorize, heatmap_overlay, soartc, top_positions
from qeu_space.soartc.__main__ import main
from qeu_space.soartc.overlay import DEFAULT_VMAX
from qeu_space.vocabulary import Finding, Position

LAYOUT = CompositeLayout(448)
GEO = LAYOUT.connector
SPEC_NUISANCES = Nuisances(
    gain=0.2, gradient=0.0, noise=3.0, blur=0.0, shift=1.0, rotation=0.0, jpeg=None
)


def _hot(geo: ConnectorGeometry, name: str, value: float = 9.0) -> np.ndarray:
    heat = np.zeros((geo.height, geo.width), np.float32)
    x, y = geo.pin_center(Position.parse(name))
    heat[int(y), int(x)] = value
    return heat


# --------------------------------------------------------------------------- positions


def test_top_positions_on_a_connector_image():
    heat = _hot(GEO, "C5", 9.0) + _hot(GEO, "U2", 4.0) + _hot(GEO, "D9", 6.0)
    ranked = top_positions(heat, GEO, k=3)
    assert [p.name for p, _ in ranked] == ["C5", "D9", "U2"]
    assert [s for _, s in ranked] == [9.0, 6.0, 4.0]


def test_top_positions_ties_go_to_the_earlier_position():
    ranked = top_positions(np.zeros((GEO.height, GEO.width)), GEO, k=2)
    assert [p.name for p, _ in ranked] == ["U1", "U2"]


def test_top_positions_on_a_composite_reads_the_test_panel():
    heat = np.zeros((LAYOUT.size, LAYOUT.size), np.float32)
    x1, y1, x2, y2 = LAYOUT.crop_box("test")
    heat[y1:y2, x1:x2] = _hot(GEO, "D7")
    rx1, ry1, rx2, ry2 = LAYOUT.crop_box("reference")
    heat[ry1:ry2, rx1:rx2] = _hot(GEO, "U1", 99.0)  # the reference panel is not the product
    assert top_positions(heat, LAYOUT, k=1)[0][0] == Position("D", 7)
    assert top_positions(_hot(GEO, "C3"), LAYOUT, k=1)[0][0] == Position("C", 3)


@pytest.mark.parametrize(
    "heat,geometry,k,match",
    [
        (np.zeros((10, 10)), LAYOUT, 1, "composite needs"),
        (np.zeros((10, 10)), GEO, 1, "geometry expects"),
        (np.zeros((GEO.height, GEO.width)), GEO, 0, "k must be"),
        (np.zeros((GEO.height, GEO.width)), GEO, 28, "k must be"),
        (np.zeros(5), GEO, 1, "2-D"),
    ],
)
def test_top_positions_bad_input(heat, geometry, k, match):
    with pytest.raises(ValueError, match=match):
        top_positions(heat, geometry, k=k)


# --------------------------------------------------------------------------- pictures


def test_colorize_uses_a_fixed_scale():
    rgb = colorize(np.array([[0.0, DEFAULT_VMAX / 2, DEFAULT_VMAX, 10 * DEFAULT_VMAX]]))
    assert rgb.shape == (1, 4, 3) and rgb.dtype == np.uint8
    assert (rgb[0, 2] == rgb[0, 3]).all()  # above the scale clips
    assert rgb[0, 0].sum() < rgb[0, 1].sum() < rgb[0, 2].sum()  # inferno brightens
    with pytest.raises(ValueError, match="vmax"):
        colorize(np.zeros((2, 2)), vmax=0.0)


def test_blend_heatmap_weights_image_and_colour():
    image = np.full((6, 8, 3), 100, np.uint8)
    heat = np.linspace(0, 50, 48).reshape(6, 8)
    assert (np.asarray(blend_heatmap(image, heat, alpha=0.0)) == image).all()
    assert (np.asarray(blend_heatmap(image, heat, alpha=1.0)) == colorize(heat)).all()
    half = np.asarray(blend_heatmap(image, heat, alpha=0.5)).astype(int)
    assert np.abs(half - (image.astype(int) + colorize(heat)) / 2).max() <= 1
    with pytest.raises(ValueError, match="alpha"):
        blend_heatmap(image, heat, alpha=1.5)
    with pytest.raises(ValueError, match="heatmap is"):
        blend_heatmap(image, heat[:5], alpha=0.5)


def test_heatmap_overlay_draws_a_colour_bar():
    rng = np.random.default_rng(0)
    ref = render_connector(ConnectorSpec(), GEO, SPEC_NUISANCES, rng).image
    test = render_connector(ConnectorSpec(findings=(Finding("C5", "missing pin"),)), GEO,
                            SPEC_NUISANCES, rng).image  # fmt: skip
    result = soartc(ref, test)
    fig = heatmap_overlay(test, result)
    assert fig.mode == "RGB"
    assert fig.width > fig.height  # the colour bar sits to the right of a wide image
    arr = np.asarray(fig)
    assert arr.std() > 10  # something was drawn
    auto = heatmap_overlay(test, result, vmax=None, title="x")
    assert auto.size[0] > 100
    with pytest.raises(ValueError, match="heatmap is"):
        heatmap_overlay(test[:50], result)


# --------------------------------------------------------------------------- CLI


@pytest.fixture()
def pair(tmp_path):
    rng = np.random.default_rng(1)
    ref = render_connector(ConnectorSpec(), GEO, SPEC_NUISANCES, rng).image
    test = render_connector(ConnectorSpec(findings=(Finding("C7", "bent pin", "left"),)), GEO,
                            SPEC_NUISANCES, rng).image  # fmt: skip
    paths = tmp_path / "ref.png", tmp_path / "test.png"
    Image.fromarray(ref).save(paths[0])
    Image.fromarray(test).save(paths[1])
    return paths


def test_cli_prints_score_and_positions_and_writes_png(pair, tmp_path, capsys):
    out = tmp_path / "heat.png"
    assert main([str(pair[0]), str(pair[1]), "--out", str(out), "--top", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("image score: ") and float(lines[0].split(": ")[1]) > 40
    assert lines[1].startswith("top positions: C7 ")
    assert lines[1].count(",") == 1
    with Image.open(out) as png:
        assert png.format == "PNG" and png.width > 400


@pytest.mark.parametrize(
    "extra,match",
    [
        (["--window", "1"], "--window: must be at least 2"),
        (["--top", "0"], "--top: must be from 1 to 27"),
        (["--descriptor", "hog"], "invalid choice"),
    ],
)
def test_cli_rejects_bad_options(pair, extra, match, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([str(pair[0]), str(pair[1]), *extra])
    assert exit_info.value.code == 2
    assert match in capsys.readouterr().err


def test_cli_reports_missing_and_mismatched_files(pair, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main([str(pair[0]), str(tmp_path / "nope.png")])
    assert "nope.png does not exist" in capsys.readouterr().err
    small = tmp_path / "small.png"
    Image.new("RGB", (50, 20)).save(small)
    with pytest.raises(SystemExit):
        main([str(pair[0]), str(small)])
    assert "same size" in capsys.readouterr().err
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    with pytest.raises(SystemExit):
        main([str(pair[0]), str(text)])
    assert "not an image" in capsys.readouterr().err


def test_cli_help_mentions_the_outputs(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "image score" in text and "--out" in text and "--references" in text


# --------------------------------------------------------------------------- NSOART


@pytest.mark.parametrize("findings", [(Finding("C5", "bent pin", "right"),), ()])
def test_nsoart_blends_only_the_test_panel(findings):
    spec = SampleSpec("s0", "standard", "square", findings, True)
    sample = make_sample(spec, np.random.default_rng(0), nuisances=SPEC_NUISANCES)
    out = nsoart_image(sample.image, sample.layout)
    assert out.size == sample.image.size and out.mode == "RGB"
    before, after = np.asarray(sample.image).astype(int), np.asarray(out).astype(int)
    x1, y1, x2, y2 = sample.layout.crop_box("test")
    outside = np.ones(before.shape[:2], bool)
    outside[y1:y2, x1:x2] = False
    assert (before[outside] == after[outside]).all()
    assert (before[y1:y2, x1:x2] != after[y1:y2, x1:x2]).any()
    if findings:  # the hottest (brightest-changed) part of the panel is at the defect
        heat = np.abs(after - before)[y1:y2, x1:x2].sum(axis=2).astype(np.float32)
        assert top_positions(heat, sample.layout, k=1)[0][0] == Position("C", 5)


def test_nsoart_rejects_a_composite_of_another_size():
    with pytest.raises(ValueError, match="layout expects"):
        nsoart_image(Image.new("RGB", (300, 300)), LAYOUT)
