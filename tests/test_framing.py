"""Framing (``qeu_space.views.framing``): the views the shipped models read, aligned with the pins.

The point of a framing is that every pin lands centred in its own patch. These tests check that
on the project's own geometry, and that each family frames its batches and its predictions the
same way (a mismatch would train on one view and answer on another).
"""

from __future__ import annotations

import random
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from dataset_tools.builders import BuildConfig, make_row
from dataset_tools.render import Nuisances, Placement
from qeu_space.geometry import CompositeLayout, ConnectorGeometry
from qeu_space.modeling.families import chat_vlm, vit
from qeu_space.training.data import collators
from qeu_space.views.framing import frame, framing_of, grid_box, registration_off
from qeu_space.views.registration import NoConnectorError
from qeu_space.vocabulary import ALL_POSITIONS


def _to_view(x: float, y: float, box: tuple, side: tuple[int, int]) -> tuple[float, float]:
    """Composite/connector pixel -> pixel of the view resized to ``side`` (width, height)."""
    x1, y1, x2, y2 = box
    return (x - x1) * side[0] / (x2 - x1), (y - y1) * side[1] / (y2 - y1)


def test_connector_grid_puts_each_pin_in_the_middle_of_its_patch():
    geo = ConnectorGeometry(423, 204)
    box = grid_box((423, 204), "connector_grid")
    for position in ALL_POSITIONS:  # the ViT preset: 96 x 288, 32-px patches, 3 x 9 of them
        x, y = _to_view(*geo.pin_center(position), box, (288, 96))
        assert (int(x // 32), int(y // 32)) == (position.column - 1, position.row_index)
        assert abs(x % 32 - 16) < 1e-6 and abs(y % 32 - 16) < 1e-6


def test_composite_test_grid_puts_each_test_pin_in_its_own_token():
    layout = CompositeLayout(448)
    box = grid_box((448, 448), "composite_test_grid")
    ox, oy = layout.origin("test")
    for position in ALL_POSITIONS:  # the inspection VLM: 288 x 288, 32-px patches, 9 x 9
        cx, cy = layout.connector.pin_center(position)
        x, y = _to_view(cx + ox, cy + oy, box, (288, 288))
        assert (int(x // 32), int(y // 32)) == (position.column - 1, 3 * position.row_index + 1)
    reference_pin = layout.connector.pin_center(ALL_POSITIONS[0])
    assert reference_pin[1] + layout.origin("reference")[1] < box[1]  # the reference is left out


def _composite(seed: int = 0, findings=(), nuisances=None) -> Image.Image:
    from dataset_tools.compose import SampleSpec, make_sample

    spec = SampleSpec("s", "standard", "square", tuple(findings), True)
    return make_sample(spec, np.random.default_rng(seed), nuisances=nuisances).image


def _connector(seed: int = 0, **pose) -> Image.Image:
    from dataset_tools.render import ConnectorSpec, Nuisances, Pose, render_connector

    geo = CompositeLayout(448).connector
    rng = np.random.default_rng(seed)
    return Image.fromarray(
        render_connector(ConnectorSpec(), geo, Nuisances(), rng, pose=Pose(**pose)).image
    )


def test_the_view_holds_every_truth_box_of_a_composite():
    cfg = BuildConfig("qa", num=1, seed=3, nuisances=Nuisances(placement=Placement.off()))
    rows = [make_row(cfg, "train", i) for i in range(12)]
    findings = [f for row in rows for f in row["findings"]]
    assert findings
    x1, y1, x2, y2 = grid_box((448, 448), "composite_test_grid")
    for finding in findings:
        bx1, by1, bx2, by2 = finding["box"]
        cx, cy = (bx1 + bx2) / 2, (by1 + by2) / 2
        assert x1 <= cx <= x2 and y1 <= cy <= y2


def test_without_registration_frame_crops_and_the_whole_image_is_untouched():
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (448, 448, 3), np.uint8))
    box = grid_box((448, 448), "composite_test_grid")
    with registration_off():
        view = frame(image, "composite_test_grid")
        whole = frame(image, None, source="composite")
    assert view.image.size == (round(box[2]) - round(box[0]), round(box[3]) - round(box[1]))
    crop = np.asarray(image)[round(box[1]) : round(box[3]), round(box[0]) : round(box[2])]
    assert np.array_equal(np.asarray(view.image), crop)
    assert whole.image is image and whole.registration is None


def test_a_product_at_rest_frames_to_the_exact_crop():
    """Registration of an unmoved product is the identity to within a few hundredths of a pixel,
    so its view is the plain crop, resampled at (almost) integer offsets."""
    image = _composite(seed=1, nuisances=Nuisances.off())
    box = tuple(round(v) for v in grid_box((448, 448), "composite_test_grid"))
    plain = np.asarray(image.crop(box), np.float32)
    view = frame(image, "composite_test_grid")
    assert view.registration is not None
    assert np.abs(np.asarray(view.image, np.float32) - plain).mean() < 6.0


@pytest.mark.parametrize(
    "pose",
    [dict(dx=20, dy=-9), dict(angle=5.0), dict(scale=1.1), dict(dx=-12, angle=-4, scale=0.9)],
)
def test_a_moved_connector_frames_like_the_unmoved_one(pose):
    still = frame(_connector(seed=4), "connector_grid").image
    moved = frame(_connector(seed=4, **pose), "connector_grid")
    assert moved.image.size == still.size
    diff = np.abs(np.asarray(moved.image, np.float32) - np.asarray(still, np.float32)).mean()
    with registration_off():
        unregistered = frame(_connector(seed=4, **pose), "connector_grid").image
    baseline = np.abs(np.asarray(unregistered, np.float32) - np.asarray(still, np.float32)).mean()
    assert diff < 0.3 * baseline
    # the view's map back lands each pin centre of the view on the moved image's pin
    geo = CompositeLayout(448).connector
    x1, y1, _, _ = (round(v) for v in grid_box((geo.width, geo.height), "connector_grid"))
    cx, cy = geo.pin_center(ALL_POSITIONS[0])
    back = moved.box_to_source((cx - x1, cy - y1, cx - x1, cy - y1))
    expected = moved.registration.to_image(np.array([[cx, cy]]))[0]
    assert abs(back[0] - expected[0]) < 1e-6 and abs(back[1] - expected[1]) < 1e-6


def test_a_view_of_what_is_not_a_connector_is_refused():
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 255, (448, 448, 3), np.uint8))
    with pytest.raises(NoConnectorError, match="no connector found"):
        frame(noise, "composite_test_grid")
    with pytest.raises(ValueError, match="source must be one of"):
        frame(noise, None)


