"""Vision pre-training of the inspection VLM: the right token per pin, the right class per pin,
and a run that learns and writes a VLM the project loads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from dataset_tools.builders import BuildConfig
from dataset_tools.save import build_to_folder
from qeu_space.modeling.inspection_vlm import InspectionVLMConfig, build_inspection_vlm
from qeu_space.modeling.loading import load_model
from qeu_space.training.vision_pretrain import PIN_CLASSES, pin_labels, pin_tokens, pretrain_vision
from qeu_space.vision_pretrain import main
from qeu_space.vocabulary import ALL_POSITIONS, Position

TINY = InspectionVLMConfig(
    image_size=288, vision_hidden=16, text_hidden=16, vision_intermediate=32,
    text_intermediate=32, vision_layers=1, text_layers=1,
)  # fmt: skip


@pytest.fixture(scope="module")
def tiny_vlm(tmp_path_factory) -> Path:
    return build_inspection_vlm(tmp_path_factory.mktemp("vlm"), TINY)


@pytest.fixture(scope="module")
def qa_data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("qa") / "qa"
    config = BuildConfig(
        "qa", num=48, seed=1, eval_fraction=0.25, kinds=("bent", "missing", "short")
    )
    build_to_folder(config, out, command="test")
    return out


def test_each_pin_has_its_own_token_in_raster_order():
    from transformers import Idefics3Config

    # The shipped geometry: 288 px, 32 px patches, 9 x 9 tokens, 3 token rows per pin row.
    vlm = Idefics3Config(vision_config={"image_size": 288, "patch_size": 32})
    vlm.qeu_framing = "composite_test_grid"
    tokens = pin_tokens(vlm)
    expected = [(3 * p.row_index + 1) * 9 + p.column - 1 for p in ALL_POSITIONS]
    assert tokens == expected


def test_pin_labels_name_kind_and_direction():
    labels = pin_labels(
        [
            {"position": "U3", "kind": "bent pin", "direction": "left"},
            {"position": "D9", "kind": "missing pin", "direction": None},
        ]
    )
    names = {p.name: PIN_CLASSES[c] for p, c in zip(ALL_POSITIONS, labels, strict=True)}
    assert names["U3"] == "bent left" and names["D9"] == "missing"
    assert sum(c != 0 for c in labels) == 2


@pytest.mark.parametrize(
    ("finding", "expected"),
    [
        ({"position": "C4", "kind": "short pin", "direction": None}, "short"),
        ({"position": "C4", "kind": "SHORTNG", "direction": None}, "short"),
        ({"position": "C4", "kind": "missing pin", "direction": None}, "missing"),
        ({"position": "C4", "kind": "bent pin", "direction": "down"}, "bent down"),
    ],
)
def test_short_pins_are_a_class_of_their_own(finding, expected):
    labels = pin_labels([finding])
    assert PIN_CLASSES[labels[ALL_POSITIONS.index(Position.parse("C4"))]] == expected


def test_old_class_indices_keep_their_meaning():
    # A class is only ever appended: index 0..5 mean what they meant before `short` came.
    old = ("ok", "missing", "bent up", "bent down", "bent left", "bent right")
    assert PIN_CLASSES[: len(old)] == old and PIN_CLASSES[len(old)] == "short"


def test_a_model_that_reads_the_whole_image_is_refused():
    from transformers import Idefics3Config

    with pytest.raises(ValueError, match="composite_test_grid"):
        pin_tokens(Idefics3Config())


def test_pretraining_learns_and_writes_a_loadable_vlm(tiny_vlm, qa_data, tmp_path):
    before = load_model(tiny_vlm).model.model.vision_model.state_dict()
    result = pretrain_vision(
        tiny_vlm, qa_data, tmp_path / "out", steps=30, batch_size=8, learning_rate=3e-3,
        eval_rows=12, position_heads=True, progress=False,
    )  # fmt: skip
    # starts at ln 6 + ln 3 + ln 9 = 5.09 (pin class, row and column heads); measured 3.6
    assert result.steps == 30 and result.final_loss < 4.2
    assert result.ok_accuracy > 0.8
    loaded = load_model(tmp_path / "out")
    assert loaded.family == "chat_vlm" and loaded.model.config.qeu_framing == "composite_test_grid"
    after = loaded.model.model.vision_model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    report = json.loads((tmp_path / "out" / "vision_pretrain.json").read_text())
    assert report["steps"] == 30
    # the validation rows hold short pins: the head was trained and scored on them as their class
    assert "short" in report["class_recall"] and "ok" in report["class_recall"]


def test_cli_refuses_a_non_empty_out_and_a_folder_that_is_no_dataset(tiny_vlm, tmp_path, capsys):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("keep")
    args = ["--base", str(tiny_vlm), "--dataset", str(tmp_path), "--max-steps", "1"]
    assert main([*args, "--out", str(tmp_path / "full")]) == 2
    assert "not empty" in capsys.readouterr().err
    assert (tmp_path / "full" / "x").read_text() == "keep"
    assert main([*args, "--out", str(tmp_path / "new")]) == 2
    assert "error:" in capsys.readouterr().err
