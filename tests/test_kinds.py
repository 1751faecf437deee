"""Opt-in defect kinds (``--kinds``): short pins when asked, default datasets unchanged."""

from __future__ import annotations

import hashlib
import json
from collections import Counter

import datasets
import numpy as np
import pytest
from datasets import ClassLabel, List

from dataset_tools.__main__ import main
from dataset_tools.builders import BuildConfig, build_dataset, make_row
from dataset_tools.card import dataset_card
from dataset_tools.features import FEATURES, features
from dataset_tools.sampling import KIND_SHARES, SPLIT_POSITIONS, SPLITS, _kind
from qeu_space.vocabulary import (
    CLASS_LABELS,
    DEFAULT_KINDS,
    DefectKind,
    Finding,
    parse_answer,
    parse_bbox_str,
)

ALL_KINDS = ("bent", "missing", "short")

# The content of the default builds `BuildConfig(config, num=6, seed=0, size=224)` (the same rows
# as `python -m dataset_tools build --config CONFIG --num 6 --size 224`), as _digest reads them.
# Computed on the commit before short pins existed (316859532b65, branch `short`) by running
# _digest on those builds; the parquet files of that CLI command were byte-identical before and
# after too. A change here means existing datasets changed: only on purpose, with a new digest.
DEFAULT_DIGESTS = {
    "qa": "a4c3544d9bff9fb5a14715f9abf93b2bee1e9ff54bbd9f4f6bccdc1e08089042",
    "od": "b99c5f8d71a94a92457fc6ed3396873692ccf74ca325423f3eb49aaa26e31230",
    "cls": "f890bb3475ba2a5157746f245ae20ee885f9ec4a24c56747a898f2598932e752",
}
_BASE = ("id", "image", "housing", "pins", "labels_drawn", "variant")
DIGEST_COLUMNS = {  # the columns of that commit; columns added since are not part of the digest
    "qa": (*_BASE, "question", "answer", "findings", "verdict"),
    "od": (*_BASE, "prompt", "bbox_str", "objects"),
    "cls": (*_BASE, "label", "findings"),
}


def _plain(feature, value):
    """A value with class ids read as their names (so a string column turned ``ClassLabel``
    keeps its digest while its content is the same)."""
    if isinstance(feature, ClassLabel) and isinstance(value, int):
        return feature.int2str(value)
    if isinstance(feature, dict) and isinstance(value, dict):
        return {k: _plain(feature[k], value[k]) for k in sorted(feature)}
    if isinstance(feature, List) and isinstance(value, list):
        return [_plain(feature.feature, v) for v in value]
    return value


def _digest(dd: datasets.DatasetDict, config: str) -> str:
    """SHA-256 over every row's content: decoded pixels (not PNG bytes) and the other columns."""
    h = hashlib.sha256()
    for split in SPLITS:
        ds = dd[split]
        for row in ds:
            for column in DIGEST_COLUMNS[config]:
                value = row[column]
                if column == "image":
                    pixels = np.asarray(value.convert("RGB"))
                    value = [pixels.shape, hashlib.sha256(pixels.tobytes()).hexdigest()]
                else:
                    value = _plain(ds.features[column], value)
                h.update(json.dumps([split, column, value], sort_keys=True).encode())
    return h.hexdigest()


@pytest.mark.parametrize("config", ["qa", "od", "cls"])
def test_default_builds_are_unchanged_by_digest(config):
    dd = build_dataset(BuildConfig(config, num=6, seed=0, size=224))
    assert _digest(dd, config) == DEFAULT_DIGESTS[config]
    assert features(config) == FEATURES[config]


def test_default_kind_shares_draw_what_they_drew_before():
    assert _kind(np.nextafter(0.6, 0), DEFAULT_KINDS) is DefectKind.BENT  # bent below 0.6
    assert _kind(0.6, DEFAULT_KINDS) is DefectKind.MISSING
    kinds = tuple(DefectKind)
    assert [_kind(u, kinds) for u in (0.44, 0.45, 0.74, 0.75, 0.99)] == [
        DefectKind.BENT, DefectKind.MISSING, DefectKind.MISSING, DefectKind.SHORT, DefectKind.SHORT
    ]  # fmt: skip
    assert sum(KIND_SHARES.values()) == pytest.approx(1.0)


@pytest.fixture(scope="module")
def short_builds() -> dict[str, datasets.DatasetDict]:
    return {
        config: build_dataset(BuildConfig(config, num=40, seed=1, size=224, kinds=ALL_KINDS))
        for config in ("qa", "od", "cls")
    }


