"""Short-pin adapter: what an adapter teaches the base, per defect kind, on fresh seeds.

Issue 13's goals for ``models/inspection-vlm-short-pin`` on the embedded inspection VLM: short-pin
findings F1 of the adapter >= 0.90 (the base has no word for a short pin), bent / missing findings
F1 of the adapter >= the base's - 0.02 (nothing forgotten), answers no slower. Both answer the same
rows through the project's own path (``load_model`` + the chat-VLM family's ``generate``; the base
inside ``loaded.base_only()``), which is the baseline of this run. Per kind, findings F1 keeps only
that kind's findings in the truth and in the answer; every figure carries a 95 % bootstrap interval
and the adapter - base differences a paired one.

Example:
    python -m dataset_tools build --config qa --num 300 --seed 9104 --eval-fraction 1.0 \\
        --kinds bent missing short --out data/qa-short-fresh
    OMP_NUM_THREADS=1 python -m benchmarks.bench_short_pin --dataset data/qa-short-fresh --write
    (several --dataset folders, e.g. two fresh seeds, are scored together)

``--test-gamma 0.6 1.6`` also scores every row with a gamma curve on the test panel only (the
reference as shot): a model that learned "short = dimmer" loses its short pins there (issue 19:
short-pin recall >= 0.85 under gamma 0.6 and 1.6).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import statistics
from datetime import date
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from datasets import concatenate_datasets, load_dataset  # noqa: E402
from PIL import Image  # noqa: E402

from benchmarks.bench_inspection_vlm import latency, paired_bootstrap, truths  # noqa: E402
from qeu_space.evaluation.metrics import qa_intervals, qa_metrics  # noqa: E402
from qeu_space.geometry import CompositeLayout  # noqa: E402
from qeu_space.modeling.families import family_for  # noqa: E402
from qeu_space.modeling.loading import load_model  # noqa: E402
from qeu_space.training.data import keep_registered  # noqa: E402
from qeu_space.views.no_connector import NoConnectorError  # noqa: E402
from qeu_space.vocabulary import DefectKind, Finding, ParsedAnswer, parse_answer  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
BASE = ROOT / "models" / "inspection-vlm-base"
ADAPTER = ROOT / "models" / "inspection-vlm-short-pin"
RESULTS = ROOT / "benchmarks" / "RESULTS_short_pin.md"
KINDS = (DefectKind.SHORT, DefectKind.BENT, DefectKind.MISSING)


def only(kind: DefectKind | None, truth: list[list[Finding]], answers: list[str]):
    """Truth and parsed answers restricted to ``kind`` (``None``: every kind)."""
    parsed = [parse_answer(a) for a in answers]
    if kind is None:
        return truth, parsed
    keep_t = [[f for f in t if f.kind is kind] for t in truth]
    keep_a = [
        dataclasses.replace(p, findings=tuple(f for f in p.findings if f.kind is kind))
        if isinstance(p, ParsedAnswer)
        else p
        for p in parsed
    ]
    return keep_t, keep_a


def f1_with_interval(truth, answers) -> tuple[float | None, list[float] | None]:
    metrics = qa_metrics(truth, answers)
    return metrics.f1, qa_intervals(truth, answers).get("f1")


def test_gamma(image: Image.Image, gamma: float) -> Image.Image:
    """``image`` (a composite) with ``gamma`` applied to its test panel only."""
    arr = np.asarray(image.convert("RGB")).copy()
    x1, y1, x2, y2 = CompositeLayout(arr.shape[1]).crop_box("test")
    panel = arr[y1:y2, x1:x2].astype(np.float32) / 255.0
    arr[y1:y2, x1:x2] = np.clip(255.0 * panel**gamma + 0.5, 0, 255).astype(np.uint8)
    return Image.fromarray(arr)


def recall(truth: list[list[Finding]], answers: list[str], kind: DefectKind) -> tuple[int, int]:
    """``(found, present)``: findings of ``kind`` named at their position with that kind."""
    found = present = 0
    for t, a in zip(truth, answers, strict=True):
        p = parse_answer(a)
        said = (
            {(str(f.position), f.kind) for f in p.findings}
            if isinstance(p, ParsedAnswer)
            else set()
        )
        for f in t:
            if f.kind is kind:
                present += 1
                found += (str(f.position), kind) in said
    return found, present


def registers(family, image: Image.Image, framing: str | None) -> bool:
    """Whether the model's view of ``image`` can be made (the registration does not refuse it)."""
    try:
        family.view(image, framing)
    except NoConnectorError:
        return False
    return True


