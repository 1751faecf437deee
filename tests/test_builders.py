"""Dataset rows: DESIGN.md's columns, truths that read back, held-out positions, determinism."""

from __future__ import annotations

import datasets
import numpy as np
import pytest
from transformers import Florence2Processor
from transformers.models.clip import CLIPImageProcessorPil

from dataset_tools.builders import (
    OD_CATEGORIES,
    BuildConfig,
    build_dataset,
    make_row,
    plan_tasks,
    shard_bounds,
)
from dataset_tools.features import FEATURES
from dataset_tools.render import SEEN_HOUSINGS, UNSEEN_HOUSING
from dataset_tools.sampling import SPLIT_POSITIONS, SPLITS
from qeu_space.geometry import CompositeLayout
from qeu_space.modeling.local_tokenizer import florence2_tokenizer
from qeu_space.modeling.tiny_models import FLORENCE2_POST_PROCESSOR_CONFIG
from qeu_space.views.registration import register_composite
from qeu_space.vocabulary import (
    CLASS_LABELS,
    DEFAULT_KINDS,
    Finding,
    parse_answer,
    quantize,
)

COMMON = {"image", "id", "housing", "labels_drawn", "variant"}
DESIGN_COLUMNS = {
    "qa": COMMON | {"question", "answer", "findings", "verdict"},
    "od": COMMON | {"prompt", "bbox_str", "objects"},
    "cls": COMMON | {"label"},
}


@pytest.fixture(scope="module")
def built() -> dict[str, datasets.DatasetDict]:
    return {
        config: build_dataset(BuildConfig(config, num=24, seed=3, size=224, eval_fraction=0.25))
        for config in ("qa", "od", "cls")
    }


@pytest.mark.parametrize("config", ["qa", "od", "cls"])
def test_splits_and_columns_follow_the_design(built, config):
    dd = built[config]
    assert list(dd) == list(SPLITS)
    assert [len(dd[s]) for s in SPLITS] == [24, 6, 6, 6]
    for ds in dd.values():
        assert DESIGN_COLUMNS[config] <= set(ds.column_names)
        assert ds.features == FEATURES[config]
    row = dd["train"][0]
    assert row["image"].mode == "RGB"
    conn = CompositeLayout(224).connector
    assert row["image"].size == ((224, 224) if config != "cls" else (conn.width, conn.height))


def _findings(rows) -> list[Finding]:
    return [Finding.from_dict(f) for f in rows]


def test_every_qa_answer_parses_back_to_its_findings(built):
    for ds in built["qa"].values():
        for row in ds:
            truth = _findings(row["findings"])
            parsed = parse_answer(row["answer"])
            assert set(parsed.findings) == set(truth)
            assert [f.direction for f in sorted(parsed.findings, key=lambda f: f.sort_key)] == [
                f.direction for f in sorted(truth, key=lambda f: f.sort_key)
            ]
            assert parsed.verdict == row["verdict"]
            if not truth:
                continue
            # boxes lie on their pins of the lower (test) product, in the canonical frame the
            # registration puts it in (the rig moved it: placement is on by default)
            regs = register_composite(row["image"])
            for f in truth:
                x1, y1, x2, y2 = regs.box_to_canonical(f.box, "test")
                assert CompositeLayout(224).position_at((x1 + x2) / 2, (y1 + y2) / 2) == f.position


def _florence2_processor() -> Florence2Processor:
    """Built locally (no Hub): our tokenizer with Florence-2's location tokens."""
    return Florence2Processor(
        image_processor=CLIPImageProcessorPil(size={"height": 64, "width": 64}, image_seq_length=5),
        tokenizer=florence2_tokenizer(),
        post_processor_config=FLORENCE2_POST_PROCESSOR_CONFIG,
    )


