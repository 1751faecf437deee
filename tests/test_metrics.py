"""Q/A and OD metrics on fixed predictions, checked by hand (and mAP against the library itself)."""

from __future__ import annotations

import pytest

from qeu_space.evaluation.metrics import (
    OD_CATEGORIES,
    boxes_from_findings,
    direction_accuracy,
    findings_scores,
    od_intervals,
    od_metrics,
    qa_intervals,
    qa_metrics,
    text_scores,
    xywh_to_xyxy,
)
from qeu_space.vocabulary import Finding, format_answer, parse_answer

BENT, MISSING, SHORT = OD_CATEGORIES
C7_MISSING = Finding("C7", "missing pin")
U3_LEFT = Finding("U3", "bent pin", "left")
D9_MISSING = Finding("D9", "missing pin")
D1_UP = Finding("D1", "bent pin", "up")

# Each case: truths, answers, expected
# (verdict_acc, precision, recall, f1, exact, direction_acc, parse_failure, tp, fp, fn).
QA_CASES = {
    # Canonical answers of the truth itself: everything perfect; one bent hit with the right
    # direction -> direction accuracy 1/1.
    "perfect": (
        [[C7_MISSING], [], [U3_LEFT, D9_MISSING]],
        [
            format_answer([C7_MISSING]),
            "Passed. No defects found.",
            format_answer([U3_LEFT, D9_MISSING]),
        ],
        (1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 3, 0, 0),
    ),
    # s1 hit C7 (tp 1); s2 passed, right; s3 says U3 bent (up: wrong direction) and D1 missing
    # (fp 1) and misses D9 (fn 1). tp=2 fp=1 fn=1 -> P = R = F1 = 2/3; exact: s1, s2 -> 2/3;
    # direction: U3 hit, up != left -> 0/1; verdicts all right.
    "one swap": (
        [[C7_MISSING], [], [U3_LEFT, D9_MISSING]],
        ["Defective. 1 defect: C7 missing pin.", "Passed.", "U3 bent pin up, D1 missing"],
        (1.0, 2 / 3, 2 / 3, 2 / 3, 2 / 3, 0.0, 0.0, 2, 1, 1),
    ),
    # s1 unreadable (verdict None: parse failure, wrong verdict, C7 missed: fn 1);
    # s2 says defective with no position (wrong verdict: not exact, though no findings);
    # s3 finds U3 without direction (tp 1, direction counts wrong) and D9 (tp 1), plus a bent
    # D1 (fp 1). tp=2 fp=1 fn=1 -> P = R = F1 = 2/3; verdicts right: s3 only -> 1/3;
    # exact: none -> 0; direction 0/1; parse failure 1/3.
    "unreadable and vague": (
        [[C7_MISSING], [], [U3_LEFT, D9_MISSING]],
        ["I cannot tell.", "Defective.", "U3 is bent; D9 missing; D1 is bent"],
        (1 / 3, 2 / 3, 2 / 3, 2 / 3, 0.0, 0.0, 1 / 3, 2, 1, 1),
    ),
    # Everything passed: the model says so for s1 and names a missing C7 in s2 (fp 1).
    # tp=0 fp=1 fn=0 -> precision 0/1 = 0, recall 0/0 undefined, F1 = 2*0/(0+1+0) = 0;
    # verdicts 1/2, exact 1/2, no bent hit -> direction None.
    "false alarm on a good set": (
        [[], []],
        ["Passed. No defects found.", "C7 missing pin."],
        (0.5, 0.0, None, 0.0, 0.5, None, 0.0, 0, 1, 0),
    ),
    # Nothing to find and nothing found: precision, recall and F1 are all 0/0 -> undefined.
    "all good, all passed": (
        [[], []],
        ["Passed.", "no defects found"],
        (1.0, None, None, None, 1.0, None, 0.0, 0, 0, 0),
    ),
    # Something to find, nothing said (gibberish): precision 0/0 undefined, recall 0/2, F1 0;
    # both unparsed -> parse failures 2/2, verdicts 0/2; exact 0/2.
    "gibberish": (
        [[C7_MISSING], [D9_MISSING]],
        ["llllllll", ""],
        (0.0, None, 0.0, 0.0, 0.0, None, 1.0, 0, 0, 2),
    ),
    # Two right directions out of three bent hits: D1 up right, U3 left right, a bent C7 whose
    # truth is missing (fp 1, fn 1: kind must match). tp=2 fp=1 fn=1.
    "kind must match": (
        [[U3_LEFT, D1_UP], [C7_MISSING]],
        ["U3 bent pin (left); D1 bent pin (up)", "C7 bent pin (down)"],
        (1.0, 2 / 3, 2 / 3, 2 / 3, 0.5, 1.0, 0.0, 2, 1, 1),
    ),
}


