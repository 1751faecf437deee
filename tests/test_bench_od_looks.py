"""``benchmarks/bench_od_looks.py``: findings counted per kind, intervals, the set syntax."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.bench_od_looks import (
    ERROR_SOURCES,
    bootstrap,
    error_sources,
    f1_of,
    paired_f1_difference,
    parse_set,
    position_counts,
    recall_of,
    row_counts,
)
from qeu_space.vocabulary import Finding

TRUTH = [
    [Finding("U1", "short pin"), Finding("C4", "bent pin", "up")],
    [],
    [Finding("D9", "missing pin")],
]
FOUND = [
    [Finding("U1", "short pin"), Finding("C4", "missing pin")],  # C4's kind wrong
    [Finding("C2", "short pin")],  # a false alarm
    [Finding("D9", "missing pin")],
]


@pytest.mark.parametrize(
    ("kind", "tp_fp_fn", "f1", "recall"),
    [
        (None, (2, 2, 1), 4 / 7, 2 / 3),
        ("short pin", (1, 1, 0), 2 / 3, 1.0),
        ("bent pin", (0, 0, 1), 0.0, 0.0),
        ("missing pin", (1, 1, 0), 2 / 3, 1.0),
    ],
)
def test_counts_per_kind(kind, tp_fp_fn, f1, recall) -> None:
    counts = row_counts(TRUTH, FOUND, kind)
    assert tuple(counts.sum(axis=0)) == tp_fp_fn
    assert f1_of(counts) == pytest.approx(f1) and recall_of(counts) == pytest.approx(recall)


def test_position_only_counts_ignore_the_kind() -> None:
    assert tuple(position_counts(TRUTH, FOUND).sum(axis=0)) == (3, 1, 0)


def test_intervals_bracket_the_value_and_a_model_against_itself_differs_by_zero() -> None:
    counts = row_counts(TRUTH * 20, FOUND * 20)
    low, high = bootstrap(counts, draws=200)
    assert low <= f1_of(counts) <= high and low < high
    assert paired_f1_difference(counts, counts, draws=50) == (0.0, 0.0)
    assert f1_of(np.zeros((3, 3))) is None and bootstrap(np.zeros((0, 3))) is None


@pytest.mark.parametrize("spec", ["data/od:test", "name=data/od", "=data/od:test", "n=a:test,b"])
def test_a_set_without_label_folder_and_split_is_refused(spec: str) -> None:
    with pytest.raises(SystemExit, match="LABEL=FOLDER:SPLIT"):
        parse_set(spec)


@pytest.mark.parametrize(
    ("truth", "found", "unreadable", "source", "confusion"),
    [
        ([Finding("U1", "short pin")], [Finding("U1", "short pin")], False, "right", None),
        (
            [Finding("C4", "bent pin", "up")],
            [Finding("C4", "missing pin")],
            False,
            "kind wrong",
            ("bent pin", "missing pin"),
        ),  # fmt: skip
        (
            [Finding("C5", "bent pin", "up")],
            [Finding("C6", "bent pin")],
            False,
            "neighbour pin",
            None,
        ),  # fmt: skip
        ([Finding("C5", "bent pin", "up")], [Finding("C7", "bent pin")], False, "missed", None),
        ([Finding("C5", "bent pin", "up")], [Finding("C6", "short pin")], False, "missed", None),
        ([Finding("D9", "missing pin")], [], False, "missed", None),
        ([Finding("D9", "missing pin")], [Finding("D9", "missing pin")], True, "unreadable", None),
        ([], [Finding("C2", "short pin")], False, "false alarm", None),
    ],
)
def test_error_sources_say_where_each_true_finding_went(
    truth, found, unreadable, source, confusion
) -> None:
    sources, confusions = error_sources([truth], [found], [unreadable])
    assert list(sources) == list(ERROR_SOURCES)
    expected = {name: 0 for name in ERROR_SOURCES}
    expected[source] = 1
    if source == "missed" and found:  # the said finding explains no true one: a false alarm too
        expected["false alarm"] = 1
    assert dict(sources) == expected
    assert confusions == ({confusion: 1} if confusion else {})


def test_error_sources_count_every_true_finding_once() -> None:
    sources, confusions = error_sources(TRUTH, FOUND, [False, False, False])
    true = sum(len(t) for t in TRUTH)
    assert sum(sources[k] for k in ERROR_SOURCES if k != "false alarm") == true
    assert sources["right"] == 2 and sources["kind wrong"] == 1 and sources["false alarm"] == 1
    assert confusions == {("bent pin", "missing pin"): 1}