def test_every_bbox_str_reads_back_through_transformers_florence2_processor(built):
    processor = _florence2_processor()
    checked = 0
    for ds in built["od"].values():
        names = ds.features["objects"]["category"].feature.names
        for row in ds:
            size = row["image"].size
            result = processor.post_process_generation(
                row["bbox_str"], task="<OD>", image_size=size
            )["<OD>"]
            objects = row["objects"]
            assert result["labels"] == [names[i] for i in objects["category"]]
            for got, (x, y, w, h) in zip(result["bboxes"], objects["bbox"], strict=True):
                for value, true, side in zip(got, (x, y, x + w, y + h), size * 2, strict=True):
                    # transformers returns whole pixels (the bin centre truncated): one bin + 1 px
                    assert abs(value - true) <= side / 1000 + 1, "more than one bin off"
                    assert 0 <= quantize(true, side) <= 999
            checked += len(objects["bbox"])
    assert checked > 10


def test_cls_rows_are_single_connectors_with_matching_labels(built):
    labels = []
    for ds in built["cls"].values():
        for row in ds:
            findings = _findings(row["findings"])
            assert len(findings) <= 1
            expected = findings[0].kind.label if findings else "OK"
            assert CLASS_LABELS[row["label"]] == expected
            labels.append(expected)
    assert set(labels) == set(CLASS_LABELS)


@pytest.mark.parametrize("config", ["qa", "od"])
def test_defects_sit_at_the_split_positions_and_housings(built, config):
    for split, ds in built[config].items():
        housings = set(ds["housing"])
        if split == "test_unseen_housing":
            assert housings == {UNSEEN_HOUSING}
        else:
            assert housings <= set(SEEN_HOUSINGS)
        if config == "qa":
            for row in ds:
                for f in _findings(row["findings"]):
                    assert f.position in SPLIT_POSITIONS[split], (split, f.position)
    assert set(SPLIT_POSITIONS["train"]).isdisjoint(SPLIT_POSITIONS["test"])
    assert set(SPLIT_POSITIONS["validation"]).isdisjoint(SPLIT_POSITIONS["test"])


def test_housings_can_be_chosen_for_a_variant_dataset():
    cfg = BuildConfig("qa", num=8, seed=0, size=224, housings=("latched",), unseen_housing="ribbed")
    dd = build_dataset(cfg)
    assert set(dd["train"]["housing"]) == set(dd["test"]["housing"]) == {"latched"}
    assert set(dd["test_unseen_housing"]["housing"]) == {"ribbed"}


def test_a_pretraining_set_puts_train_defects_anywhere_and_keeps_the_rest():
    held = BuildConfig("qa", num=300, seed=0, size=224)
    anywhere = BuildConfig("qa", num=300, seed=0, size=224, train_positions="all")
    seen = {f["position"] for i in range(300) for f in make_row(anywhere, "train", i)["findings"]}
    assert len(seen) == 27  # every position, the held-out ones included
    assert not seen.isdisjoint({p.name for p in SPLIT_POSITIONS["test"]})
    for split in ("validation", "test", "test_unseen_housing"):  # only train changes
        assert make_row(held, split, 5)["answer"] == make_row(anywhere, split, 5)["answer"]
    card = build_dataset(BuildConfig("qa", num=4, seed=0, size=224, train_positions="all"))
    assert {f["position"] for row in card["test"] for f in row["findings"]} <= {
        p.name for p in SPLIT_POSITIONS["test"]
    }


def test_some_composites_are_unlabelled():
    cfg = BuildConfig("qa", num=40, seed=0, size=224, unlabelled_fraction=0.5)
    drawn = [make_row(cfg, "train", i)["labels_drawn"] for i in range(40)]
    assert 0 < sum(drawn) < 40


def test_rows_are_deterministic_whatever_the_number_of_processes(built):
    again = build_dataset(
        BuildConfig("qa", num=24, seed=3, size=224, eval_fraction=0.25, num_proc=2)
    )
    for split in SPLITS:
        a, b = built["qa"][split], again[split]
        assert a["id"] == b["id"] and a["answer"] == b["answer"]
        for x, y in zip(a, b, strict=True):
            assert np.array_equal(np.asarray(x["image"]), np.asarray(y["image"]))
    other_seed = make_row(BuildConfig("qa", num=24, seed=4, size=224), "train", 0)
    assert (
        other_seed["image"]["bytes"]
        != make_row(BuildConfig("qa", num=24, seed=3, size=224), "train", 0)["image"]["bytes"]
    )