FIELDS = (
    "verdict_accuracy",
    "precision",
    "recall",
    "f1",
    "exact_match",
    "direction_accuracy",
    "parse_failure_rate",
    "true_positives",
    "false_positives",
    "false_negatives",
)


@pytest.mark.parametrize("case", list(QA_CASES), ids=list(QA_CASES))
def test_qa_metrics_hand_checked(case: str) -> None:
    truths, answers, expected = QA_CASES[case]
    m = qa_metrics(truths, answers)
    got = tuple(getattr(m, name) for name in FIELDS)
    for name, value, want in zip(FIELDS, got, expected, strict=True):
        assert value == (None if want is None else pytest.approx(want)), name
    assert m.n == len(truths)


@pytest.mark.parametrize("case", list(QA_CASES))
def test_qa_intervals_recompute_qa_metrics(case: str) -> None:
    """Every draw of the same rows repeated must give ``qa_metrics`` itself (same definitions)."""
    truths, answers, _ = QA_CASES[case]
    point = qa_metrics(truths, answers)
    many = qa_intervals([truths[0]] * 5, [answers[0]] * 5, draws=50)
    one = qa_metrics([truths[0]], [answers[0]])
    for name, (low, high) in many.items():
        assert low == high == pytest.approx(getattr(one, name)), name
    wide = qa_intervals(truths * 20, answers * 20, draws=400, seed=1)
    for name, (low, high) in wide.items():
        value = getattr(point, name)
        assert low <= value + 1e-9 and value - 1e-9 <= high, name


def test_verdict_confusion_counts_unparsed_answers() -> None:
    truths = [[C7_MISSING], [C7_MISSING], [], []]
    answers = ["C7 missing", "all good, passed", "passed", "??"]
    m = qa_metrics(truths, answers)
    # rows: true passed / defective / unparsed; columns: said passed / defective / unparsed
    assert m.verdict_confusion == [[1, 0, 1], [1, 1, 0], [0, 0, 0]]
    assert m.parse_failure_rate == 0.25


# Garbage a model may write on a defect-free row: it names no finding, so a metric that only
# compares finding sets would call it right. Each must score as no verdict, never as a pass.
UNREADABLE = ["", "llllllll", "I cannot tell.", "<loc_1><loc_2>", "Assistant: Assistant:"]


@pytest.mark.parametrize("garbage", UNREADABLE)
def test_unreadable_answer_on_a_defect_free_row_is_never_right(garbage: str) -> None:
    """Issue 22: one passed row of four matched an unreadable answer (exact match 0.25)."""
    truths = [[C7_MISSING], [D9_MISSING], [U3_LEFT], []]
    m = qa_metrics(truths, [garbage] * 4)
    assert m.parse_failure_rate == 1.0
    assert m.verdict_accuracy == 0.0
    assert m.exact_match == 0.0
    assert m.precision is None and m.recall == 0.0 and m.f1 == 0.0
    # the defect-free row is no true negative: it sits in the unparsed column, not "passed"
    assert m.verdict_confusion == [[0, 0, 1], [0, 0, 3], [0, 0, 0]]
    alone = qa_metrics([[]], [garbage])
    assert (alone.exact_match, alone.verdict_accuracy, alone.verdict_confusion[0]) == (
        0.0,
        0.0,
        [0, 0, 1],
    )
    for name, (low, high) in qa_intervals(truths * 3, [garbage] * 12, draws=50).items():
        if name in ("exact_match", "verdict_accuracy"):
            assert low == high == 0.0, name
        if name == "parse_failure_rate":
            assert low == high == 1.0


def test_exact_match_needs_the_true_verdict() -> None:
    """An answer "Defective." naming no pin on a passed row is not exact (wrong verdict)."""
    m = qa_metrics([[], []], ["Defective.", "Passed. No defects found."])
    assert m.exact_match == 0.5 and m.verdict_accuracy == 0.5


def test_unreadable_od_output_on_a_defect_free_image_is_never_a_pass() -> None:
    """Florence-2 garbage reads as no boxes; with its unreadable flag it is no verdict."""
    truths = [[], [], [C7_MISSING]]
    found: list[list[Finding]] = [[], [], []]
    flags = [True, False, True]
    scores = findings_scores(truths, found, flags)
    assert scores.exact_match == pytest.approx(1 / 3)  # only the readable empty answer
    assert scores.verdict_accuracy == pytest.approx(1 / 3)
    assert scores.parse_failure_rate == pytest.approx(2 / 3)
    assert scores.verdict_confusion == [[1, 0, 1], [0, 0, 1], [0, 0, 0]]
    assert findings_scores(truths, found).exact_match == pytest.approx(2 / 3)  # no flags given
    boxes = [[], [], [_b(MISSING, 0, 0, 10, 10)]]
    ci = od_intervals(boxes, [[], [], []], truths, found, [True] * 3, draws=30, map_draws=3)
    assert ci["findings_exact_match"] == [0.0, 0.0] and ci["unreadable_rate"] == [1.0, 1.0]
    with pytest.raises(ValueError, match="unreadable flags"):
        findings_scores(truths, found, [True])


