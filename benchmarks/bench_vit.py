"""ViT classifier: accuracy and confusion matrices on the held-out splits, and images/s.

Prints, for ``test`` (defects at held-out pin positions) and ``test_unseen_housing``, the
accuracy, the sklearn confusion matrix (rows: truth, columns: prediction, order OK / BENDNG /
NUKENG) and, as the baseline in the same run, the accuracy of always answering the most frequent
class. Then inference speed (images/s, batch 32, this machine's CPU) and optionally attention
overlays of a few defective test images.

A pair model (``num_channels`` 6: reference and test as channels) reads ``qa`` composites
instead (``--dataset`` built with ``--config qa``; its truth is each row's ``findings``): per split
(``test``, and ``test_held_out_looks`` when the build has it) the four-class accuracy, the
verdict accuracy (defect or not) and the share of good products flagged, with 95 % Wilson
intervals, beside the majority-class baseline.

Usage:
    OMP_NUM_THREADS=1 python benchmarks/bench_vit.py --model models/vit-inspector \\
        --dataset data/cls6k [--overlays DIR]
    OMP_NUM_THREADS=1 python -m benchmarks.bench_vit --model models/vit-inspector \\
        --dataset data/qa-pairs-fresh [--limit 300]
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from pathlib import Path

import numpy as np
from datasets import load_dataset
from sklearn.metrics import accuracy_score, confusion_matrix

from qeu_space.geometry import ConnectorGeometry
from qeu_space.modeling.attention import attention_overlay, attention_rollout
from qeu_space.modeling.families import vit
from qeu_space.modeling.loading import load_model
from qeu_space.vocabulary import CLASS_LABELS, Position


def evaluate_split(loaded, rows) -> tuple[float, float, np.ndarray, float]:
    """Accuracy, majority-class baseline, confusion matrix and images/s on ``rows``."""
    truth = [CLASS_LABELS[i] for i in rows["label"]]
    images = list(rows["image"])
    start = time.perf_counter()
    predicted = [label for label, _ in vit.predict(loaded, images, batch_size=32)]
    speed = len(images) / (time.perf_counter() - start)
    majority = Counter(truth).most_common(1)[0][0]
    baseline = accuracy_score(truth, [majority] * len(truth))
    matrix = confusion_matrix(truth, predicted, labels=list(CLASS_LABELS))
    return accuracy_score(truth, predicted), baseline, matrix, speed


def write_overlays(loaded, rows, folder: Path, count: int) -> None:
    """Rollout overlays of the first ``count`` defective rows; prints where each map peaks."""
    folder.mkdir(parents=True, exist_ok=True)
    done = 0
    for row in rows:
        if done == count or not row["findings"]:
            continue
        image = row["image"].convert("RGB")
        heatmap = attention_rollout(loaded, image)
        scores = ConnectorGeometry(image.width, image.height).position_scores(heatmap)
        top = max(scores, key=scores.__getitem__)
        truth = Position.parse(row["findings"][0]["position"])
        label = vit.predict(loaded, [image])[0][0]
        name = f"{done:02d}_{CLASS_LABELS[row['label']]}_{truth}_pred-{label}_peak-{top}.png"
        attention_overlay(image, heatmap).save(folder / name)
        print(f"  overlay {name}")
        done += 1


def wilson(hits: int, n: int) -> tuple[float, float]:
    """95 % Wilson interval of ``hits`` out of ``n``."""
    from scipy.stats import binomtest

    if not n:
        return 0.0, 1.0
    ci = binomtest(hits, n).proportion_ci(confidence_level=0.95, method="wilson")
    return float(ci.low), float(ci.high)


def evaluate_pairs(loaded, rows) -> dict:
    """Four-class and verdict figures of a pair model on ``qa`` rows (composites + findings)."""
    from qeu_space.training.vit_pair import label_of

    labels = vit.PAIR_LABELS
    truth = [labels[label_of(f)] for f in rows["findings"]]
    images = [image.convert("RGB") for image in rows["image"]]
    from qeu_space.views.registration import NoConnectorError

    start = time.perf_counter()
    predicted = []
    for image in images:  # one at a time: a refused pair (no connector found) counts as wrong
        try:
            predicted.append(vit.predict_composites(loaded, [image])[0][0])
        except NoConnectorError:
            predicted.append("refused")
    speed = len(images) / (time.perf_counter() - start)
    refused = predicted.count("refused")
    good = [t == "OK" for t in truth]
    right = sum((p != "OK") == (not g) for p, g in zip(predicted, good, strict=True))
    flagged = sum(p != "OK" for p, g in zip(predicted, good, strict=True) if g)  # refused too
    majority = Counter(truth).most_common(1)[0][0]
    return {
        "rows": len(truth),
        "refused": refused,
        "accuracy": accuracy_score(truth, predicted),
        "majority": accuracy_score(truth, [majority] * len(truth)),
        "verdict": (right / len(truth), *wilson(right, len(truth))),
        "good_flagged": (flagged / max(1, sum(good)), *wilson(flagged, sum(good))),
        "matrix": confusion_matrix(truth, predicted, labels=list(labels)),
        "speed": speed,
    }


def main_pairs(loaded, data, limit: int | None) -> None:
    for split in ("test", "test_held_out_looks"):
        if split not in data:
            continue
        rows = (
            data[split]
            if limit is None
            else data[split].select(range(min(limit, len(data[split]))))
        )
        r = evaluate_pairs(loaded, rows)
        v, g = r["verdict"], r["good_flagged"]
        print(f"{split}: {r['rows']} pairs ({r['refused']} refused, counted wrong), "
              f"accuracy {r['accuracy']:.4f} (baseline, majority "
              f"class: {r['majority']:.4f}); verdict {v[0]:.4f} [{v[1]:.4f}, {v[2]:.4f}]; good "
              f"flagged {100 * g[0]:.1f} % [{100 * g[1]:.1f}, {100 * g[2]:.1f}]; "
              f"{r['speed']:.1f} pairs/s")  # fmt: skip
        print(f"  confusion matrix (rows truth, columns prediction; {', '.join(vit.PAIR_LABELS)}):")
        for label, line in zip(vit.PAIR_LABELS, r["matrix"], strict=True):
            print(f"  {label:>7} " + " ".join(f"{n:5d}" for n in line))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="models/vit-inspector")
    p.add_argument("--dataset", required=True, help="a cls dataset folder (dataset_tools build)")
    p.add_argument("--overlays", type=Path, help="write rollout overlays of test images here")
    p.add_argument("--limit", type=int, help="pair models: score the first N rows of each split")
    args = p.parse_args()
    loaded = load_model(args.model, device="cpu")
    if vit.is_pair(loaded.model.config):
        from qeu_space.training.vit_pair import _load

        folder = Path(args.dataset)
        splits = [s for s in ("test", "test_held_out_looks") if any(folder.rglob(f"{s}-*.parquet"))]
        if not splits:
            p.error(f"{args.dataset}: no test parquet shards (a dataset_tools build folder)")
        data = _load(args.dataset, splits)  # only the splits scored: no cache of the train split
        if "findings" not in data["test"].column_names:
            p.error(f"{args.model} compares pairs: give a qa dataset (composites with findings)")
        print(f"model {args.model} (pair: reference and test as channels)")
        main_pairs(loaded, data, args.limit)
        return
    data = load_dataset(args.dataset)
    print(f"model {args.model}; order {', '.join(CLASS_LABELS)}")
    for split in ("test", "test_unseen_housing"):
        accuracy, baseline, matrix, speed = evaluate_split(loaded, data[split])
        print(f"{split}: {len(data[split])} rows, accuracy {accuracy:.4f} "
              f"(baseline, majority class: {baseline:.4f}); {speed:.1f} images/s")  # fmt: skip
        print("  confusion matrix (rows truth, columns prediction):")
        for label, line in zip(CLASS_LABELS, matrix, strict=True):
            print(f"  {label:>7} " + " ".join(f"{n:5d}" for n in line))
    if args.overlays:
        write_overlays(loaded, data["test"], args.overlays, count=6)


if __name__ == "__main__":
    main()
