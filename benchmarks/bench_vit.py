"""ViT classifier: accuracy and confusion matrices on the held-out splits, and images/s.

Prints, for ``test`` (defects at held-out pin positions) and ``test_unseen_housing``, the
accuracy, the sklearn confusion matrix (rows: truth, columns: prediction, order OK / BENDNG /
NUKENG) and, as the baseline in the same run, the accuracy of always answering the most frequent
class. Then inference speed (images/s, batch 32, this machine's CPU) and optionally attention
overlays of a few defective test images.

Usage:
    OMP_NUM_THREADS=1 python benchmarks/bench_vit.py --model models/vit-inspector \\
        --dataset data/cls6k [--overlays DIR]
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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="models/vit-inspector")
    p.add_argument("--dataset", required=True, help="a cls dataset folder (dataset_tools build)")
    p.add_argument("--overlays", type=Path, help="write rollout overlays of test images here")
    args = p.parse_args()
    loaded = load_model(args.model, device="cpu")
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