def shown(path: str) -> str:
    """A model path as the report shows it: relative to the repository when inside it."""
    resolved = Path(path).resolve()
    return str(resolved.relative_to(ROOT)) if resolved.is_relative_to(ROOT) else path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--dataset",
        required=True,
        nargs="+",
        help="qa rows built with --kinds ... short (several folders: scored together)",
    )
    parser.add_argument(
        "--splits", nargs="+", default=["test"], help="splits scored together (default test)"
    )
    parser.add_argument("--base", default=str(BASE))
    parser.add_argument("--adapter", default=str(ADAPTER))
    parser.add_argument("--limit", type=int, default=0, help="score only N rows (0: all)")
    parser.add_argument("--latency-samples", type=int, default=20)
    parser.add_argument(
        "--test-gamma",
        type=float,
        nargs="*",
        default=[],
        metavar="G",
        help="also score with gamma G on the test panel (e.g. 0.6 1.6): short-pin recall",
    )
    parser.add_argument("--write", action="store_true", help=f"write {RESULTS.name}")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(1)

    data = concatenate_datasets(
        [load_dataset(d, split=s) for d in args.dataset for s in args.splits]
    )
    loaded = load_model(args.base, args.adapter, device="cpu")
    family = family_for(loaded)
    framing = family.collate_options(loaded.model.config).get("framing")
    if args.limit:
        data = data.select(range(min(args.limit, len(data))))
    offered = len(data)
    data = keep_registered(data, family.view, framing, name="scored")  # refusals: said, left out
    rows = list(data)
    images = [row["image"] for row in rows]
    tuned = family.generate(loaded, images, batch_size=16)
    with loaded.base_only():
        base = family.generate(loaded, images, batch_size=16)
    truth = truths(rows)
    sample = images[: args.latency_samples]
    tuned_s = latency(loaded, sample, family, base=False)
    base_s = latency(loaded, sample, family, base=True)

    def fmt(value: float | None, interval: list[float] | None = None) -> str:
        if value is None:
            return "n/a"
        return f"{value:.3f}" + (f" [{interval[0]:.3f}, {interval[1]:.3f}]" if interval else "")

    counts = {k: sum(f.kind is k for t in truth for f in t) for k in KINDS}
    lines = [
        "# Short-pin adapter: per-kind findings F1, base vs adapter",
        "",
        "`OMP_NUM_THREADS=1 python -m benchmarks.bench_short_pin "
        f"--dataset {' '.join(args.dataset)} "
        f"--splits {' '.join(args.splits)}"
        + (
            f" --test-gamma {' '.join(f'{g:g}' for g in args.test_gamma)}"
            if args.test_gamma
            else ""
        )
        + f"` on {date.today()}, {platform.machine()}, 2 CPU cores "
        f"(shared with other work; load average {os.getloadavg()[0]:.1f} at the end), torch "
        "threads 1, CPU only.",
        "",
        f"{len(rows)} rows of `{'` + `'.join(args.dataset)}` ({offered - len(rows)} of {offered} "
        "left out: the registration refuses their composite, so no model reads them; "
        f"splits {', '.join(args.splits)}; "
        "seeds never used "
        f"for training or choosing a checkpoint): {counts[DefectKind.SHORT]} short, "
        f"{counts[DefectKind.BENT]} bent and {counts[DefectKind.MISSING]} missing pins. Base: "
        f"`{shown(args.base)}` inside `loaded.base_only()`; adapter: `{shown(args.adapter)}`; "
        "the same rows, "
        "95 % bootstrap intervals (rows resampled).",
        "",
        "| kind | base findings F1 | adapter findings F1 | adapter - base (paired 95 %) |",
        "|---|---:|---:|---:|",
    ]
    for kind in (*KINDS, None):
        t, a = only(kind, truth, tuned)
        _, b = only(kind, truth, base)
        tf, ti = f1_with_interval(t, a)
        bf, bi = f1_with_interval(t, b)
        low, high, _ = paired_bootstrap(t, a, b)
        name = "all kinds" if kind is None else kind.value
        lines.append(f"| {name} | {fmt(bf, bi)} | {fmt(tf, ti)} | [{low:+.3f}, {high:+.3f}] |")
    tuned_all = qa_metrics(truth, tuned)
    base_all = qa_metrics(truth, base)
    lines += [
        "",
        f"Verdict accuracy base {base_all.verdict_accuracy:.3f}, adapter "
        f"{tuned_all.verdict_accuracy:.3f}; unreadable answers base "
        f"{base_all.parse_failure_rate:.3f}, adapter {tuned_all.parse_failure_rate:.3f}; bend "
        f"direction accuracy base {fmt(base_all.direction_accuracy)}, adapter "
        f"{fmt(tuned_all.direction_accuracy)}.",
        "",
        f"Seconds per answer (one image at a time, median of {len(sample)}): base "
        f"{statistics.median(base_s):.3f}, adapter {statistics.median(tuned_s):.3f}.",
    ]
    if args.test_gamma:
        lines += [
            "",
            "Short-pin recall with a gamma curve on the test panel only (the reference as shot):",
            "",
            "| test gamma | base | adapter |",
            "|---:|---:|---:|",
        ]
        shots = [(1.0, base, tuned)]
        refusals = []
        for g in args.test_gamma:
            relit = [test_gamma(im, g) for im in images]
            read = [i for i, im in enumerate(relit) if registers(family, im, framing)]
            t_g, b_g = [""] * len(relit), [""] * len(relit)  # refused: no finding (a miss)
            kept = [relit[i] for i in read]
            for i, a in zip(read, family.generate(loaded, kept, batch_size=16), strict=True):
                t_g[i] = a
            with loaded.base_only():
                for i, a in zip(read, family.generate(loaded, kept, batch_size=16), strict=True):
                    b_g[i] = a
            shots.append((g, b_g, t_g))
            refusals.append(f"gamma {g:g}: {len(relit) - len(read)} refused")
        for g, b_g, t_g in shots:
            (bf, n), (tf, _) = (
                recall(truth, b_g, DefectKind.SHORT),
                recall(truth, t_g, DefectKind.SHORT),
            )
            lines.append(
                f"| {g:g} | {bf}/{n} ({bf / max(n, 1):.3f}) | {tf}/{n} ({tf / max(n, 1):.3f}) |"
            )
    if args.test_gamma:
        lines += [
            "",
            "Rows the registration refuses after the gamma count as misses ("
            + "; ".join(refusals)
            + ").",
        ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.write:
        args.results.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
