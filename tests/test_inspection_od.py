"""The shipped ``<OD>`` model (``models/inspection-od-*``), the builder that made it, and the
Florence-2 family reading a framed view.

The shipped weights must load offline through the project's one loading path, answer freshly
rendered composites (a seed never used in training) at the builder's test positions (held out
from the adapter's training; the base was trained at every position, see its card) with readable
``bbox_str`` that transformers' own ``Florence2Processor.post_process_generation`` parses, put
every box on a pin of the product under inspection (never on the printed labels), and find the
defects: findings F1 of at least :data:`MIN_F1` on a fixed set of :data:`SAMPLES`. The 600-row
figures with intervals are ``benchmarks/bench_od.py``'s and ``python -m qeu_space.evaluate``'s
job; a few rows go through that command line here.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dataset_tools.builders import OD_CATEGORIES, BuildConfig, make_row
from dataset_tools.compose import SampleSpec, make_sample
from dataset_tools.save import build_to_folder
from qeu_space.evaluation.metrics import findings_scores, xywh_to_xyxy
from qeu_space.geometry import CompositeLayout
from qeu_space.modeling.families import florence2
from qeu_space.modeling.inspection_od import InspectionODConfig, build_inspection_od, sincos_1d
from qeu_space.modeling.loading import LoadedModel, load_model
from qeu_space.training.vision_pretrain import pin_tokens, pretrain_vision, token_grid
from qeu_space.views.framing import framing_of, grid_box
from qeu_space.vocabulary import Finding, format_bbox_str, od_categories, parse_bbox_str

ROOT = Path(__file__).resolve().parent.parent
BASE = ROOT / "models" / "inspection-od-base"
ADAPTER = ROOT / "models" / "inspection-od-lora"
#: The fixed set: rows 0..19 of the ``test`` split (held-out positions) of seed 7, which no
#: training or checkpoint choice used.
SAMPLES = 20
SEED = 7
#: Chance is about 0; the benchmark measures the shipped base far above this (RESULTS_od.md).
MIN_F1 = 0.8
TINY = InspectionODConfig(vision_dims=(8, 16, 32, 32), text_hidden=32, text_heads=2, text_ffn=64)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --------------------------------------------------------------------------- the builder


@pytest.fixture(scope="module")
def tiny_od(tmp_path_factory) -> Path:
    return build_inspection_od(tmp_path_factory.mktemp("od") / "init", TINY)


def test_build_writes_a_loadable_untrained_model(tiny_od: Path) -> None:
    loaded = load_model(tiny_od, device="cpu")
    assert loaded.family == "florence2"
    assert type(loaded.model).__name__ == "Florence2ForConditionalGeneration"
    assert framing_of(loaded.model.config) == "composite_test_grid"
    assert loaded.processor.num_image_tokens == TINY.image_tokens == 9 * 3 + 1
    size = loaded.processor.image_processor.size
    assert (size["width"], size["height"]) == (288, 96)
    position = loaded.model.model.multi_modal_projector.image_position_embed
    columns = position.column_embeddings.weight
    assert torch.allclose(columns, sincos_1d(*columns.shape) / 2**0.5)


def test_each_pin_has_its_own_token_in_raster_order(tiny_od: Path) -> None:
    loaded = load_model(tiny_od, device="cpu")
    grid = token_grid(loaded.model.config, loaded.processor)
    assert grid == (9, 3)
    assert pin_tokens(loaded.model.config, grid=grid) == list(range(27))  # U1..U9, C1.., D1..


@pytest.mark.parametrize(
    "bad", [{"width": 300}, {"height": 100}, {"text_hidden": 30}, {"vision_dims": (8, 16, 48, 100)}]
)
def test_config_rejects_bad_sizes(bad: dict) -> None:
    with pytest.raises(ValueError):
        InspectionODConfig(**bad)


def test_cli_writes_the_model(tmp_path: Path, capsys) -> None:
    from qeu_space.inspection_od import main

    assert main(["--out", str(tmp_path / "m")]) == 0
    assert "composite_test_grid" in capsys.readouterr().out
    assert load_model(tmp_path / "m", device="cpu").family == "florence2"


# --------------------------------------------------------------------------- the framed view


#: Each kind of the vocabulary, short pin included (the od rows' third category, issue 19).
VIEW_CASES = [
    (
        Finding("U2", "bent pin", "left"),
        Finding("C9", "missing pin"),
        Finding("D1", "bent pin", "down"),
    ),
    (Finding("U5", "short pin"), Finding("C9", "missing pin"), Finding("D1", "bent pin", "down")),
    (Finding("U2", "bent pin", "right"), Finding("C4", "short pin"), Finding("D1", "short pin")),
]


@pytest.mark.parametrize(("seed", "defects"), [(s, VIEW_CASES[s % 3]) for s in range(4)])
def test_targets_are_in_the_view_and_come_back_on_the_pins(seed: int, defects) -> None:
    """A moved product's truth boxes, said in the test grid's view, map back onto its pins, and
    each label reads back as its finding (a ``short pin`` box is a ``short pin`` finding)."""
    framing = "composite_test_grid"
    sample = make_sample(
        SampleSpec("s", "ribbed", "round", defects, True), np.random.default_rng(seed)
    )
    raw = format_bbox_str(sample.findings, sample.image.size)
    view = florence2.view(sample.image, framing)
    target = florence2.canonical_target(raw, view, framing)
    width, height = view.image.size
    for _, (x1, y1, x2, y2) in parse_bbox_str(target, view.image.size):
        assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height  # inside the view
    said = florence2.composite_text(target, framing, sample.image.size)
    assert florence2.parse(said, sample.image.size) == [
        Finding(f.position, f.kind) for f in sorted(defects, key=lambda f: f.sort_key)
    ]
    layout = CompositeLayout(448)
    truths = sorted(sample.findings, key=lambda f: f.sort_key)
    gx1, gy1, gx2, gy2 = grid_box((448, 448), framing)
    for (_, box), truth in zip(parse_bbox_str(said, (448, 448)), truths, strict=True):
        geo = layout.connector
        x1, y1, x2, y2 = layout.to_composite(
            geo.defect_box(truth.position, truth.kind, truth.direction)
        )
        # A tip bent out of the grid (D1 down) is boxed up to the view's edge.
        exact = (max(x1, gx1), max(y1, gy1), min(x2, gx2), min(y2, gy2))
        assert max(abs(a - b) for a, b in zip(box, exact, strict=True)) < 2.0  # quantisation
    back = florence2.boxes_in_image(said, sample.image)  # where the product really is
    for (_, box), truth in zip(back, truths, strict=True):
        if truth.position.name != "D1" or truth.kind.value != "bent pin":  # clipped (above)
            assert max(abs(a - b) for a, b in zip(box, truth.box, strict=True)) < 2.5


@pytest.mark.parametrize(
    ("kinds", "looks"),
    [(("bent", "missing"), "classic"), (("bent", "missing", "short"), "train")],
)
def test_truth_findings_of_od_rows_match_the_qa_rows_of_the_same_draw(kinds, looks) -> None:
    """An od row stores boxes only; read on the registered grid they are the qa row's findings,
    short pins included when the build draws them (the od base's training rows, issue 19)."""
    named = set()
    for index in range(12):
        qa = make_row(BuildConfig("qa", num=12, seed=5, kinds=kinds, looks=looks), "test", index)
        od = make_row(BuildConfig("od", num=12, seed=5, kinds=kinds, looks=looks), "test", index)
        image = Image.open(io.BytesIO(od["image"]["bytes"])).convert("RGB")
        found = florence2.findings_in_image(
            _boxes(od, od_categories(kinds)), image, directions=True
        )
        assert [f.to_dict() | {"box": None} for f in found] == [
            Finding.from_dict(f).to_dict() | {"box": None} for f in qa["findings"]
        ]
        named |= {f.kind.value for f in found}
    assert named == set(od_categories(kinds))  # every kind drawn is boxed and read back


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("", True),
        ("bent pin<loc_1><loc_2><loc_3><loc_4>missing pin<loc_5><loc_6><loc_7><loc_8>", True),
        ("</s>bent pin<loc_1><loc_2><loc_3><loc_4></s>", True),
        ("bent pin<loc_1><loc_2><loc_3>", False),
        ("scratch<loc_1><loc_2><loc_3><loc_4>", False),
        ("bent pin<loc_1><loc_2><loc_3><loc_4> pin", False),
    ],
)
def test_readable(text: str, ok: bool) -> None:
    assert florence2.readable(text) is ok