@pytest.mark.parametrize("size", [(448, 300), (95, 95), (449, 449)])
def test_a_composite_view_refuses_what_is_not_a_composite(size):
    with pytest.raises(ValueError, match="reads composites"):
        grid_box(size, "composite_test_grid")


def test_a_config_with_an_unknown_framing_is_refused_clearly():
    assert framing_of(SimpleNamespace()) is None
    assert framing_of(SimpleNamespace(qeu_framing="connector_grid")) == "connector_grid"
    with pytest.raises(ValueError, match="does not know"):
        framing_of(SimpleNamespace(qeu_framing="upside_down"))


def test_vit_batches_and_predictions_see_the_same_view():
    loaded = vit.new_model("vit-pins-scratch")
    assert loaded.model.config.qeu_framing == "connector_grid"
    image = _connector(seed=1, dx=9, angle=3)
    evaluation, training = collators(vit, loaded.processor, loaded.model.config, seed=0)
    batch = evaluation([{"image": image, "label": "OK"}])
    framed = vit.frame(image, loaded.model.config).image
    expected = loaded.processor(images=[framed], return_tensors="pt")["pixel_values"]
    assert torch.equal(batch["pixel_values"], expected)
    assert training is not None and "rng" in training.options and "rng" not in evaluation.options


def test_vit_augmentation_mirrors_and_keeps_the_label():
    image = Image.fromarray(np.arange(6 * 4 * 3, dtype=np.uint8).reshape(4, 6, 3))
    seen = {np.asarray(vit.augment(image, random.Random(s))).tobytes() for s in range(40)}
    flips = {
        np.asarray(image.transpose(t)).tobytes()
        for t in (Image.Transpose.FLIP_LEFT_RIGHT, Image.Transpose.FLIP_TOP_BOTTOM)
    }
    assert flips <= seen and np.asarray(image).tobytes() in seen and len(seen) == 4
    loaded = vit.new_model("vit-test-tiny")
    _, training = collators(vit, loaded.processor, loaded.model.config, seed=0)
    rows = [{"image": _connector(seed=2), "label": "BENDNG"}] * 4
    assert training(rows)["labels"].tolist() == [1, 1, 1, 1]


