"""The chat-VLM looks benchmark: per-kind scoring, unreadable answers, per-look tables."""

from __future__ import annotations

from benchmarks.bench_vlm_looks import RowSet, read_answers, set_section
from qeu_space.vocabulary import Finding

TRUTH = [
    [Finding("C4", "short pin"), Finding("U3", "bent pin", "left")],
    [Finding("D7", "missing pin")],
    [],
    [Finding("U1", "bent pin", "up")],
]
OLD = [  # calls the short pin bent; its last answer was cut short by max_new_tokens
    "Defective. 2 defects: U3 bent pin (left); C4 bent pin (up).",
    "Defective. 1 defect: D7 missing pin.",
    "Passed. No defects found.",
    "Defective. 1 defect: U1 bent",
]
NEW = [
    "Defective. 2 defects: U3 bent pin (left); C4 short pin.",
    "Defective. 1 defect: D7 missing pin.",
    "Passed. No defects found.",
    "Defective. 1 defect: U1 bent pin (up).",
]


def test_an_answer_cut_short_is_unreadable_and_says_nothing():
    old = read_answers(OLD)
    assert old.unreadable == 1 and old.found[3] == []  # parse_answer alone would read "U1 bent"
    assert read_answers(NEW).unreadable == 0
    assert read_answers([""]).unreadable == 1  # a composite the registration refused


def test_section_scores_each_kind_and_each_look():
    rows = RowSet("held-out looks", "x:train", [None] * 4, TRUTH, ["a", "a", "b", "b"])
    text = "\n".join(set_section(rows, {"old": read_answers(OLD), "new": read_answers(NEW)}, "old"))
    lines: dict[str, str] = {}  # the first table's rows (the per-look table repeats the names)
    for line in text.splitlines():
        if line.startswith("| "):
            lines.setdefault(line.split(" | ")[0], line)
    new, old = lines["| new"].split(" | "), lines["| old"].split(" | ")
    # columns: model, findings F1, bent / missing / short F1, three recalls, position F1, ...
    assert new[1].startswith("1.000") and new[4].startswith("1.000")
    assert old[4] == "n/a" or old[4].startswith("0.000")  # never said short: no short F1 > 0
    assert old[-2] == "1" and new[-2] == "0"  # the unreadable column
    assert "a (2)" in text and "b (2)" in text  # per look family
    assert "new - old, findings F1, paired bootstrap" in text