def test_qa_metrics_accepts_parsed_answers() -> None:
    truths = [[U3_LEFT], []]
    texts = ["U3 bent pin (left)", "Passed."]
    assert qa_metrics(truths, [parse_answer(t) for t in texts]) == qa_metrics(truths, texts)


def test_direction_accuracy_ignores_unmatched_and_directionless_truth() -> None:
    truth = [[U3_LEFT, Finding("C2", "bent pin")]]
    pred = [[Finding("U3", "bent pin", "left"), Finding("C2", "bent pin", "up")]]
    assert direction_accuracy(truth, pred) == 1.0  # C2's truth states no direction
    assert direction_accuracy(truth, [[Finding("D1", "bent pin", "up")]]) is None


@pytest.mark.parametrize(
    ("truths", "answers", "message"),
    [([[]], [], "1 truths but 0 answers"), ([], [], "no samples")],
)
def test_qa_metrics_rejects_bad_input(truths, answers, message) -> None:
    with pytest.raises(ValueError, match=message):
        qa_metrics(truths, answers)


def test_text_scores_from_the_libraries() -> None:
    # sacrebleu and rouge-score are in requirements-dev.txt: optional at run time, tested here.
    refs = ["Defective. 1 defect: C7 missing pin.", "Passed. No defects found."]
    bleu, rouge_l = text_scores(list(refs), refs)
    assert bleu == pytest.approx(100.0)
    assert rouge_l == pytest.approx(1.0)
    # ROUGE-L F of one right word: "Defective." vs 6 tokens -> P 1, R 1/6, F 2/7;
    # "Passed." vs 4 tokens -> F 2/5. Mean = (2/7 + 2/5) / 2.
    bleu, rouge_l = text_scores(["Defective.", "Passed."], refs)
    assert bleu < 50
    assert rouge_l == pytest.approx((2 / 7 + 2 / 5) / 2)
    m = qa_metrics([[C7_MISSING], []], refs, references=refs)
    assert m.bleu == pytest.approx(100.0) and m.rouge_l == pytest.approx(1.0)


def test_text_scores_are_none_without_the_libraries(monkeypatch) -> None:
    import qeu_space.evaluation.metrics as metrics

    monkeypatch.setattr(
        metrics, "optional_text_metrics", lambda: dict.fromkeys(("sacrebleu", "rouge_score"), False)
    )
    m = metrics.qa_metrics([[]], ["Passed."], references=["Passed. No defects found."])
    assert (m.bleu, m.rouge_l) == (None, None)


# --------------------------------------------------------------------------- OD


def _b(label: str, x1: float, y1: float, x2: float, y2: float) -> tuple[str, tuple]:
    return (label, (x1, y1, x2, y2))


# Each case: truths, predictions, (mAP@0.5, mAP@0.5:0.95). COCO interpolates precision at 101
# recall points 0, 0.01, .., 1 and averages over categories that have a true box.
OD_CASES = {
    # Exact boxes: AP 1 at every IoU threshold.
    "exact": (
        [[_b(BENT, 10, 10, 20, 20)], [_b(MISSING, 30, 30, 40, 40)]],
        [[_b(BENT, 10, 10, 20, 20)], [_b(MISSING, 30, 30, 40, 40)]],
        (1.0, 1.0),
    ),
    # Right place, wrong kind: class-aware, so nothing matches -> 0 for both categories.
    "wrong kind": (
        [[_b(BENT, 10, 10, 20, 20)]],
        [[_b(MISSING, 10, 10, 20, 20)]],
        (0.0, 0.0),
    ),
    # Bent: 2 true, 1 found -> recall 0.5 at precision 1: 51 of 101 points -> 51/101.
    # Missing: 1 true, found at a shifted box only (IoU 0) -> 0. Mean = 51/202.
    "half the bent pins": (
        [[_b(BENT, 10, 10, 20, 20), _b(MISSING, 30, 30, 40, 40)], [_b(BENT, 0, 0, 10, 10)]],
        [[_b(BENT, 10, 10, 20, 20), _b(MISSING, 50, 50, 60, 60)], []],
        (51 / 202, 51 / 202),
    ),
    # Short pins are a category of their own: one of two found -> 51/101; calling the other one
    # missing scores nothing, and missing (no true box) is left out of the mean.
    "short pins": (
        [[_b(SHORT, 10, 10, 20, 20)], [_b(SHORT, 30, 30, 40, 40)]],
        [[_b(SHORT, 10, 10, 20, 20)], [_b(MISSING, 30, 30, 40, 40)]],
        (51 / 101, 51 / 101),
    ),
    # IoU 0.6 (box 10x10 vs shifted 2.5 px: inter 7.5*10 = 75, union 125): a hit for thresholds
    # 0.50, 0.55, 0.60 (3 of 10) -> mAP@0.5 = 1, mAP@0.5:0.95 = 0.3.
    "iou 0.6": (
        [[_b(BENT, 10, 10, 20, 20)]],
        [[_b(BENT, 12.5, 10, 22.5, 20)]],
        (1.0, 0.3),
    ),
}


