"""The robustness and registration benchmarks stay runnable: their quick modes, on tiny models."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from benchmarks import bench_registration, bench_robustness
from benchmarks.bench_robustness import CONDITIONS, Condition, make_case, render_scene, select


def test_quick_mode_writes_the_table_and_the_curve_and_a_rerun_reads_the_cache(tmp_path: Path):
    out = tmp_path / "RESULTS.md"
    argv = ["--quick", "--cache", str(tmp_path / "cache"), "--results", str(out),
            "--figure", str(tmp_path / "curve.png")]  # fmt: skip
    assert bench_robustness.main(argv) == 0
    text = out.read_text()
    for heading in ("## Registration on", "## Registration off", "## Headline", "## Goals"):
        assert heading in text
    for name in ("none", "shift 8 px", "gain 0.6", "both: rotation 4 deg"):
        assert f"| {name} | 3 |" in text
    assert "VLM adapter findings F1 |" in text and "tiny random-weight models" in text
    assert (tmp_path / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert bench_robustness.main(argv) == 0  # everything from the cache
    assert "(0 results computed" in out.read_text()


def test_cases_are_balanced_and_visit_every_position():
    cases = [make_case(i) for i in range(150)]
    assert Counter(c.kind for c in cases) == {"passed": 50, "bent pin": 50, "missing pin": 50}
    for kind in ("bent pin", "missing pin"):
        assert len({c.findings[0].position for c in cases if c.kind == kind}) == 27
    assert len({(c.housing, c.kind) for c in cases}) == 12
    assert make_case(7) == make_case(7)


def test_a_condition_changes_only_what_it_names():
    case = make_case(4)  # one bent pin
    none = render_scene(case, Condition("none"))
    gain = render_scene(case, Condition("gain", 0.6))
    moved = render_scene(case, Condition("shift", 16))
    both = render_scene(case, Condition("shift", 16, both=True))
    assert np.array_equal(none.reference, gain.reference)
    assert np.array_equal(none.reference, moved.reference)
    assert not np.array_equal(none.test, gain.test)
    assert np.hypot(*moved.test_pose[:2, 2]) == pytest.approx(16.0)
    assert np.array_equal(moved.test, both.test) and not np.array_equal(
        both.reference, none.reference
    )
    assert np.array_equal(none.test, render_scene(case, Condition("none")).test)


def test_conditions_cover_the_issue_and_a_typo_is_refused():
    slugs = {c.slug for c in CONDITIONS}
    wanted = ("none", "shift-24", "rotation-6", "scale-0.88", "scale-1.12", "gain-0.6", "gain-1.4",
              "blur-1.5", "jpeg-50", "noise-8", "both-shift-4", "both-scale-1.06")  # fmt: skip
    for slug in wanted:
        assert slug in slugs
    assert [c.slug for c in select(CONDITIONS, "shift-*")] == [
        "shift-4", "shift-8", "shift-16", "shift-24"
    ]  # fmt: skip
    with pytest.raises(SystemExit, match="matches no condition"):
        select(CONDITIONS, "shfit-8")


def test_registration_benchmark_runs_and_every_non_connector_is_refused(tmp_path: Path):
    out = tmp_path / "RESULTS_registration.md"
    assert bench_registration.main(["--poses", "6", "--per-look", "1", "--results", str(out)]) == 0
    text = out.read_text()
    assert "| **registration** (`register`) |" in text
    assert "| steep-tilt (held out) | **registration** |" in text  # every look family, held out too
    assert "| classic | first registration (baseline) |" in text
    assert re.search(r"Refused (\d+) / \1 \(100\.0 %", text)  # every non-connector refused