def test_a_worker_waits_for_the_schema_the_parent_publishes(tmp_path, monkeypatch):
    """Workers start on rows before the parent has imported ``datasets``: the first batch of a
    worker must wait for the published schema, then read exactly that schema."""
    import threading

    from dataset_tools import builders

    ready = threading.Event()
    monkeypatch.setattr(builders, "_READY", ready)
    monkeypatch.setattr(builders, "_schemas", {})
    schema = FEATURES["qa"].arrow_schema
    got = []
    reader = threading.Thread(target=lambda: got.append(builders._shared_schema(str(tmp_path))))
    reader.start()
    reader.join(timeout=0.3)
    assert reader.is_alive() and not got  # nothing published yet: it waits
    builders._publish_schema(str(tmp_path), schema, ready)
    reader.join(timeout=5)
    assert got == [schema] and got[0].metadata == schema.metadata
    assert not (tmp_path / "schema.arrow.tmp").exists()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"config": "qa", "num": 0}, "at least 1"),
        ({"config": "seg", "num": 5}, "unknown config"),
        ({"config": "cls", "num": 5, "variant": "nsoart"}, "plain variant"),
        ({"config": "qa", "num": 5, "variant": "sepia"}, "unknown variant"),
        ({"config": "qa", "num": 5, "size": 100 + 1}, "even"),
        ({"config": "qa", "num": 5, "num_proc": 0}, "at least 1"),
        ({"config": "qa", "num": 5, "eval_fraction": 0}, "eval_fraction"),
        ({"config": "qa", "num": 5, "housings": ("standard", "oval")}, "oval"),
        ({"config": "qa", "num": 5, "housings": ()}, "housings must be"),
        ({"config": "qa", "num": 5, "housings": ("latched",)}, "must not be among"),
        ({"config": "qa", "num": 5, "train_positions": "some"}, "--train-positions must be"),
        ({"config": "qa", "num": 5, "png_level": 4}, "--png-level must be 0 .stored. or a"),
        ({"config": "qa", "num": 5, "png_level": -1}, "--png-level must be 0 .stored. or a"),
    ],
)
def test_build_config_refuses_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        BuildConfig(**kwargs)


def test_nsoart_variant_blends_the_soartc_map_over_the_lower_product_only():
    plain = make_row(BuildConfig("qa", num=2, seed=5, size=224), "train", 1)
    nsoart = make_row(BuildConfig("qa", num=2, seed=5, size=224, variant="nsoart"), "train", 1)
    assert (plain["variant"], nsoart["variant"]) == ("plain", "nsoart")
    assert plain["answer"] == nsoart["answer"]
    a = np.asarray(datasets.Image().decode_example(plain["image"])).astype(int)
    b = np.asarray(datasets.Image().decode_example(nsoart["image"])).astype(int)
    layout = CompositeLayout(224)
    x1, y1, x2, y2 = layout.crop_box("test")
    changed = np.abs(a - b).max(axis=2) > 0
    assert changed[y1:y2, x1:x2].mean() > 0.5  # the map covers the product under inspection
    changed[y1:y2, x1:x2] = False
    assert not changed.any()  # the reference and the labels are untouched


def test_od_categories_are_a_classlabel_of_the_defect_kinds(built):
    # the Hugging Face object-detection guide reads the names this way
    names = built["od"]["train"].features["objects"]["category"].feature.names
    assert names == [kind.value for kind in DEFAULT_KINDS] == list(OD_CATEGORIES)
    categories = [c for row in built["od"]["train"] for c in row["objects"]["category"]]
    assert categories and set(categories) <= set(range(len(names)))


