"""The pair ViT (issue 19): reference and test stacked as 6 channels, trained on the looks.

Tiny models built from presets (random weights, no network); composites rendered by the
project's own builder (``qa`` rows: a reference above a test of one rig).
"""

from __future__ import annotations

import argparse
import io
import json
import math
from functools import cache

import numpy as np
import pytest
import torch
from PIL import Image

from dataset_tools.builders import BuildConfig, make_row
from qeu_space.modeling.attention import attention_rollout
from qeu_space.modeling.families import vit
from qeu_space.modeling.loading import load_model
from qeu_space.training import vit_pair


@cache
def composite(index: int = 1) -> tuple[Image.Image, list[dict]]:
    """A ``qa`` composite of the training looks (a defective one at index 1) and its findings."""
    cfg = BuildConfig("qa", num=4, seed=5, looks="grey-gold", kinds=("bent", "missing", "short"))
    row = make_row(cfg, "train", index)
    return Image.open(io.BytesIO(row["image"]["bytes"])).convert("RGB"), row["findings"]


@pytest.fixture(scope="module")
def pair_model():
    torch.manual_seed(0)
    return vit.new_model("vit-pair-test-tiny")


@pytest.fixture(scope="module")
def single_model():
    torch.manual_seed(0)
    return vit.new_model("vit-test-tiny")


def test_pair_preset_reads_six_channels_and_every_kind(pair_model):
    config = pair_model.model.config
    assert config.num_channels == vit.PAIR_CHANNELS and vit.is_pair(config)
    assert tuple(config.id2label[i] for i in range(4)) == ("OK", "BENDNG", "NUKENG", "SHORTNG")
    assert not vit.is_pair(vit.PRESETS["vit-pins-scratch"]())


def test_pair_input_from_a_composite_has_the_reference_in_the_first_three_channels(pair_model):
    image, _ = composite()
    ref, test = vit.split_composite(image)
    config, processor = pair_model.model.config, pair_model.processor
    pixels = vit._pixels(pair_model, [test], [ref])
    assert pixels.shape == (1, 6, 32, 96)
    alone = [
        processor(images=[vit.frame(x, config).image], return_tensors="pt")["pixel_values"][0]
        for x in (ref, test)
    ]
    assert torch.equal(pixels[0, :3], alone[0]) and torch.equal(pixels[0, 3:], alone[1])
    assert not torch.equal(alone[0], alone[1])  # two shots of the rig: the panels differ
    # the training module frames the same pair the same way (uint8 before normalisation)
    arrays = vit_pair.pair_arrays(processor, config, image)
    for array, expected in zip(arrays, alone, strict=True):
        restored = torch.from_numpy(array).float() / 255.0 * 2 - 1
        assert torch.allclose(restored, expected, atol=1 / 255 + 1e-6)


def test_a_reference_equal_to_the_test_changes_the_logits(pair_model):
    image, _ = composite()
    ref, test = vit.split_composite(image)
    _, against_ref = vit.predict(pair_model, [test], references=[ref])[0]
    _, against_itself = vit.predict(pair_model, [test], references=[test])[0]
    assert set(against_ref) == set(vit.PAIR_LABELS)
    assert max(abs(against_ref[k] - against_itself[k]) for k in against_ref) > 1e-4
    # composites read both panels: the same as passing them apart
    assert vit.predict_composites(pair_model, [image])[0][1] == pytest.approx(against_ref)
    assert vit.generate(pair_model, [image]) == [max(against_ref, key=against_ref.get)]


def test_a_pair_model_without_references_is_refused_in_one_line(pair_model):
    _, test = vit.split_composite(composite()[0])
    with pytest.raises(
        ValueError, match=r"compares the test with its reference \(num_channels=6\)"
    ):
        vit.predict(pair_model, [test])
    with pytest.raises(ValueError, match="1 references for 2 test images"):
        vit.predict(pair_model, [test, test], references=[test])
    with pytest.raises(ValueError, match="a composite is square"):
        vit.split_composite(test)


def test_the_single_image_path_still_works_and_ignores_references(single_model):
    ref, test = vit.split_composite(composite()[0])
    alone = vit.predict(single_model, [test])[0]
    with_ref = vit.predict(single_model, [test], references=[ref])[0]
    assert alone == with_ref and alone[0] in ("OK", "BENDNG", "NUKENG")
    assert vit.predict_composites(single_model, [composite()[0]])[0] == alone


@pytest.mark.parametrize("channels", [1, 4])
def test_other_channel_counts_are_refused_clearly(channels):
    config = vit.PRESETS["vit-test-tiny"]()
    config.num_channels = channels
    with pytest.raises(ValueError, match=f"num_channels={channels} reads neither"):
        vit.is_pair(config)


def test_rollout_of_a_pair_model_is_drawn_on_the_test(pair_model):
    ref, test = vit.split_composite(composite()[0])
    heat = attention_rollout(pair_model, test, ref)
    assert heat.shape == (test.height, test.width) and heat.max() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="num_channels=6"):
        attention_rollout(pair_model, test)