def test_vision_pretraining_reads_pins_from_od_boxes(tiny_od: Path, tmp_path: Path) -> None:
    data = tmp_path / "od"
    build_to_folder(BuildConfig("od", num=24, seed=1, eval_fraction=0.25), data, command="test")
    before = load_model(tiny_od).model.model.vision_tower.state_dict()
    result = pretrain_vision(
        tiny_od, data, tmp_path / "out", steps=4, batch_size=4, eval_rows=6, progress=False
    )
    assert result.steps == 4 and 0.0 <= result.token_accuracy <= 1.0
    after = load_model(tmp_path / "out").model.model.vision_tower.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)


# --------------------------------------------------------------------------- the shipped model


@pytest.fixture(scope="module")
def rendered() -> list[dict]:
    cfg = BuildConfig("od", num=SAMPLES, seed=SEED)
    return [make_row(cfg, "test", i) for i in range(SAMPLES)]


def _image(row: dict) -> Image.Image:
    return Image.open(io.BytesIO(row["image"]["bytes"])).convert("RGB")


@pytest.fixture(scope="module")
def shipped() -> LoadedModel:
    return load_model(BASE, device="cpu")


@pytest.fixture(scope="module")
def outputs(shipped: LoadedModel, rendered: list[dict]) -> list[str]:
    return florence2.generate(shipped, [_image(r) for r in rendered], batch_size=10)


