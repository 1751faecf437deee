"""Shipped inspection VLM: seconds per answer on one CPU core, findings F1 base vs adapter.

``models/inspection-vlm-base`` + ``models/inspection-vlm-lora`` on the ``latched`` housing (which
the base never saw), at held-out pin positions, with 95 % bootstrap intervals and a paired
interval of the difference. Both models answer through the project's own path (``load_model`` +
the chat-VLM family's ``generate``, registration included), the base inside
``loaded.base_only()`` exactly as the Space shows it; the base is the baseline of this run.
Score it on rows whose seed nothing used for training or choosing (``qa-latched-fresh``).

Example:
    python -m dataset_tools build --config qa --num 300 --seed 9102 --eval-fraction 1.0 \\
        --num-proc 2 --housings latched --unseen-housing standard --out data/qa-latched-fresh
    OMP_NUM_THREADS=1 python -m benchmarks.bench_inspection_vlm \\
        --dataset data/qa-latched-fresh --write
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from datetime import date
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402
from datasets import load_dataset  # noqa: E402

from qeu_space.evaluation.metrics import qa_intervals, qa_metrics  # noqa: E402
from qeu_space.modeling.families import family_for  # noqa: E402
from qeu_space.modeling.loading import load_model  # noqa: E402
from qeu_space.vocabulary import Finding  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
BASE = ROOT / "models" / "inspection-vlm-base"
ADAPTER = ROOT / "models" / "inspection-vlm-lora"
RESULTS = ROOT / "benchmarks" / "RESULTS_inspection_vlm.md"


def truths(rows: list[dict]) -> list[list[Finding]]:
    return [
        [Finding(f["position"], f["kind"], f["direction"]) for f in row["findings"]] for row in rows
    ]


def latency(loaded, images, family, *, base: bool) -> list[float]:
    """Seconds per answer, one image at a time (what a Space user waits for)."""
    family.generate(loaded, images[:1], batch_size=1)  # warm-up
    seconds = []
    for image in images:
        start = time.perf_counter()
        if base:
            with loaded.base_only():
                family.generate(loaded, [image], batch_size=1)
        else:
            family.generate(loaded, [image], batch_size=1)
        seconds.append(time.perf_counter() - start)
    return seconds


def score(loaded, family, rows: list[dict], *, base: bool):
    images = [row["image"] for row in rows]
    if base:
        with loaded.base_only():
            answers = family.generate(loaded, images, batch_size=16)
    else:
        answers = family.generate(loaded, images, batch_size=16)
    return qa_metrics(truths(rows), answers), answers


def paired_bootstrap(
    truth: list, tuned: list, base: list, *, draws: int = 1000, seed: int = 0
) -> tuple[float, float, float]:
    """Adapter F1 minus base F1 over resampled rows: (2.5 %, 97.5 %, share of draws <= 0).

    ``truth`` is each row's findings, ``tuned`` / ``base`` the two models' answers (texts or
    parsed). Both models answer the same rows, so resampling rows keeps the pairing; the share of
    draws in which the base does as well or better says how sure "the base is worse" is. Draws
    where either F1 is undefined (no finding on either side) are left out.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(draws):
        idx = rng.integers(0, len(truth), len(truth))
        pick = [truth[i] for i in idx]
        tuned_f1 = qa_metrics(pick, [tuned[i] for i in idx]).f1
        base_f1 = qa_metrics(pick, [base[i] for i in idx]).f1
        if tuned_f1 is not None and base_f1 is not None:
            diffs.append(tuned_f1 - base_f1)
    low, high = np.percentile(diffs, [2.5, 97.5])
    return float(low), float(high), float(np.mean(np.asarray(diffs) <= 0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True, help="qa dataset of the latched housing")
    parser.add_argument("--split", default="test", help="split to score (default test)")
    parser.add_argument("--limit", type=int, default=0, help="score only N rows (0: all)")
    parser.add_argument("--latency-samples", type=int, default=20)
    parser.add_argument("--write", action="store_true", help=f"write {RESULTS.name}")
    args = parser.parse_args()
    torch.set_num_threads(1)

    rows = list(load_dataset(args.dataset, split=args.split))
    if args.limit:
        rows = rows[: args.limit]
    loaded = load_model(BASE, ADAPTER, device="cpu")
    family = family_for(loaded)
    tuned, tuned_answers = score(loaded, family, rows, base=False)
    base, base_answers = score(loaded, family, rows, base=True)
    low, high, not_worse = paired_bootstrap(truths(rows), tuned_answers, base_answers)
    images = [row["image"] for row in rows[: args.latency_samples]]
    tuned_s = latency(loaded, images, family, base=False)
    base_s = latency(loaded, images, family, base=True)

    def fmt(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.3f}"

    lines = [
        "# Inspection VLM (shipped base vs LoRA adapter)",
        "",
        f"`OMP_NUM_THREADS=1 python -m benchmarks.bench_inspection_vlm --dataset {args.dataset}"
        f" --split {args.split}` on {date.today()}, {platform.machine()}, 2 CPU cores (shared "
        "with other work), torch threads 1, CPU only.",
        "",
        f"Split `{args.split}` of the latched-housing dataset ({len(rows)} rows; defects at "
        "held-out pin positions). Baseline: the base model (pre-trained on standard, ribbed "
        "and stepped housings only), answering inside `loaded.base_only()` in the same run.",
        "",
        "| model | findings F1 | F1 95 % | precision | recall | verdict acc. | exact match | "
        "direction acc. | s/answer (median, 1 core) | s/answer (max) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    truth = truths(rows)
    runs = (("base (baseline)", base, base_s, base_answers),
            ("base + LoRA", tuned, tuned_s, tuned_answers))  # fmt: skip
    for name, m, s, answers in runs:
        ci = qa_intervals(truth, answers).get("f1")
        shown = "n/a" if ci is None else f"[{ci[0]:.3f}, {ci[1]:.3f}]"
        lines.append(
            f"| {name} | {fmt(m.f1)} | {shown} | {fmt(m.precision)} | {fmt(m.recall)} | "
            f"{m.verdict_accuracy:.3f} | {m.exact_match:.3f} | {fmt(m.direction_accuracy)} | "
            f"{statistics.median(s):.3f} | {max(s):.3f} |"
        )
    lines += [
        "",
        "Figures are only honest on rows whose seed no training or choice used (e.g. "
        "`data/qa-latched-fresh`, seed 9102). Latency goal <= 0.5 s per answer -> "
        f"{statistics.median(tuned_s):.3f} s median (adapter), {statistics.median(base_s):.3f} "
        "(base). The short-pin adapter, per defect kind: `benchmarks/RESULTS_short_pin.md` "
        "(`python -m benchmarks.bench_short_pin`).",
        "",
        f"Adapter F1 - base F1, paired bootstrap over rows (1000 draws): 95 % interval "
        f"[{low:+.4f}, {high:+.4f}]; share of draws with the base as good or better: "
        f"{not_worse:.3f}.",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.write:
        RESULTS.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
