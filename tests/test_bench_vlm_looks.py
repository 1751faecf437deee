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


def test_gamma_lines_give_short_recall_per_gamma_beside_as_shot():
    from benchmarks.bench_vlm_looks import gamma_lines

    rows = RowSet("held-out looks", "x:train", [None] * 4, TRUTH, ["a"] * 4)
    dim = [  # under the gamma the short pin is called bent, and one answer is refused
        "Defective. 2 defects: U3 bent pin (left); C4 bent pin (up).",
        "Defective. 1 defect: D7 missing pin.",
        "Passed. No defects found.",
        "",
    ]
    text = "\n".join(
        gamma_lines(rows, {"new": read_answers(NEW)}, {0.6: {"new": read_answers(dim)}})
    )
    assert "(1 short pins)" in text and "short recall, gamma 0.6" in text
    cells = next(line for line in text.splitlines() if line.startswith("| new")).split(" | ")
    assert cells[1].startswith("1.000") and cells[2].startswith("0.000")  # recall: shot, gamma
    assert cells[3] == "1.000" and cells[-1] == "1 |"  # F1 as shot; one unreadable under gamma


def test_the_gamma_applies_to_the_test_panel_only():
    import numpy as np
    from PIL import Image

    from benchmarks.bench_short_pin import test_gamma as relit
    from qeu_space.geometry import CompositeLayout

    grey = Image.new("RGB", (448, 448), (128, 128, 128))
    out = np.asarray(relit(grey, 0.6))
    x1, y1, x2, y2 = CompositeLayout(448).crop_box("test")
    assert out[y1 + 5, x1 + 5, 0] > 150  # 128 ** 0.6 brighter on the test
    rx1, ry1, _, _ = CompositeLayout(448).crop_box("reference")
    assert out[ry1 + 5, rx1 + 5, 0] == 128  # the reference as shot
