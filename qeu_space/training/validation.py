"""The task metric computed at each validation: generate, parse, score against the row's truth.

The loss says the model copies the answer format; only generation says it finds the pins (the
seeds' Phi-3 run had a falling loss and "not a single hit"). So every validation also generates
on up to ``eval_samples`` rows and scores them with :mod:`qeu_space.evaluation.metrics`: findings F1
(position and kind must match) for ``qa``, class-aware mAP@0.5 for ``od``, and accuracy of
the predicted class label for ``cls`` (the ViT's "generation" is its label).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sklearn.metrics import accuracy_score

from qeu_space.evaluation.metrics import findings_scores, od_metrics, qa_metrics, xywh_to_xyxy
from qeu_space.vocabulary import CLASS_LABELS, Box, Finding


def qa_truth(row: Mapping[str, Any]) -> list[Finding]:
    return [Finding.from_dict(f) for f in row["findings"]]


def od_truth(
    row: Mapping[str, Any], category_names: Sequence[str] | None = None
) -> list[tuple[str, Box]]:
    """``objects`` as ``(category, (x1, y1, x2, y2))``; both the struct-of-lists and list forms.

    A ``ClassLabel`` category (an int) is named through ``category_names`` (the feature's names).
    """
    objects = row["objects"]
    if isinstance(objects, Mapping):
        pairs = zip(objects["category"], objects["bbox"], strict=True)
    else:
        pairs = ((o["category"], o["bbox"]) for o in objects)
    out = []
    for category, bbox in pairs:
        if not isinstance(category, str):
            if category_names is None:
                raise ValueError(f"objects.category holds {category!r} and no names were given")
            category = category_names[int(category)]
        out.append((category, xywh_to_xyxy(bbox)))
    return out


def cls_truth(row: Mapping[str, Any]) -> str:
    """The row's class label name (``ClassLabel`` ints are indices of ``CLASS_LABELS``)."""
    label = row["label"]
    return label if isinstance(label, str) else CLASS_LABELS[int(label)]


def counts(
    task: str,
    family: Any,
    rows: Sequence[Mapping[str, Any]],
    texts: Sequence[str],
    category_names: Sequence[str] | None = None,
):
    """Per-row inputs of the task metric (kept separate so processes can pool them).

    ``category_names``: the ``od`` rows' ``objects.category`` ``ClassLabel`` names.
    """
    if task == "qa":
        return [(qa_truth(r), t) for r, t in zip(rows, texts, strict=True)]
    if task == "cls":
        return [(cls_truth(r), t) for r, t in zip(rows, texts, strict=True)]
    # Truth boxes are in the image's pixels; the output's are mapped there from the canonical
    # frame (a product moved by the camera is compared where it really is). Both are also read
    # as findings on the registered grid.
    pairs = []
    for r, t in zip(rows, texts, strict=True):
        image, truth = r["image"].convert("RGB"), od_truth(r, category_names)
        predicted = family.boxes_in_image(t, image) if t else []
        said = family.parse(t, image.size) if t else []
        pairs.append(((truth, family.findings_in_image(truth, image)), (predicted, said)))
    return pairs


def score(task: str, pooled: Sequence[tuple[Any, Any]]) -> dict[str, float]:
    """Validation metrics from pooled ``(truth, prediction)`` pairs (names without prefix).

    The metric that picks the best checkpoint must always be a number: when it is undefined
    because nothing was true and nothing predicted (F1 with no findings, mAP with no true box),
    staying silent was right, which scores 1.0; a false alarm on such a set scores 0.0.
    """
    if not pooled:
        return {}
    truths, predictions = zip(*pooled, strict=True)
    if task == "qa":
        m = qa_metrics(list(truths), list(predictions))
        scores = {
            "findings_f1": m.f1 if m.f1 is not None else m.exact_match,
            "findings_precision": m.precision,
            "findings_recall": m.recall,
            "verdict_accuracy": m.verdict_accuracy,
            "exact_match": m.exact_match,
        }
    elif task == "cls":
        scores = {"accuracy": accuracy_score(list(truths), list(predictions))}
    else:
        m = od_metrics([t[0] for t in truths], [p[0] for p in predictions])
        f = findings_scores([t[1] for t in truths], [p[1] for p in predictions])
        silent = 0.0 if m.n_pred else 1.0
        scores = {
            "map_50": m.map_50 if m.map_50 is not None else silent,
            "map_50_95": m.map_50_95 if m.map_50_95 is not None else silent,
            "findings_f1": f.f1 if f.f1 is not None else f.exact_match,
        }
    return {k: float(v) for k, v in scores.items() if v is not None}
