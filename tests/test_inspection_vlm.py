"""The shipped inspection VLM (``models/inspection-vlm-*``) and the builder that made it.

The shipped weights must load through the project's one loading path and answer freshly
rendered composites of the housing the base never saw (``latched``), at pin positions never
defective in the adapter's training, in the canonical form and mostly right: findings F1 of at
least :data:`MIN_F1` on a fixed set of 20. The 200-row split (adapter 0.950, base 0.930,
``benchmarks/RESULTS_inspection_vlm.md``) is the benchmark's job; 20 rows cannot tell a 0.02
difference, so no ordering of base and adapter is asserted here.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch
from PIL import Image

from dataset_tools.builders import BuildConfig, make_row
from qeu_space.evaluation.metrics import qa_metrics
from qeu_space.modeling.families import family_for
from qeu_space.modeling.inspection_vlm import (
    InspectionVLMConfig,
    build_inspection_vlm,
    inspection_tokenizer,
    sincos_2d,
)
from qeu_space.modeling.loading import load_model
from qeu_space.vocabulary import Finding, parse_answer

ROOT = Path(__file__).resolve().parent.parent
BASE = ROOT / "models" / "inspection-vlm-base"
ADAPTER = ROOT / "models" / "inspection-vlm-lora"
#: The fixed set: rows 0..19 of the latched housing's ``test`` split (seed 7, not a training seed).
SAMPLES = 20
SEED = 7
#: Chance is about 0 (a position and a kind out of 27 x 2); the shipped models (stage-10 base and
#: the latched adapter retrained on it) measure 0.88 each on these 20 rows.
MIN_F1 = 0.8


@pytest.fixture(scope="module")
def rendered() -> list[dict]:
    cfg = BuildConfig(
        "qa", num=SAMPLES, seed=SEED, housings=("latched",), unseen_housing="standard"
    )
    return [make_row(cfg, "test", i) for i in range(SAMPLES)]


@pytest.fixture(scope="module")
def answers(rendered: list[dict]) -> dict[str, list[str]]:
    torch.set_num_threads(1)
    loaded = load_model(BASE, ADAPTER, device="cpu")
    family = family_for(loaded)
    images = [_image(row) for row in rendered]
    tuned = family.generate(loaded, images, batch_size=10)
    with loaded.base_only():
        base = family.generate(loaded, images, batch_size=10)
    return {"adapter": tuned, "base": base}


def _image(row: dict) -> Image.Image:
    return Image.open(io.BytesIO(row["image"]["bytes"])).convert("RGB")


def test_fixed_set_has_defects_at_held_out_positions(rendered: list[dict]) -> None:
    held_out = {"U2", "U7", "C4", "C9", "D1", "D6"}
    positions = {f["position"] for row in rendered for f in row["findings"]}
    assert positions and positions <= held_out
    assert {row["housing"] for row in rendered} == {"latched"}


@pytest.mark.parametrize("model", ["adapter", "base"])
def test_answers_parse(answers: dict[str, list[str]], model: str) -> None:
    parsed = [parse_answer(a) for a in answers[model]]
    assert all(p.verdict is not None for p in parsed), answers[model]


@pytest.mark.parametrize("model", ["adapter", "base"])
def test_answers_name_the_defects(answers: dict[str, list[str]], rendered, model: str) -> None:
    truth = [
        [Finding(f["position"], f["kind"], f["direction"]) for f in row["findings"]]
        for row in rendered
    ]
    scores = qa_metrics(truth, answers[model])
    assert scores.f1 >= MIN_F1, answers[model]
    assert scores.verdict_accuracy >= 0.9


@pytest.mark.parametrize(
    ("text", "pieces"),
    [
        ("U3", ["U", "3"]),
        (" C4", ["ĠC", "4"]),
        ("Defective. 2 defects:", ["Defective", ".", "Ġ", "2", "Ġdefects", ":"]),
    ],
)
def test_tokenizer_keeps_row_and_column_apart(text: str, pieces: list[str]) -> None:
    tokenizer = inspection_tokenizer()
    assert tokenizer.convert_ids_to_tokens(tokenizer(text).input_ids) == pieces


def test_sincos_table_separates_row_and_column() -> None:
    table = sincos_2d(3, 4, 16).reshape(3, 4, 16)
    assert torch.equal(table[0, :, :8], table[0, :1, :8].expand(4, 8))  # row half: same in a row
    assert torch.equal(table[:, 2, 8:], table[:1, 2, 8:].expand(3, 8))  # column half: per column
    assert not torch.equal(table[0, 0], table[1, 1])


def test_build_writes_a_loadable_untrained_model(tmp_path: Path) -> None:
    config = InspectionVLMConfig(
        image_size=64, patch_size=16, scale_factor=2, vision_hidden=16, text_hidden=16,
        vision_intermediate=32, text_intermediate=32, vision_layers=1, text_layers=1,
    )  # fmt: skip
    loaded = load_model(build_inspection_vlm(tmp_path, config), device="cpu")
    assert loaded.family == "chat_vlm"
    assert loaded.model.config.qeu_framing == "composite_test_grid"
    assert loaded.processor.image_seq_len == config.image_tokens == 4
    embedding = loaded.model.model.vision_model.embeddings.position_embedding.weight
    assert torch.allclose(embedding, sincos_2d(4, 4, 16))


@pytest.mark.parametrize(
    "bad", [{"image_size": 100}, {"vision_hidden": 30}, {"image_size": 48, "scale_factor": 2}]
)
def test_config_rejects_bad_sizes(bad: dict) -> None:
    with pytest.raises(ValueError):
        InspectionVLMConfig(**bad)


@pytest.mark.parametrize(
    "answer",
    [
        "Defective. 1 defect: C4 short pin.",
        "Defective. 2 defects: U3 bent pin (left); D9 short pin.",
        "Passed. No defects found.",
    ],
)
def test_grammar_lets_the_shipped_tokenizer_write_short_pins(answer: str) -> None:
    # The base's tokenizer writes `short` in pieces (Ġ s h or t): every piece must be a token the
    # answer grammar allows at that point, or a base retrained with short pins could never say one.
    from transformers import AutoTokenizer

    from qeu_space.modeling.answer_grammar import answer_constraint

    tokenizer = AutoTokenizer.from_pretrained(BASE)
    constraint = answer_constraint(tokenizer)
    state = constraint.grammar.initial
    for token in tokenizer(answer, add_special_tokens=False).input_ids:
        allowed = dict(constraint.transitions(state))
        assert token in allowed, tokenizer.convert_ids_to_tokens([token])
        state = allowed[token]
    assert constraint.grammar.complete(state)
