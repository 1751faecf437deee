"""Task metrics as pure functions: Q/A answers scored against findings, OD boxes scored by COCO mAP.

Nothing here loads a model or touches disk: :mod:`qeu_space.evaluation.evaluate` produces the
predictions and hands them over. Where a maintained library computes a number it does (scikit-learn
for accuracy, the confusion matrix, micro precision / recall / F1; faster-coco-eval
for mAP; sacrebleu / rouge_score for the optional text scores); the few lines written by hand say
why.

Example:
    >>> from qeu_space.vocabulary import Finding
    >>> truth = [[Finding("C7", "missing pin")], []]
    >>> m = qa_metrics(truth, ["Defective. 1 defect: C7 missing pin.", "Passed."])
    >>> (m.verdict_accuracy, m.f1, m.exact_match)
    (1.0, 1.0, 1.0)
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from qeu_space.vocabulary import (
    ALL_POSITIONS,
    Box,
    DefectKind,
    Finding,
    ParsedAnswer,
    parse_answer,
    verdict_of,
)

#: Verdict classes of the confusion matrix; ``unparsed`` is an answer that says neither verdict.
VERDICT_CLASSES: tuple[str, ...] = ("passed", "defective", "unparsed")
#: A labelled box as the OD metric takes it: ``(label, (x1, y1, x2, y2))`` in image pixels.
LabelledBox = tuple[str, Box]
#: OD categories, in COCO category-id order (id = index + 1): the defect kinds' names.
OD_CATEGORIES: tuple[str, ...] = tuple(kind.value for kind in DefectKind)


# --------------------------------------------------------------------------- Q/A


@dataclass(frozen=True)
class QAMetrics:
    """Scores of answer texts against the true findings of the same samples.

    Attributes:
        n: number of samples.
        verdict_accuracy: share of samples whose stated verdict equals the truth's
            (an unparsed answer counts as wrong).
        precision, recall, f1: findings micro-averaged over all samples; a predicted finding is
            a hit when its position and kind both match a true one (direction is not required);
            ``None`` where undefined (nothing predicted / nothing true / neither).
        exact_match: share of samples whose answer states the true verdict and whose set of
            (position, kind) equals the truth's: an unreadable answer on a defect-free row names
            no findings, yet it is never an exact match (nor a verdict, nor a true negative: it
            sits in the ``unparsed`` column of the confusion matrix).
        direction_accuracy: among hits on bent pins whose truth has a direction, the share whose
            stated direction matches; ``None`` when there was no such hit.
        parse_failure_rate: share of answers whose verdict could not be read.
        true_positives, false_positives, false_negatives: finding counts behind the micro scores.
        verdict_confusion: rows = true verdict, columns = stated verdict, both in
            :data:`VERDICT_CLASSES` order (the ``unparsed`` row is always zero).
        bleu: corpus BLEU (0-100) from sacrebleu against the reference answers, if installed.
        rouge_l: mean ROUGE-L F-measure (0-1) from rouge_score, if installed.
    """

    n: int
    verdict_accuracy: float
    precision: float | None
    recall: float | None
    f1: float | None
    exact_match: float
    direction_accuracy: float | None
    parse_failure_rate: float
    true_positives: int
    false_positives: int
    false_negatives: int
    verdict_confusion: list[list[int]] = field(default_factory=list)
    bleu: float | None = None
    rouge_l: float | None = None


def _finding_key(f: Finding) -> str:
    return f"{f.position.name} {f.kind.value}"


def _all_keys() -> list[str]:
    return [f"{p.name} {k.value}" for p in ALL_POSITIONS for k in DefectKind]


def qa_metrics(
    truths: Sequence[Sequence[Finding]],
    answers: Sequence[str | ParsedAnswer],
    references: Sequence[str] | None = None,
) -> QAMetrics:
    """Score answers (raw model text or already parsed) against each sample's true findings.

    Findings become a multi-label indicator over every (position, kind) of the grid, so
    scikit-learn's micro precision / recall / F1 apply as they are; exact match is subset
    accuracy counted only where the stated verdict is the true one (an unreadable answer names
    no findings, which would otherwise match a defect-free row). A score whose denominator is
    zero is undefined and reported as ``None``, not as a number that reads as good or bad:
    precision when nothing was predicted, recall when nothing was true, F1 when neither (an
    all-good set answered all-passed: verdict accuracy and exact match say so). Predicting
    nothing when something was true gives F1 = 0.

    Args:
        truths: per sample, its true findings (empty = passed).
        answers: per sample, the model's answer text or a :class:`ParsedAnswer`.
        references: per sample, the reference answer text; enables BLEU / ROUGE-L when
            ``sacrebleu`` / ``rouge_score`` are installed.

    Raises:
        ValueError: when the lengths differ or there are no samples.
    """
    if len(truths) != len(answers):
        raise ValueError(f"{len(truths)} truths but {len(answers)} answers; give one per sample")
    if not truths:
        raise ValueError("no samples to score")
    if references is not None and len(references) != len(answers):
        raise ValueError(f"{len(references)} references but {len(answers)} answers")
    # Imported here, not at the top: `python -m qeu_space.evaluate --help` imports this module
    # (through the evaluation library's task names) and answers without loading scikit-learn.
    from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support
    from sklearn.preprocessing import MultiLabelBinarizer

    parsed = [a if isinstance(a, ParsedAnswer) else parse_answer(a) for a in answers]

    true_verdicts = [verdict_of(t) for t in truths]
    said_verdicts = [p.verdict or "unparsed" for p in parsed]
    confusion = confusion_matrix(true_verdicts, said_verdicts, labels=list(VERDICT_CLASSES))

    binarizer = MultiLabelBinarizer(classes=_all_keys())
    y_true = binarizer.fit_transform([{_finding_key(f) for f in t} for t in truths])
    y_pred = binarizer.transform([{_finding_key(f) for f in p.findings} for p in parsed])
    precision, recall, f1, _ = precision_recall_fscore_support(
        y_true, y_pred, average="micro", zero_division=np.nan
    )
    # Subset accuracy alone would call "no findings" from garbage a match on a passed row:
    # an exact answer also states the true verdict (an unreadable one states none).
    right_verdict = np.array([s == t for s, t in zip(said_verdicts, true_verdicts, strict=True)])
    tp = int((y_true & y_pred).sum())
    fp = int(((1 - y_true) & y_pred).sum())
    fn = int((y_true & (1 - y_pred)).sum())

    bleu, rouge_l = (None, None)
    if references is not None:
        texts = [a.strip() if isinstance(a, str) else "" for a in answers]
        bleu, rouge_l = text_scores(texts, list(references))

    return QAMetrics(
        n=len(truths),
        verdict_accuracy=float(accuracy_score(true_verdicts, said_verdicts)),
        precision=_defined(precision),
        recall=_defined(recall),
        f1=_defined(f1),
        exact_match=float(np.mean(right_verdict & (y_true == y_pred).all(axis=1))),
        direction_accuracy=direction_accuracy(truths, [p.findings for p in parsed]),
        parse_failure_rate=float(np.mean([p.verdict is None for p in parsed])),
        true_positives=tp,
        false_positives=fp,
        false_negatives=fn,
        verdict_confusion=confusion.tolist(),
        bleu=bleu,
        rouge_l=rouge_l,
    )


def direction_accuracy(
    truths: Sequence[Sequence[Finding]], predictions: Sequence[Sequence[Finding]]
) -> float | None:
    """Share of matched bent-pin findings whose stated direction is the true one.

    Hand-written: it pairs findings by (position, kind) first and then compares a third field,
    which no metric library models. Only pairs whose truth carries a direction count; a predicted
    bent pin with no direction counts as wrong. ``None`` when no such pair exists.
    """
    right = total = 0
    for truth, pred in zip(truths, predictions, strict=True):
        said = {(f.position, f.kind): f.direction for f in pred}
        for f in truth:
            if f.direction is None or (f.position, f.kind) not in said:
                continue
            total += 1
            right += said[(f.position, f.kind)] == f.direction
    return right / total if total else None


#: Bootstrap draws behind every interval (rows resampled with replacement; percentile method).
BOOTSTRAP_DRAWS = 1000


def qa_intervals(
    truths: Sequence[Sequence[Finding]],
    answers: Sequence[str | ParsedAnswer],
    *,
    draws: int = BOOTSTRAP_DRAWS,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, list[float]]:
    """Bootstrap intervals (rows resampled, percentile method) of the headline Q/A metrics.

    A figure on a few hundred rows moves by a few points between samples of the same model; the
    interval says how much (the design's rule: every headline figure carries a 95 % interval).
    Each draw recomputes the metrics exactly as :func:`qa_metrics` defines them, from per-row
    counts (micro precision / recall / F1 pool the counts of the drawn rows). A metric undefined
    in a draw (e.g. precision with nothing predicted) is left out of that draw; one undefined in
    every draw has no interval.

    Returns:
        ``{metric: [low, high]}`` for ``verdict_accuracy``, ``precision``, ``recall``, ``f1``,
        ``exact_match``, ``direction_accuracy`` and ``parse_failure_rate``.
    """
    if len(truths) != len(answers) or not truths:
        raise ValueError(f"{len(truths)} truths and {len(answers)} answers: give one per sample")
    parsed = [a if isinstance(a, ParsedAnswer) else parse_answer(a) for a in answers]
    per_row = np.zeros((len(truths), 8))
    for i, (truth, said) in enumerate(zip(truths, parsed, strict=True)):
        true_keys = {_finding_key(f) for f in truth}
        said_keys = {_finding_key(f) for f in said.findings}
        named = {(f.position, f.kind): f.direction for f in said.findings}
        pairs = [
            named[(f.position, f.kind)] == f.direction
            for f in truth
            if f.direction is not None and (f.position, f.kind) in named
        ]
        per_row[i] = (
            said.verdict == verdict_of(truth),
            len(true_keys & said_keys),
            len(said_keys - true_keys),
            len(true_keys - said_keys),
            true_keys == said_keys and said.verdict == verdict_of(truth),
            said.verdict is None,
            sum(pairs),
            len(pairs),
        )
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, len(truths), size=(draws, len(truths)))
    total = per_row[rows].sum(axis=1)  # draws x 8
    n = len(truths)
    verdict, tp, fp, fn, exact, unparsed, right, paired = total.T
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = tp / (tp + fp)
        recall = tp / (tp + fn)
        f1 = 2 * tp / (2 * tp + fp + fn)
        direction = right / paired
    values = {
        "verdict_accuracy": verdict / n,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "exact_match": exact / n,
        "direction_accuracy": direction,
        "parse_failure_rate": unparsed / n,
    }
    tail = 100 * (1 - level) / 2
    intervals = {}
    for name, draws_of in values.items():
        defined = draws_of[np.isfinite(draws_of)]
        if defined.size:
            low, high = np.percentile(defined, [tail, 100 - tail])
            intervals[name] = [float(low), float(high)]
    return intervals


def optional_text_metrics() -> dict[str, bool]:
    """Which optional text-metric libraries are importable (``sacrebleu``, ``rouge_score``)."""
    return {
        name: importlib.util.find_spec(name) is not None for name in ("sacrebleu", "rouge_score")
    }


def text_scores(predictions: list[str], references: list[str]) -> tuple[float | None, float | None]:
    """Corpus BLEU (sacrebleu, 0-100) and mean ROUGE-L F (rouge_score, 0-1); ``None`` if absent.

    ``evaluate.load`` would fetch these from the Hub, which the offline rule forbids, so the two
    libraries are called directly and are optional.
    """
    available = optional_text_metrics()
    bleu = rouge_l = None
    if available["sacrebleu"]:
        import sacrebleu

        bleu = float(sacrebleu.corpus_bleu(predictions, [references]).score)
    if available["rouge_score"]:
        from rouge_score import rouge_scorer

        scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
        pairs = zip(predictions, references, strict=True)
        scores = [scorer.score(ref, pred)["rougeL"].fmeasure for pred, ref in pairs]
        rouge_l = float(np.mean(scores))
    return bleu, rouge_l


# --------------------------------------------------------------------------- OD


@dataclass(frozen=True)
class ODMetrics:
    """COCO box metrics, class-aware (a box only matches a true box of its own kind).

    Attributes:
        n_images: images scored.
        map_50: mAP at IoU 0.5; ``None`` when no image has a true box (COCO's -1).
        map_50_95: mAP averaged over IoU 0.50:0.05:0.95; ``None`` likewise.
        ap_50_per_class: AP at IoU 0.5 per category with at least one true box.
        n_true, n_pred: boxes counted; predictions with an unknown label are left out and
            counted in ``n_unknown_label``.
        findings_precision, findings_recall, findings_f1: boxes read as findings on the test
            grid (the pin under the box centre, the box's category) against the true findings,
            micro-averaged as Q/A findings are (:func:`findings_scores`); ``None`` when not
            measured or undefined.
        findings_exact_match: share of images whose set of (pin, category) is the truth's.
        n_unreadable: outputs that are not a well-formed ``bbox_str`` of known categories, or
            images the model could not read (no connector found).
    """

    n_images: int
    map_50: float | None
    map_50_95: float | None
    ap_50_per_class: dict[str, float]
    n_true: int
    n_pred: int
    n_unknown_label: int
    findings_precision: float | None = None
    findings_recall: float | None = None
    findings_f1: float | None = None
    findings_exact_match: float | None = None
    n_unreadable: int = 0

    @property
    def unreadable_rate(self) -> float:
        return self.n_unreadable / self.n_images if self.n_images else 0.0


def xywh_to_xyxy(box: Sequence[float]) -> Box:
    """The dataset's ``objects.bbox`` ``[x, y, w, h]`` as ``(x1, y1, x2, y2)``."""
    x, y, w, h = (float(v) for v in box)
    return (x, y, x + w, y + h)


def boxes_from_findings(findings: Sequence[Finding]) -> list[LabelledBox]:
    """Labelled boxes of findings (those without a box are skipped: they cannot be scored)."""
    return [(f.kind.value, f.box) for f in findings if f.box is not None]


def od_metrics(
    truths: Sequence[Sequence[LabelledBox]],
    predictions: Sequence[Sequence[LabelledBox]],
    categories: Sequence[str] = OD_CATEGORIES,
) -> ODMetrics:
    """mAP@0.5 and mAP@0.5:0.95 with faster-coco-eval over COCO dicts built in memory.

    Florence-2's ``<OD>`` output carries no confidence, so every predicted box gets score 1.0;
    COCO then ranks a sample's boxes in the order the model said them (a stable sort), and the
    precision/recall curve has a single operating point per image set. Boxes are
    ``(x1, y1, x2, y2)`` pixels in both inputs; labels are category names (e.g. ``bent pin``).

    Raises:
        ValueError: when the lengths differ or there are no images.
    """
    if len(truths) != len(predictions):
        raise ValueError(f"{len(truths)} truths but {len(predictions)} predictions; one per image")
    if not truths:
        raise ValueError("no images to score")
    cat_id = {name: i + 1 for i, name in enumerate(categories)}
    images, gt_anns, dt_anns = [], [], []
    unknown = 0
    for image_id, (truth, pred) in enumerate(zip(truths, predictions, strict=True), start=1):
        images.append({"id": image_id})
        for label, box in truth:
            if label not in cat_id:
                raise ValueError(f"true box label {label!r} is not a category {tuple(categories)}")
            gt_anns.append(_coco_ann(len(gt_anns) + 1, image_id, cat_id[label], box))
        for label, box in pred:
            if label not in cat_id:
                unknown += 1
                continue
            ann = _coco_ann(len(dt_anns) + 1, image_id, cat_id[label], box)
            ann["score"] = 1.0
            dt_anns.append(ann)
    stats, per_class = _coco_bbox_eval(images, gt_anns, dt_anns, categories)
    return ODMetrics(
        n_images=len(truths),
        map_50=_defined(stats[1]),
        map_50_95=_defined(stats[0]),
        ap_50_per_class=per_class,
        n_true=len(gt_anns),
        n_pred=len(dt_anns),
        n_unknown_label=unknown,
    )


def findings_scores(
    truths: Sequence[Sequence[Finding]],
    predictions: Sequence[Sequence[Finding]],
    unreadable: Sequence[bool] | None = None,
) -> QAMetrics:
    """Findings (position and kind; direction not required) scored as Q/A answers are.

    Each image's findings become a parsed answer (``defective`` with findings, else
    ``passed``), so :func:`qa_metrics` gives the same micro precision / recall / F1 and exact
    match for boxes read on the grid as for answers. An ``unreadable`` output (or a refused
    image) becomes an answer with no verdict: garbage that names no box is never a pass.
    """
    flags = [False] * len(predictions) if unreadable is None else list(unreadable)
    if len(flags) != len(predictions):
        raise ValueError(f"{len(flags)} unreadable flags but {len(predictions)} predictions")
    answers = [
        ParsedAnswer(None if bad else "defective" if pred else "passed", tuple(pred))
        for pred, bad in zip(predictions, flags, strict=True)
    ]
    return qa_metrics(truths, answers)


def od_intervals(
    truths: Sequence[Sequence[LabelledBox]],
    predictions: Sequence[Sequence[LabelledBox]],
    truth_findings: Sequence[Sequence[Finding]],
    found: Sequence[Sequence[Finding]],
    unreadable: Sequence[bool],
    *,
    draws: int = BOOTSTRAP_DRAWS,
    map_draws: int | None = None,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, list[float]]:
    """Bootstrap intervals (images resampled, percentile method) of the headline OD metrics.

    mAP is recomputed by faster-coco-eval on each draw's images (a drawn image twice counts
    twice), findings F1 / precision / recall from per-image counts as :func:`findings_scores`
    pools them, and the unreadable share from per-image flags. ``map_draws`` (default
    ``draws``) bounds the COCO evaluations, the slow part (about 10 ms per 100 images).

    Returns:
        ``{metric: [low, high]}`` for ``map_50``, ``map_50_95``, ``findings_precision``,
        ``findings_recall``, ``findings_f1``, ``findings_exact_match`` and ``unreadable_rate``.
    """
    n = len(truths)
    if not n or not len(predictions) == len(truth_findings) == len(found) == len(unreadable) == n:
        raise ValueError("give one truth, prediction, finding list and flag per image")
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, n, size=(draws, n))
    per_row = np.zeros((n, 5))
    for i, (truth, said) in enumerate(zip(truth_findings, found, strict=True)):
        true_keys = {_finding_key(f) for f in truth}
        said_keys = {_finding_key(f) for f in said}
        per_row[i] = (
            len(true_keys & said_keys),
            len(said_keys - true_keys),
            len(true_keys - said_keys),
            true_keys == said_keys and not unreadable[i],
            bool(unreadable[i]),
        )
    tp, fp, fn, exact, bad = per_row[rows].sum(axis=1).T
    with np.errstate(invalid="ignore", divide="ignore"):
        values = {
            "findings_precision": tp / (tp + fp),
            "findings_recall": tp / (tp + fn),
            "findings_f1": 2 * tp / (2 * tp + fp + fn),
            "findings_exact_match": exact / n,
            "unreadable_rate": bad / n,
        }
    boxes = []
    for pick in rows[: draws if map_draws is None else map_draws]:
        m = od_metrics([truths[i] for i in pick], [predictions[i] for i in pick])
        boxes.append((_nan(m.map_50), _nan(m.map_50_95)))
    values["map_50"], values["map_50_95"] = (np.array(v) for v in zip(*boxes, strict=True))
    tail = 100 * (1 - level) / 2
    intervals = {}
    for name, draws_of in values.items():
        defined = draws_of[np.isfinite(draws_of)]
        if defined.size:
            low, high = np.percentile(defined, [tail, 100 - tail])
            intervals[name] = [float(low), float(high)]
    return intervals


def _nan(value: float | None) -> float:
    return float("nan") if value is None else value


def _coco_ann(ann_id: int, image_id: int, category_id: int, box: Box) -> dict:
    x1, y1, x2, y2 = (float(v) for v in box)
    w, h = max(x2 - x1, 0.0), max(y2 - y1, 0.0)
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": category_id,
        "bbox": [x1, y1, w, h],
        "area": w * h,
        "iscrowd": 0,
    }


def _silent(*_args: object, **_kwargs: object) -> None:
    """faster-coco-eval prints its summary table; the report carries the numbers instead."""


def _coco_bbox_eval(
    images: list[dict], gt_anns: list[dict], dt_anns: list[dict], categories: Sequence[str]
) -> tuple[np.ndarray, dict[str, float]]:
    from faster_coco_eval import COCO, COCOeval_faster

    gt = COCO(print_function=_silent)
    gt.dataset = {
        "images": images,
        "annotations": gt_anns,
        "categories": [{"id": i + 1, "name": n} for i, n in enumerate(categories)],
    }
    gt.createIndex()
    dt = gt.loadRes(dt_anns)
    coco_eval = COCOeval_faster(gt, dt, iouType="bbox", print_function=_silent)
    coco_eval.run()
    # precision: [iou thresholds, recall thresholds, categories, area ranges, max dets]
    precision = coco_eval.eval["precision"]
    per_class = {}
    for k, name in enumerate(categories):
        curve = precision[0, :, k, 0, -1]
        if (curve > -1).any():
            per_class[name] = float(curve[curve > -1].mean())
    return np.asarray(coco_eval.stats, dtype=float), per_class


def _defined(value: float) -> float | None:
    """Undefined scores (COCO's -1 without true boxes, sklearn's NaN on 0/0) become ``None``."""
    return None if value < 0 or math.isnan(value) else float(value)