def test_warm_start_keeps_the_single_model_and_adds_the_reference(tmp_path, single_model):
    """Reference channels start at zero: the pair model answers as the single-image one did
    (three classes; SHORTNG new), whatever the reference."""
    from transformers import ViTForImageClassification

    torch.manual_seed(1)
    config = vit.PRESETS["vit-pins-scratch"]()
    ViTForImageClassification(config).save_pretrained(tmp_path / "single")
    single = ViTForImageClassification.from_pretrained(tmp_path / "single").eval()
    pair = vit_pair.pair_model_from(str(tmp_path / "single")).eval()
    test = torch.rand(2, 3, 96, 288)
    with torch.no_grad():
        old = single(pixel_values=test).logits
        for reference in (torch.rand(2, 3, 96, 288), torch.zeros(2, 3, 96, 288)):
            new = pair(pixel_values=torch.cat([reference, test], 1)).logits
            assert torch.allclose(new[:, :3], old, atol=1e-5)
    assert pair.config.num_channels == 6 and pair.config.id2label[3] == "SHORTNG"


def test_augmentation_mirrors_pairs_together_and_draws_imaging_apart():
    g = torch.Generator().manual_seed(0)
    base = torch.zeros(64, 3, 32, 96, dtype=torch.uint8)
    base[:, :, :, :20] = 200  # a bright left edge: a mirror moves it to the right
    labels = torch.ones(64, dtype=torch.long)
    ref, test = vit_pair.augment_pairs(base.clone(), base.clone(), labels, g, vit_pair.Augment())
    left_ref = ref[:, :, :, :48].mean((1, 2, 3)) > ref[:, :, :, 48:].mean((1, 2, 3))
    left_test = test[:, :, :, :48].mean((1, 2, 3)) > test[:, :, :, 48:].mean((1, 2, 3))
    assert torch.equal(left_ref, left_test) and 0 < int(left_ref.sum()) < 64
    gain = ref.mean((1, 2, 3)) / test.mean((1, 2, 3)).clamp_min(1e-6)
    assert float(gain.std()) > 0.1  # brightness drawn apart: no cue in their ratio
    assert ref.min() >= 0 and ref.max() <= 1


#: Augment with every draw off but the light field: what the field alone does to a panel
FIELD_ONLY = vit_pair.Augment(
    gain=(1.0, 1.0), gamma=(1.0, 1.0), white_balance=0.0, blur_p=0.0, shift_px=0, field_p=1.0
)


def test_the_light_field_changes_a_panel_smoothly_and_strongly_enough():
    g = torch.Generator().manual_seed(1)
    grey = torch.full((64, 3, 96, 288), 128, dtype=torch.uint8)
    out = vit_pair.augment_panel(grey, g, FIELD_ONLY)
    flat = 128 / 255
    spread = out.flatten(1).amax(1) - out.flatten(1).amin(1)
    assert float(spread.median()) > 0.05  # the field changes the panel
    assert float((out.flatten(1).amin(1) / flat).min()) < 0.6  # strong falloff is drawn
    assert float(out.max()) <= 1.0 and float(out.min()) > 0.0  # no panel blacked out
    steps = torch.cat([out.diff(dim=2).abs().flatten(1), out.diff(dim=3).abs().flatten(1)], 1)
    assert float(steps.max()) < 0.02  # smooth: no edge a pin could be mistaken for
    assert torch.allclose(out[:, 0], out[:, 2])  # light, not colour: one gain for all channels


def test_the_light_field_is_drawn_apart_for_reference_and_test():
    g = torch.Generator().manual_seed(2)
    grey = torch.full((32, 3, 96, 288), 128, dtype=torch.uint8)
    labels = torch.ones(32, dtype=torch.long)  # defective pairs: never swapped
    ref, test = vit_pair.augment_pairs(grey.clone(), grey.clone(), labels, g, FIELD_ONLY)
    ratio = (ref / test).flatten(1)
    uneven = ratio.amax(1) - ratio.amin(1) > 0.05  # the two fields differ across the panel
    assert int(uneven.sum()) > 24


@pytest.mark.parametrize("field_p", [0.0, 0.5])
def test_the_share_of_evenly_lit_panels_follows_augment(field_p):
    g = torch.Generator().manual_seed(3)
    grey = torch.full((200, 3, 24, 72), 128, dtype=torch.uint8)
    aug = vit_pair.Augment(**{**FIELD_ONLY.__dict__, "field_p": field_p})
    out = vit_pair.augment_panel(grey, g, aug)
    even = (out.flatten(1) - 128 / 255).abs().amax(1) < 1e-6
    assert abs(float(even.float().mean()) - (1 - field_p)) < 0.1


@pytest.mark.parametrize("sigma", [0.3, 1.0, 2.2])
def test_the_blur_softens_a_step_by_its_own_sigma(sigma):
    step = torch.zeros(2, 3, 16, 40)
    step[..., 20:] = 1.0
    out = vit_pair.gaussian_blur(step, torch.tensor([sigma, 0.3]))
    assert torch.allclose(out.mean(), step.mean(), atol=0.02)  # light is kept
    rise = float(out[0, 0, 8, 20] - out[0, 0, 8, 19])  # the step left between two pixels
    assert rise == pytest.approx(math.erf(0.5 / (sigma * math.sqrt(2))), abs=0.1)
    assert float(out[1, 0, 8, 20] - out[1, 0, 8, 19]) > 0.9  # the other image: its own sigma