@pytest.mark.parametrize("case", list(OD_CASES), ids=list(OD_CASES))
def test_od_metrics_hand_checked(case: str) -> None:
    truths, preds, (map50, map5095) = OD_CASES[case]
    m = od_metrics(truths, preds)
    assert m.map_50 == pytest.approx(map50)
    assert m.map_50_95 == pytest.approx(map5095)
    assert m.n_true == sum(map(len, truths)) and m.n_pred == sum(map(len, preds))


def test_od_metrics_per_class_and_unknown_labels() -> None:
    truths, preds, _ = OD_CASES["half the bent pins"]
    m = od_metrics(truths, [preds[0] + [_b("a poster", 0, 0, 5, 5)], preds[1]])
    assert m.ap_50_per_class == pytest.approx({BENT: 51 / 101, MISSING: 0.0})
    assert m.n_unknown_label == 1


def test_od_metrics_without_true_boxes_is_undefined() -> None:
    m = od_metrics([[]], [[_b(BENT, 0, 0, 5, 5)]])
    assert (m.map_50, m.map_50_95, m.ap_50_per_class) == (None, None, {})


def test_od_metrics_agree_with_faster_coco_eval_called_directly() -> None:
    """A messy case (several images, misses, duplicates, shifts) against the library's own API."""
    from faster_coco_eval import COCO, COCOeval_faster

    truths = [
        [_b(BENT, 10, 10, 30, 30), _b(MISSING, 50, 50, 70, 70)],
        [_b(BENT, 100, 100, 120, 125)],
        [_b(MISSING, 5, 200, 25, 220), _b(MISSING, 40, 200, 60, 220)],
    ]
    preds = [
        [_b(BENT, 11, 12, 31, 30), _b(BENT, 10, 10, 30, 30), _b(MISSING, 55, 52, 72, 71)],
        [_b(MISSING, 100, 100, 120, 125)],
        [_b(MISSING, 41, 203, 60, 221)],
    ]
    ours = od_metrics(truths, preds)

    cats = [{"id": 1, "name": BENT}, {"id": 2, "name": MISSING}]
    gt_anns, dt_anns = [], []
    for img, (truth, pred) in enumerate(zip(truths, preds, strict=True), start=1):
        for label, (x1, y1, x2, y2) in truth:
            gt_anns.append(
                {
                    "id": len(gt_anns) + 1,
                    "image_id": img,
                    "iscrowd": 0,
                    "category_id": 1 if label == BENT else 2,
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": (x2 - x1) * (y2 - y1),
                }
            )
        for label, (x1, y1, x2, y2) in pred:
            dt_anns.append(
                {
                    "image_id": img,
                    "category_id": 1 if label == BENT else 2,
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "score": 1.0,
                }
            )
    gt = COCO(
        {"images": [{"id": i} for i in (1, 2, 3)], "annotations": gt_anns, "categories": cats}
    )
    ev = COCOeval_faster(gt, gt.loadRes(dt_anns), iouType="bbox", print_function=lambda *a: None)
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    assert ours.map_50_95 == pytest.approx(ev.stats[0])
    assert ours.map_50 == pytest.approx(ev.stats[1])
    assert 0 < ours.map_50 < 1


def test_box_converters() -> None:
    assert xywh_to_xyxy([10, 20, 5, 7]) == (10.0, 20.0, 15.0, 27.0)
    boxed = Finding("C7", "missing pin", box=(1, 2, 3, 4))
    assert boxes_from_findings([boxed, U3_LEFT]) == [(MISSING, (1.0, 2.0, 3.0, 4.0))]


@pytest.mark.parametrize(
    ("truths", "preds", "message"),
    [
        ([[]], [], "1 truths but 0 predictions"),
        ([], [], "no images"),
        ([[_b("scratch", 0, 0, 1, 1)]], [[]], "not a category"),
    ],
)
def test_od_metrics_rejects_bad_input(truths, preds, message) -> None:
    with pytest.raises(ValueError, match=message):
        od_metrics(truths, preds)
