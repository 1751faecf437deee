"""``<OD>`` models on every look: findings F1 per look family and per defect kind, intervals.

Issue 19's figures for the Florence-2 ``<OD>`` base: on fresh seeds of the training looks, on
the held-out look families (``black-on-wood``, ``steep-tilt``: never trained on) and on the
classic look, per defect kind (short pin included), each with a 95 % bootstrap interval (rows
resampled). Several models answer the same rows in one run, the first as the baseline (the
shipped model before a change), and the difference of findings F1 to it is a paired bootstrap.

Every model answers through the project's path, the one the Space's ``/inspect`` calls
(``load_model`` + the Florence-2 family's ``generate`` under the ``<OD>`` grammar, composites
registered into the canonical frame); scoring is :mod:`benchmarks.bench_od`'s
(:func:`~benchmarks.bench_od.od_condition_scores`). A finding is a (pin, kind) pair; a row the
registration refuses, or an unreadable output, counts its true findings as missed.

Example (datasets of seeds no training or checkpoint choice used):
    python -m dataset_tools build --config od --num 150 --seed 95 --eval-fraction 1 \\
        --kinds bent missing short --looks train --out data/od-looks-fresh
    OMP_NUM_THREADS=1 python -m benchmarks.bench_od_looks \\
        --set "training looks=data/od-looks-fresh:test+train" \\
        --set "held-out looks=data/od-looks-fresh:test_held_out_looks" \\
        --model old=models/inspection-od-base --model new=runs/od-looks --write
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import argparse  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from datetime import date  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from benchmarks.bench_od import Scored, _truth_findings, latency, od_condition_scores  # noqa: E402
from qeu_space.evaluation.evaluate import category_names  # noqa: E402
from qeu_space.evaluation.metrics import BOOTSTRAP_DRAWS, LabelledBox, xywh_to_xyxy  # noqa: E402
from qeu_space.modeling.loading import load_model  # noqa: E402
from qeu_space.vocabulary import DefectKind, Finding  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "RESULTS_od_looks.md"
GOAL_HELD_OUT_F1 = 0.90  # issue 19: held-out looks, fresh seeds


@dataclass(frozen=True)
class RowSet:
    """Rows of one or more splits of an ``od`` dataset: composites, truth boxes, look names."""

    label: str
    source: str
    images: list[Image.Image]
    truths: list[list[LabelledBox]]
    looks: list[str]


def parse_set(spec: str, limit: int = 0) -> RowSet:
    """``LABEL=FOLDER:SPLIT[+SPLIT...][,FOLDER:SPLIT...]`` -> the rows of those splits (``limit``
    per split), in order."""
    from datasets import load_dataset

    label, sep, rest = spec.partition("=")
    parts = [p.rpartition(":") for p in rest.split(",")]
    if not (sep and label and all(folder and colon and splits for folder, colon, splits in parts)):
        raise SystemExit(f"--set {spec!r}: write LABEL=FOLDER:SPLIT[+SPLIT...][,FOLDER:SPLIT...]")
    images, truths, looks = [], [], []
    for folder, _, splits in parts:
        for split in splits.split("+"):
            table = load_dataset(folder, split=split)
            if limit:
                table = table.select(range(min(limit, len(table))))
            names = category_names(table)
            for row in table:
                images.append(row["image"].convert("RGB"))
                objects = row["objects"]
                cats = [c if isinstance(c, str) else names[int(c)] for c in objects["category"]]
                pairs = zip(cats, objects["bbox"], strict=True)
                truths.append([(c, xywh_to_xyxy(b)) for c, b in pairs])
                looks.append(str(row.get("look") or "classic"))
    return RowSet(label, rest, images, truths, looks)


# --------------------------------------------------------------------------- counting


def row_counts(
    truth: Sequence[Sequence[Finding]], found: Sequence[Sequence[Finding]], kind: str | None = None
) -> np.ndarray:
    """Per row ``(tp, fp, fn)`` of (pin, kind) findings, only those of ``kind`` when given."""
    out = np.zeros((len(truth), 3))
    for i, (t, f) in enumerate(zip(truth, found, strict=True)):
        true = {(x.position, x.kind.value) for x in t if kind is None or x.kind.value == kind}
        said = {(x.position, x.kind.value) for x in f if kind is None or x.kind.value == kind}
        out[i] = (len(true & said), len(said - true), len(true - said))
    return out


def position_counts(
    truth: Sequence[Sequence[Finding]], found: Sequence[Sequence[Finding]]
) -> np.ndarray:
    """Per row ``(tp, fp, fn)`` of defective pins whatever their kind: *where*, not *what*."""
    out = np.zeros((len(truth), 3))
    for i, (t, f) in enumerate(zip(truth, found, strict=True)):
        true, said = {x.position for x in t}, {x.position for x in f}
        out[i] = (len(true & said), len(said - true), len(true - said))
    return out


ERROR_SOURCES = ("right", "kind wrong", "neighbour pin", "missed", "unreadable", "false alarm")
"""Where each true finding went, and the findings said at pins with no defect."""


def error_sources(
    truth: Sequence[Sequence[Finding]],
    found: Sequence[Sequence[Finding]],
    unreadable: Sequence[bool],
) -> tuple[Counter, Counter]:
    """Where the errors come from: ``(sources, confusions)``.

    Each true finding is ``right`` (its pin and kind said), ``kind wrong`` (its pin said with
    another kind: the model saw the defect but named it wrong), ``neighbour pin`` (not said, but
    its kind said at a pin next to it that has no defect: a box on the wrong pin, a sign of
    registration or a bent tip read as its neighbour), ``missed`` (nothing said there) or
    ``unreadable`` (its row's output unreadable or its composite refused). A finding said at a pin
    with no defect that no true finding explains is a ``false alarm``. ``confusions`` counts
    ``(true kind, said kind)`` of the ``kind wrong`` findings.
    """
    sources: Counter = Counter({name: 0 for name in ERROR_SOURCES})
    confusions: Counter = Counter()
    for t, f, bad in zip(truth, found, unreadable, strict=True):
        if bad:
            sources["unreadable"] += len(t)
            continue
        true_at = {x.position: x.kind.value for x in t}
        said = {(x.position, x.kind.value) for x in f}
        said_at: dict = {}
        for position, kind in said:
            said_at.setdefault(position, set()).add(kind)
        spare = {(p, k) for p, k in said if p not in true_at}  # said where nothing is wrong
        for position, kind in true_at.items():
            if (position, kind) in said:
                sources["right"] += 1
            elif position in said_at:
                sources["kind wrong"] += 1
                confusions[(kind, sorted(said_at[position])[0])] += 1
            else:
                near = sorted((p, k) for p, k in spare if k == kind and _adjacent(p, position))
                if near:
                    spare.discard(near[0])
                    sources["neighbour pin"] += 1
                else:
                    sources["missed"] += 1
        sources["false alarm"] += len(spare)
    return sources, confusions


def _adjacent(a, b) -> bool:
    """Pins next to each other on the grid (diagonals included)."""
    return a != b and abs(a.row_index - b.row_index) <= 1 and abs(a.column - b.column) <= 1


def f1_of(counts: np.ndarray) -> float | None:
    """Micro F1 of summed ``(tp, fp, fn)``; ``None`` when nothing is true or said."""
    tp, fp, fn = counts.sum(axis=0)
    return None if tp + fp + fn == 0 else float(2 * tp / (2 * tp + fp + fn))


def recall_of(counts: np.ndarray) -> float | None:
    tp, _, fn = counts.sum(axis=0)
    return None if tp + fn == 0 else float(tp / (tp + fn))


def bootstrap(
    counts: np.ndarray, statistic=f1_of, *, draws: int = BOOTSTRAP_DRAWS, seed: int = 0
) -> tuple[float, float] | None:
    """95 % percentile interval of ``statistic`` over rows resampled with replacement."""
    if not len(counts):
        return None
    rng = np.random.default_rng(seed)
    values = [statistic(counts[rng.integers(0, len(counts), len(counts))]) for _ in range(draws)]
    values = [v for v in values if v is not None]
    if not values:
        return None
    low, high = np.percentile(values, [2.5, 97.5])
    return float(low), float(high)


def paired_f1_difference(
    new: np.ndarray, old: np.ndarray, *, draws: int = BOOTSTRAP_DRAWS, seed: int = 0
) -> tuple[float, float] | None:
    """95 % interval of F1(new) - F1(old) over the same resampled rows (pairs kept)."""
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(draws):
        idx = rng.integers(0, len(new), len(new))
        a, b = f1_of(new[idx]), f1_of(old[idx])
        if a is not None and b is not None:
            diffs.append(a - b)
    if not diffs:
        return None
    low, high = np.percentile(diffs, [2.5, 97.5])
    return float(low), float(high)


def cell(counts: np.ndarray, statistic=f1_of) -> str:
    value = statistic(counts)
    if value is None:
        return "n/a"
    ci = bootstrap(counts, statistic)
    return f"{value:.3f} [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else f"{value:.3f}"


# --------------------------------------------------------------------------- report


def look_family_lines(rows: RowSet, truth: list[list[Finding]], scored: dict) -> list[str]:
    """Findings F1 [95 % CI] of each model per look family of ``rows``."""
    looks = sorted(set(rows.looks))
    lines = [
        "",
        "Findings F1 [95 % CI] per look family (rows):",
        "",
        "| model | " + " | ".join(f"{look} ({rows.looks.count(look)})" for look in looks) + " |",
        "|---|" + "---:|" * len(looks),
    ]
    for name, s in scored.items():
        counts = row_counts(truth, s.found)
        cells = [cell(counts[[x == look for x in rows.looks]]) for look in looks]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def difference_lines(truth: list[list[Finding]], scored: dict, baseline: str) -> list[str]:
    """Each model's findings F1 minus ``baseline``'s: paired bootstrap interval over rows."""
    old = row_counts(truth, scored[baseline].found)
    lines: list[str] = []
    for name, s in scored.items():
        if name == baseline:
            continue
        diff = paired_f1_difference(row_counts(truth, s.found), old)
        if diff:
            lines += [
                "",
                f"{name} - {baseline}, findings F1, paired bootstrap over rows "
                f"({BOOTSTRAP_DRAWS} draws): 95 % interval [{diff[0]:+.3f}, {diff[1]:+.3f}].",
            ]
    return lines


def section_head(rows: RowSet, truth: list[list[Finding]], tail: list[str]) -> list[str]:
    """A row set's title (rows, true findings per kind) and the head of its per-model table:
    findings F1, F1 and recall per kind, then ``tail``'s columns."""
    kinds = [k.value for k in DefectKind]
    n_true = {k: sum(f.kind.value == k for t in truth for f in t) for k in kinds}
    columns = ["findings F1 [95 % CI]", *(f"{k} F1 [CI]" for k in kinds),
               *(f"{k} recall" for k in kinds), *tail]  # fmt: skip
    return [
        f"## {rows.label}: `{rows.source}` ({len(rows.images)} rows; true findings: "
        + ", ".join(f"{k} {n_true[k]}" for k in kinds)
        + ")",
        "",
        "| model | " + " | ".join(columns) + " |",
        "|---|" + "---:|" * len(columns),
    ]


def set_section(
    rows: RowSet, truth: list[list[Finding]], scored: dict[str, Scored], baseline: str
) -> list[str]:
    """One row set's tables: per model overall / per kind, per look family, difference."""
    kinds = [k.value for k in DefectKind]
    lines = section_head(rows, truth, ["position-only F1", "mAP@0.5", "exact match", "unreadable"])
    for name, s in scored.items():
        per_kind = [cell(row_counts(truth, s.found, k)) for k in kinds]
        recalls = [recall_of(row_counts(truth, s.found, k)) for k in kinds]
        m = s.metrics
        lines.append(
            f"| {name} | {cell(row_counts(truth, s.found))} | {' | '.join(per_kind)} | "
            + " | ".join("n/a" if r is None else f"{r:.3f}" for r in recalls)
            + f" | {_f(f1_of(position_counts(truth, s.found)))} | {_f(m.map_50)} | "
            f"{_f(m.findings_exact_match)} | {m.n_unreadable} |"
        )
    lines += look_family_lines(rows, truth, scored)
    lines += [
        "",
        "Where the true findings went (`error_sources`: kind wrong = pin found, kind misnamed; "
        "neighbour pin = said one pin off; unreadable = output unreadable or composite refused) "
        "and findings said at good pins:",
        "",
        "| model | " + " | ".join(ERROR_SOURCES) + " | kind confusions (true -> said) |",
        "|---|" + "---:|" * len(ERROR_SOURCES) + "---|",
    ]
    for name, s in scored.items():
        sources, confusions = error_sources(truth, s.found, s.unreadable)
        said = "; ".join(
            f"{a.split()[0]} -> {b.split()[0]} {n}" for (a, b), n in confusions.most_common()
        )
        lines.append(
            f"| {name} | " + " | ".join(str(sources[k]) for k in ERROR_SOURCES) + f" | {said} |"
        )
    return [*lines, *difference_lines(truth, scored, baseline), ""]


def wrong_rows(rows: RowSet, truth: list[list[Finding]], s: Scored, n: int, name: str) -> str:
    """The first ``n`` rows ``name`` got wrong: look family, truth, what was said, the output."""

    def text(findings: Sequence[Finding]) -> str:
        return ", ".join(f"{x.position} {x.kind.value}" for x in findings) or "-"

    lines = [f"# {name} on {rows.label}: wrong rows"]
    for i, (t, f) in enumerate(zip(truth, s.found, strict=True)):
        pairs = {(x.position, x.kind) for x in t}
        if not s.unreadable[i] and pairs == {(x.position, x.kind) for x in f}:
            continue
        flag = " UNREADABLE" if s.unreadable[i] else ""
        lines.append(f"{i:4d} {rows.looks[i]:15s} truth: {text(t)} | said: {text(f)}{flag}")
        lines.append(f"     {s.texts[i][:160]}")
        if len(lines) > 2 * n:
            break
    return "\n".join(lines)


def _f(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", action="append", required=True, dest="sets",
                        help="LABEL=FOLDER:SPLIT[+SPLIT...] (repeat)")  # fmt: skip
    parser.add_argument("--model", action="append", required=True, dest="models",
                        help="NAME=BASE[+ADAPTER] (repeat; the first is the baseline)")  # fmt: skip
    parser.add_argument("--limit", type=int, default=0, help="rows per split (0: all)")
    parser.add_argument("--latency-samples", type=int, default=20)
    parser.add_argument("--write", action="store_true", help=f"write {RESULTS.name}")
    parser.add_argument("--show-errors", type=int, default=0, metavar="N",
                        help="print N wrong rows of each set and model")  # fmt: skip
    args = parser.parse_args(argv)
    models = []
    for spec in args.models:
        name, sep, folder = spec.partition("=")
        if not (sep and name and folder):
            parser.error(f"--model {spec!r}: write NAME=BASE[+ADAPTER]")
        models.append((name, folder))
    torch.set_num_threads(1)
    started = time.time()
    sets = [parse_set(spec, args.limit) for spec in args.sets]
    truths = [
        [_truth_findings(list(b), i) for b, i in zip(rows.truths, rows.images, strict=True)]
        for rows in sets
    ]
    scored: list[dict[str, Scored]] = [{} for _ in sets]
    seconds: dict[str, list[float]] = {}
    for name, folder in models:
        base, _, adapter = folder.partition("+")
        loaded = load_model(base, adapter or None, device="cpu")
        probe = sets[-1].images[-(args.latency_samples + 1) :]
        seconds[name] = latency(loaded, probe, base=False)
        for rows, truth, out in zip(sets, truths, scored, strict=True):
            out[name] = od_condition_scores(loaded, rows.images, rows.truths, truth, draws=200)
        print(f"scored {name} ({time.time() - started:.0f} s)", file=sys.stderr)
    if args.show_errors:
        for rows, truth, out in zip(sets, truths, scored, strict=True):
            for name, s in out.items():
                print(wrong_rows(rows, truth, s, args.show_errors, name), file=sys.stderr)
    baseline = models[0][0]
    command = "OMP_NUM_THREADS=1 python -m benchmarks.bench_od_looks " + " ".join(
        [f'--set "{s}"' for s in args.sets] + [f"--model {m}" for m in args.models]
    )
    lines = [
        "# `<OD>` models on every look: per look family and per defect kind",
        "",
        f"`{command}` on {date.today()}, {platform.machine()}, 2 CPU cores shared with other "
        "work, torch threads 1, CPU only. Baseline: "
        f"`{baseline}` ({models[0][1]}), in the same run on the same rows. Findings are "
        "(pin, kind) pairs; 95 % bootstrap intervals, rows resampled "
        f"({BOOTSTRAP_DRAWS} draws). Held-out look families (`black-on-wood`, `steep-tilt`) "
        "are never trained on.",
        "",
        "Seconds per answer (one composite at a time, one core, registration included, median / "
        "max of "
        f"{args.latency_samples}): "
        + "; ".join(f"{n} {statistics.median(s):.3f} / {max(s):.3f} s" for n, s in seconds.items())
        + ".",
        "",
    ]
    for rows, truth, out in zip(sets, truths, scored, strict=True):
        lines += set_section(rows, truth, out, baseline)
    held = [i for i, rows in enumerate(sets) if "held-out" in rows.label]
    for i in held:
        for name, s in scored[i].items():
            f1 = f1_of(row_counts(truths[i], s.found))
            word = "met" if f1 is not None and f1 >= GOAL_HELD_OUT_F1 else "NOT met"
            lines.append(
                f"Goal (issue 19), {name} on {sets[i].label}: findings F1 >= "
                f"{GOAL_HELD_OUT_F1:.2f} -> {_f(f1)} ({word})."
            )
    lines += ["", f"Run time {time.time() - started:.0f} s."]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.write:
        RESULTS.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