@pytest.mark.parametrize(
    ("findings", "label"),
    [
        ([], "OK"),
        ([{"position": "C3", "kind": "short pin", "direction": None, "box": None}], "SHORTNG"),
        ([{"position": "U1", "kind": "bent pin", "direction": "up", "box": None}], "BENDNG"),
        ([{"position": "D9", "kind": "missing pin", "direction": None, "box": None}], "NUKENG"),
    ],
)
def test_labels_come_from_the_findings(findings, label):
    assert vit.PAIR_LABELS[vit_pair.label_of(findings)] == label


def test_prepare_and_train_make_a_loadable_pair_model(tmp_path):
    """A few prepared pairs, one epoch: the folder loads through the project's path and reads
    composites."""
    import datasets

    cfg = BuildConfig("qa", num=4, seed=5, looks="grey-gold", kinds=("bent", "missing", "short"))
    rows = [make_row(cfg, "train", i) for i in range(4)]
    table = datasets.Dataset.from_list(
        [{"image": r["image"], "findings": r["findings"], "look": r["look"]} for r in rows],
        features=datasets.Features(
            {
                "image": datasets.Image(),
                "findings": [{k: datasets.Value("string") for k in ("position", "kind")}],
                "look": datasets.Value("string"),
            }
        ),
    )
    datasets.DatasetDict({"train": table, "validation": table}).save_to_disk(tmp_path / "qa")
    counts = vit_pair.prepare(str(tmp_path / "qa"), tmp_path / "pairs.npz")
    assert counts["train_kept"] == 4 and counts["train_refused"] == 0
    data = np.load(tmp_path / "pairs.npz")
    assert data["reference"].shape == (8, 3, 96, 288) and data["reference"].dtype == np.uint8
    args = argparse.Namespace(
        data=[tmp_path / "pairs.npz"], out=tmp_path / "model", init_from=None, epochs=1,
        batch_size=4, learning_rate=1e-3, seed=0, preset="vit-pair-scratch",
    )  # fmt: skip
    history = vit_pair.train(args)
    assert history["best_epoch"] == 1 and len(history["eval"]) == 1
    loaded = load_model(tmp_path / "model", device="cpu")
    assert loaded.model.config.num_channels == 6
    label, probs = vit.predict_composites(loaded, [composite()[0]])[0]
    assert label in vit.PAIR_LABELS and sum(probs.values()) == pytest.approx(1.0)
    assert json.loads((tmp_path / "model" / "training_args.json").read_text())["epochs"] == 1


def test_the_space_gives_the_pair_vit_its_reference(tmp_path, pair_model):
    """The Space's ViT call (``classify_with_vit``) compares the test with the reference it is
    given; a pair model asked without one fails with the one-line reason."""
    from qeu_space.modeling.devices import detect_device
    from qeu_space.ui import models as model_fns
    from qeu_space.ui.settings import AppSettings

    pair_model.model.save_pretrained(tmp_path / "pair")
    pair_model.processor.save_pretrained(tmp_path / "pair")
    env = {"QEU_BASE_MODEL": "", "QEU_OD_MODEL": "", "QEU_VIT_MODEL": str(tmp_path / "pair")}
    loaded = model_fns.load_models(AppSettings.from_env(env), detect_device({"QEU_DEVICE": "cpu"}))
    assert loaded.vit.available, loaded.vit.reason
    ref, test = vit.split_composite(composite()[0])
    against_ref = model_fns.classify_with_vit(test, ref)
    against_itself = model_fns.classify_with_vit(test, test)
    assert against_ref.probabilities != against_itself.probabilities
    assert against_ref.attention.shape == (test.height, test.width)
    with pytest.raises(ValueError, match="num_channels=6"):
        model_fns.classify_with_vit(test)


def test_the_single_image_trainer_refuses_a_pair_preset_in_one_line():
    with pytest.raises(ValueError, match="qeu_space.training.vit_pair"):
        vit.collate_options(vit.PRESETS["vit-pair-scratch"]())
    assert vit.collate_options(vit.PRESETS["vit-pins-scratch"]()) == {"framing": "connector_grid"}


def test_the_web_process_knows_a_worker_s_vit_reads_the_pair(pair_model, single_model):
    """With the models in the worker, the web process sees a weight-free summary; the legend
    still says whether the ViT compares with the reference (the app failed to start without)."""
    from qeu_space.ui.layout import vit_reads_pair
    from qeu_space.ui.models import Models, ModelSlot, RemoteModel, input_channels

    for loaded, channels in ((pair_model, 6), (single_model, 3)):
        remote = RemoteModel.of(loaded)
        assert remote.channels == input_channels(loaded) == channels
        models = Models(vit=ModelSlot("ViT", None, loaded=remote))
        assert vit_reads_pair(models) is (channels == 6)