def test_shipped_model_is_a_native_florence2_that_reads_the_test_grid(shipped) -> None:
    assert shipped.family == "florence2" and shipped.adapter is None
    assert type(shipped.model).__name__ == "Florence2ForConditionalGeneration"
    assert framing_of(shipped.model.config) == "composite_test_grid"
    assert not any("auto_map" in str(k) for k in shipped.model.config.to_dict())


def test_fixed_set_has_defects_at_held_out_positions(rendered: list[dict]) -> None:
    held_out = {"U2", "U7", "C4", "C9", "D1", "D6"}
    truths = [_truth(row) for row in rendered]
    assert {f.position.name for t in truths for f in t} <= held_out
    assert sum(len(t) for t in truths) >= 15


def _boxes(
    row: dict, categories: tuple[str, ...] = OD_CATEGORIES
) -> list[tuple[str, tuple[float, float, float, float]]]:
    """An od row's truth boxes, categories named (rows store ClassLabel indices of the build's
    ``categories``)."""
    objects = row["objects"]
    return [
        (categories[c] if isinstance(c, int) else c, xywh_to_xyxy(b))
        for c, b in zip(objects["category"], objects["bbox"], strict=True)
    ]


def _truth(row: dict) -> list[Finding]:
    return florence2.findings_in_image(_boxes(row), _image(row))


def test_outputs_are_readable_and_parse_with_transformers(shipped, outputs) -> None:
    assert all(florence2.readable(t) for t in outputs), outputs
    processor = shipped.processor
    for text in outputs:
        official = processor.post_process_generation(text, task="<OD>", image_size=(448, 448))
        ours = florence2.parse_boxes(text, (448, 448))
        assert official["<OD>"]["labels"] == [label for label, _ in ours]
        for box, (_, mine) in zip(official["<OD>"]["bboxes"], ours, strict=True):
            assert np.allclose(box, mine, atol=1.0)  # transformers rounds to whole pixels


def test_boxes_are_on_pins_of_the_product_under_inspection(outputs, rendered) -> None:
    """Every box's centre lies in a pin cell of the lower product (never on a printed label),
    in the canonical composite and, mapped back, on the composite as it was photographed."""
    layout = CompositeLayout(448)
    grid = grid_box((448, 448), "composite_test_grid")
    for text, row in zip(outputs, rendered, strict=True):
        for _, (x1, y1, x2, y2) in florence2.parse_boxes(text, (448, 448)):
            assert layout.position_at((x1 + x2) / 2, (y1 + y2) / 2) is not None, text
            assert (
                grid[0] - 1 <= x1 and x2 <= grid[2] + 1 and grid[1] - 1 <= y1 and y2 <= grid[3] + 1
            )
        labels = layout.label_anchors("test") + layout.label_anchors("reference")
        for _, (x1, y1, x2, y2) in florence2.boxes_in_image(text, _image(row)):
            assert y1 > layout.panel_height  # on the product under inspection
            for name, x, y in labels:
                assert not (x1 <= x <= x2 and y1 <= y <= y2), f"box on label {name}: {text}"