def test_chat_vlm_frames_batches_as_its_config_asks(tmp_path):
    from qeu_space.modeling.inspection_vlm import InspectionVLMConfig, build_inspection_vlm
    from qeu_space.modeling.loading import load_model

    config = InspectionVLMConfig(
        image_size=64, vision_hidden=16, text_hidden=16, vision_intermediate=32,
        text_intermediate=32, vision_layers=1, text_layers=1,
    )  # fmt: skip
    loaded = load_model(build_inspection_vlm(tmp_path, config), device="cpu")
    assert framing_of(loaded.model.config) == "composite_test_grid"
    image = _composite(seed=2)
    options = chat_vlm.collate_options(loaded.model.config)
    row = {"image": image, "question": "What is wrong?", "answer": "Passed. No defects found."}
    pixels = chat_vlm.collate(loaded.processor, [row], **options)["pixel_values"]
    view = frame(image, "composite_test_grid").image
    expected = loaded.processor.image_processor([[view]], return_tensors="pt")["pixel_values"]
    assert torch.equal(pixels, expected)
    whole = chat_vlm.collate(loaded.processor, [row])["pixel_values"]
    assert not torch.equal(whole, expected)
    assert chat_vlm.generate(loaded, [image], max_new_tokens=2)  # generation frames too


@pytest.mark.parametrize("pose", [dict(scale=1.12), dict(dx=-24, scale=1.06), dict(dy=20, angle=6)])
def test_a_composite_view_never_shows_the_labels_beside_a_moved_product(pose):
    """Where the moved product left its panel, the view shows fill, not the labels or canvas."""
    from dataset_tools.compose import compose
    from dataset_tools.render import ConnectorSpec, Pose, render_connector

    layout = CompositeLayout(448)
    geo = layout.connector
    ref = render_connector(ConnectorSpec("stepped"), geo, Nuisances.off(), np.random.default_rng(0))
    test = render_connector(
        ConnectorSpec("stepped"), geo, Nuisances.off(), np.random.default_rng(1), pose=Pose(**pose)
    )
    labelled = frame(compose(ref.image, test.image, layout, True), "composite_test_grid")
    bare = frame(compose(ref.image, test.image, layout, False), "composite_test_grid")
    assert np.array_equal(np.asarray(labelled.image), np.asarray(bare.image))


def test_vit_training_batches_are_relit_within_the_lamp_range():
    grey = Image.new("RGB", (40, 20), (100, 100, 100))
    means = [np.asarray(vit.augment(grey, random.Random(s), gain=0.45)).mean() for s in range(60)]
    assert min(means) >= 100 * 0.55 - 1 and max(means) <= 100 * 1.45 + 1
    assert min(means) < 70 and max(means) > 130  # both ends of the range are reached
    assert vit.train_collate_options(0)["gain"] == vit.LAMP_GAIN