def test_qa_rows_carry_images_and_messages_as_trl_reads_them(built):
    ds = built["qa"]["train"]
    assert ds.features["images"] == datasets.List(datasets.Image())
    for row in ds.select(range(4)):
        assert len(row["images"]) == 1
        assert np.array_equal(np.asarray(row["images"][0]), np.asarray(row["image"]))
        user, assistant = row["messages"]
        assert (user["role"], assistant["role"]) == ("user", "assistant")
        blocks = [part["type"] for message in row["messages"] for part in message["content"]]
        assert blocks.count("image") == len(row["images"])  # one placeholder per image
        assert user["content"][0]["type"] == "image"
        assert user["content"][1] == {"type": "text", "text": row["question"]}
        assert assistant["content"] == [{"type": "text", "text": row["answer"]}]


@pytest.mark.parametrize("config", ["qa", "od", "cls"])
def test_rows_are_made_in_the_features_storage_form(config):
    # the builder hands rows to Arrow without Features.encode_example: they must need none
    cfg = BuildConfig(config, num=3, seed=2, size=224)
    for index in range(3):
        row = make_row(cfg, "train", index)
        assert FEATURES[config].encode_example(row) == row


@pytest.mark.parametrize("rows", [1, 7, 5000, 5001, 12345])
def test_tasks_cover_every_row_once_in_order_and_never_straddle_a_shard(rows):
    bounds = shard_bounds(rows, 5000)
    table = datasets.Dataset.from_dict({"i": list(range(rows))})
    for shard, (lo, hi) in enumerate(bounds):  # the same cut as datasets' contiguous shards
        assert table.shard(len(bounds), shard, contiguous=True)["i"] == list(range(lo, hi))
    cfg = BuildConfig("qa", num=rows, eval_fraction=0.01)
    tasks = plan_tasks(cfg)
    for split, n in cfg.split_sizes.items():
        mine = [t for t in tasks if t.split == split]
        assert [i for t in mine for i in range(t.start, t.stop)] == list(range(n))
        for t in mine:
            lo, hi = shard_bounds(n)[t.shard]
            assert lo <= t.start < t.stop <= hi and t.shards == len(shard_bounds(n))


def test_the_cli_offers_every_image_variant():
    from dataset_tools.builders import VARIANTS
    from dataset_tools.sampling import VARIANT_NAMES

    assert tuple(VARIANTS) == VARIANT_NAMES


@pytest.mark.parametrize("config", ["qa", "od"])
def test_a_rows_png_is_exactly_its_composite(config):
    from dataset_tools.compose import make_sample
    from dataset_tools.sampling import draw_spec, row_rng

    cfg = BuildConfig(config, num=4, seed=9, size=224)
    for index in range(4):
        rng = row_rng(cfg.seed, "train", index)
        spec = draw_spec(config, "train", index, rng)
        sample = make_sample(spec, rng, layout=CompositeLayout(224), nuisances=cfg.nuisances)
        decoded = datasets.Image().decode_example(make_row(cfg, "train", index)["image"])
        assert np.array_equal(np.asarray(decoded), np.asarray(sample.image))


@pytest.mark.parametrize("config", ["qa", "od", "cls"])
def test_the_png_level_changes_the_bytes_and_nothing_else(config):
    """``--png-level`` 1-3 (ISA-L) and 0 (stored): other PNG bytes (stored ones larger), the same
    pixels through ``datasets.Image`` and the same other columns."""
    for index in range(3):
        rows = [
            make_row(BuildConfig(config, num=4, seed=9, size=224, png_level=level), "train", index)
            for level in (2, 1, 3, 0)
        ]
        images = [row.pop("image") for row in rows]
        for row in rows:
            row.pop("images", None)  # qa: the same image again
            assert row == rows[0]
        assert len({image["bytes"] for image in images}) == 4
        assert len(images[3]["bytes"]) > 1.2 * len(images[0]["bytes"])
        decoded = [np.asarray(datasets.Image().decode_example(im)) for im in images]
        for pixels in decoded[1:]:
            assert np.array_equal(pixels, decoded[0])