def test_outputs_find_the_defects(outputs, rendered) -> None:
    found = [florence2.parse(t, (448, 448)) for t in outputs]
    scores = findings_scores([_truth(r) for r in rendered], found)
    assert scores.f1 is not None and scores.f1 >= MIN_F1, outputs


def test_shipped_adapter_loads_on_the_base_and_switches_off(rendered) -> None:
    loaded = load_model(BASE, ADAPTER, device="cpu")
    assert loaded.has_adapter and loaded.family == "florence2"
    images = [_image(r) for r in rendered[:4]]
    tuned = florence2.generate(loaded, images)
    with loaded.base_only():
        base = florence2.generate(loaded, images)
    assert all(florence2.readable(t) for t in tuned + base)
    assert base == florence2.generate(load_model(BASE, device="cpu"), images)


def test_a_few_rows_are_scored_through_the_evaluate_cli(tmp_path: Path, capsys) -> None:
    """``python -m qeu_space.evaluate --task od`` on the shipped base and adapter: the report
    carries mAP, findings F1 with intervals, no unreadable output, base and adapter both."""
    import json

    from qeu_space.evaluate import main

    data = tmp_path / "od"
    build_to_folder(BuildConfig("od", num=8, seed=SEED, eval_fraction=1.0), data, command="test")
    report = tmp_path / "report.json"
    argv = ["--task", "od", "--base", str(BASE), "--adapter", str(ADAPTER),
            "--dataset", str(data), "--split", "test", "--limit", "8",
            "--report", str(report), "--quiet"]  # fmt: skip
    assert main(argv) == 0
    runs = {r["name"]: r for r in json.loads(report.read_text())["runs"]}
    assert set(runs) == {"base", "adapter"}
    for run in runs.values():
        od = run["od"]
        assert od["n_images"] == 8 and od["n_unreadable"] == 0
        assert od["findings_f1"] >= MIN_F1 and od["map_50"] > 0.5
        low, high = run["intervals"]["findings_f1"]
        assert 0.0 <= low <= od["findings_f1"] <= high <= 1.0
    table = report.with_suffix(".md").read_text()
    assert "mAP@0.5" in table and "models/inspection-od-lora" in table


def test_training_batches_are_relit_and_keep_their_targets(tiny_od: Path) -> None:
    """Training views are relit within the lamp range (the robustness benchmark's gains 0.6 and
    1.4 inside); the targets and the evaluation batches are untouched."""
    import random

    from qeu_space.training.data import collators

    loaded = load_model(tiny_od, device="cpu")
    evaluation, training = collators(florence2, loaded.processor, loaded.model.config, seed=0)
    assert training is not None and training.options["gain"] == florence2.LAMP_GAIN == 0.45
    assert "rng" not in evaluation.options
    row = make_row(BuildConfig("od", num=4, seed=3), "train", 0)
    row = {"image": _image(row), "bbox_str": row["bbox_str"]}
    plain = evaluation([row] * 6)
    relit = training([row] * 6)
    assert torch.equal(plain["labels"], relit["labels"])
    means = relit["pixel_values"].mean(dim=(1, 2, 3))
    assert not torch.allclose(means, plain["pixel_values"].mean(dim=(1, 2, 3)))
    assert float(means.max() - means.min()) > 0.1  # each composite under its own lamp
    grey = Image.new("RGB", (40, 20), (100, 100, 100))
    rng = random.Random(0)
    seen = [np.asarray(florence2.relit(grey, rng.uniform(0.55, 1.45))).mean() for _ in range(60)]
    assert 55 - 1 <= min(seen) < 70 and 130 < max(seen) <= 145 + 1