def test_qa_rows_with_short_pins_read_back(short_builds):
    kinds = Counter()
    for split, ds in short_builds["qa"].items():
        for row in ds:
            truth = {Finding.from_dict(f) for f in row["findings"]}
            assert set(parse_answer(row["answer"]).findings) == truth
            for f in truth:
                kinds[f.kind] += 1
                assert f.position in SPLIT_POSITIONS[split]
                if f.kind is DefectKind.SHORT:
                    assert f.direction is None and f"{f.position} short pin" in row["answer"]
    assert set(kinds) == set(DefectKind)


def test_od_rows_name_short_pins_in_bbox_str_and_objects(short_builds):
    seen = set()
    ds = short_builds["od"]["train"]
    names = ds.features["objects"]["category"].feature.names
    assert names == ["bent pin", "missing pin", "short pin"]
    for row in ds:
        labels = [label for label, _ in parse_bbox_str(row["bbox_str"], row["image"].size)]
        assert labels == [names[i] for i in row["objects"]["category"]]
        seen |= set(labels)
    assert seen == {"bent pin", "missing pin", "short pin"}


def test_cls_gains_shortng_only_when_short_pins_are_on(short_builds):
    names = ("OK", "BENDNG", "NUKENG", "SHORTNG")
    ds = short_builds["cls"]["train"]
    assert ds.features["label"].names == list(names)
    assert FEATURES["cls"]["label"].names == list(CLASS_LABELS) == list(names[:3])
    counts = Counter(names[i] for i in ds["label"])
    assert set(counts) == set(names) and min(counts.values()) >= 5  # balanced over four
    for row in ds:
        findings = [Finding.from_dict(f) for f in row["findings"]]
        assert names[row["label"]] == (findings[0].kind.label if findings else "OK")
    # a subset of kinds keeps every id where it was
    subset = BuildConfig("cls", num=4, size=224, kinds=("short", "bent"))
    assert features("cls", subset.kinds)["label"].names == list(names)
    assert subset.kinds == (DefectKind.BENT, DefectKind.SHORT)


def test_card_says_which_kinds_are_on():
    rows = {s: 1 for s in SPLITS}
    files = {s: [f"qa/{s}-00000-of-00001.parquet"] for s in SPLITS}
    default = str(dataset_card(BuildConfig("qa", num=4), files, rows, "cmd"))
    assert "bent and missing pins" in default and "off: `short pin`" in default
    assert "`--kinds bent missing`, the default" in default
    short = str(dataset_card(BuildConfig("qa", num=4, kinds=ALL_KINDS), files, rows, "cmd"))
    assert "bent, missing and short pins" in short and "`short pin` (0.25)" in short
    cls = str(dataset_card(BuildConfig("cls", num=4, kinds=ALL_KINDS), files, rows, "cmd"))
    assert "SHORTNG" in cls


def test_cli_kinds_flag_builds_short_pins_and_refuses_unknown_kinds(tmp_path, capsys):
    out = tmp_path / "cls"
    argv = ["build", "--config", "cls", "--num", "8", "--size", "224", "--out", str(out)]
    assert main([*argv, "--kinds", "bent", "missing", "short", "--quiet"]) == 0
    loaded = datasets.load_dataset(str(out))
    assert loaded["train"].features["label"].names[-1] == "SHORTNG"
    assert "--kinds bent missing short" in (out / "README.md").read_text()
    with pytest.raises(SystemExit) as err:
        main([*argv[:-1], str(tmp_path / "x"), "--kinds", "wobbly"])
    assert err.value.code == 2 and "--kinds" in capsys.readouterr().err
    with pytest.raises(ValueError, match="--kinds: unknown defect kind"):
        BuildConfig("qa", num=4, kinds=("wobbly",))
    with pytest.raises(ValueError, match="at least one"):
        BuildConfig("qa", num=4, kinds=())


def test_make_row_of_a_short_pin_build_is_deterministic():
    cfg = BuildConfig("qa", num=4, seed=7, size=224, kinds=ALL_KINDS)
    a, b = make_row(cfg, "train", 3), make_row(cfg, "train", 3)
    assert a["answer"] == b["answer"] and a["image"]["bytes"] == b["image"]["bytes"]


def test_the_spaces_generate_form_places_typed_short_pins():
    """The Generate tab's text goes through the vocabulary parser to the renderer, and a short
    pin is marked as one on the grid."""
    from dataset_tools.compose import SampleSpec, make_sample
    from qeu_space.ui.cases import parse_defects
    from qeu_space.ui.drawing import _short

    findings = parse_defects("C4 short pin; U3 bent pin (left)")
    assert findings == (Finding("U3", "bent pin", "left"), Finding("C4", "short pin"))
    assert parse_defects("the pin at D6 is pushed in") == (Finding("D6", "short pin"),)
    spec = SampleSpec("generated-0", "standard", "square", findings, True)
    sample = make_sample(spec, np.random.default_rng(0))
    assert [f.describe() for f in sample.findings] == ["U3 bent pin (left)", "C4 short pin"]
    assert _short(sample.findings[1]) == "C4 short"
