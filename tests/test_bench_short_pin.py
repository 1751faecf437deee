"""The short-pin benchmark's per-kind scoring: each kind is scored on its own findings only."""

from __future__ import annotations

from benchmarks.bench_inspection_vlm import paired_bootstrap
from benchmarks.bench_short_pin import f1_with_interval, only
from qeu_space.vocabulary import DefectKind, Finding

TRUTH = [
    [Finding("C4", "short pin"), Finding("U3", "bent pin", "left")],
    [Finding("D7", "missing pin")],
    [],
]
# the base calls the short pin bent (it has no word for it); the adapter names it
BASE = [
    "Defective. 2 defects: U3 bent pin (left); C4 bent pin (up).",
    "Defective. 1 defect: D7 missing pin.",
    "Passed. No defects found.",
]
TUNED = [
    "Defective. 2 defects: U3 bent pin (left); C4 short pin.",
    "Defective. 1 defect: D7 missing pin.",
    "Passed. No defects found.",
]


def test_each_kind_is_scored_on_its_own_findings():
    short_truth, short_base = only(DefectKind.SHORT, TRUTH, BASE)
    assert short_truth == [[TRUTH[0][0]], [], []]
    assert all(not p.findings for p in short_base)  # the base's "C4 bent pin" is not a short pin
    assert f1_with_interval(*only(DefectKind.SHORT, TRUTH, TUNED))[0] == 1.0
    assert f1_with_interval(*only(DefectKind.SHORT, TRUTH, BASE))[0] == 0.0
    # the base's wrong "bent" at C4 costs it bent-pin precision, not the adapter
    assert f1_with_interval(*only(DefectKind.BENT, TRUTH, BASE))[0] < 1.0
    assert f1_with_interval(*only(DefectKind.BENT, TRUTH, TUNED))[0] == 1.0
    assert f1_with_interval(*only(None, TRUTH, TUNED))[0] == 1.0


def test_the_paired_interval_sees_the_adapter_ahead():
    low, high, not_worse = paired_bootstrap(TRUTH * 10, TUNED * 10, BASE * 10, draws=200)
    assert 0 < low <= high and not_worse == 0.0
