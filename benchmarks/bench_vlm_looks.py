"""Chat VLMs on every look: findings F1 per look family and per defect kind, with intervals.

Issue 19's figures for the chat VLM base: on fresh seeds of the training looks, on the held-out
look families (``black-on-wood``, ``steep-tilt``: never trained on) and on the classic latched
rows the base card has always reported, per defect kind (short pin included), each with a 95 %
bootstrap interval (rows resampled). Several models answer the same rows in one run, the first
as the baseline (the shipped model before a change), and the difference of findings F1 to it is a
paired bootstrap. The counting is :mod:`benchmarks.bench_od_looks`'s, so the chat VLM's and the
``<OD>`` model's figures on the looks are read the same way.

Every model answers through the project's path, the one the Space's ``/inspect`` calls
(``load_model`` + the chat-VLM family's ``generate`` under the answer grammar, composites
registered into the canonical frame). A finding is a (pin, kind) pair; a row the registration
refuses, or an answer the grammar does not accept (cut short), counts its true findings as missed
and is counted as unreadable.

``--test-gamma 0.6 1.6`` also answers every set with short pins under a gamma curve on the test
panel only (the reference as shot) and reports each model's short-pin recall there beside its
recall as shot: a model that learned "short = dimmer" loses its short pins (issue 19: >= 0.85).

Example (datasets of seeds no training or checkpoint choice used):
    python -m dataset_tools build --config qa --num 200 --seed 9610 --eval-fraction 0.01 \\
        --kinds bent missing short --looks train --train-positions all --out data/qa-looks-fresh
    OMP_NUM_THREADS=1 python -m benchmarks.bench_vlm_looks \\
        --set "training looks=data/qa-looks-fresh:train" \\
        --model old=models/inspection-vlm-base --model new=runs/vlm-looks-qa --write
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import argparse  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from datetime import date  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from benchmarks.bench_od_looks import (  # noqa: E402
    cell,
    difference_lines,
    f1_of,
    look_family_lines,
    position_counts,
    recall_of,
    row_counts,
    section_head,
)
from benchmarks.bench_short_pin import test_gamma  # noqa: E402
from qeu_space.evaluation.metrics import BOOTSTRAP_DRAWS  # noqa: E402
from qeu_space.modeling.answer_grammar import AnswerGrammar  # noqa: E402
from qeu_space.modeling.families import chat_vlm  # noqa: E402
from qeu_space.modeling.loading import load_model  # noqa: E402
from qeu_space.views.framing import framing_of  # noqa: E402
from qeu_space.views.no_connector import NoConnectorError  # noqa: E402
from qeu_space.views.registration import remember_at_least  # noqa: E402
from qeu_space.vocabulary import DefectKind, Finding, parse_answer  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "RESULTS_vlm_looks.md"
GOAL_HELD_OUT_F1 = 0.90  # issue 19: held-out looks, fresh seeds


@dataclass(frozen=True)
class RowSet:
    """Rows of one or more splits of a ``qa`` dataset: composites, truth findings, look names."""

    label: str
    source: str
    images: list[Image.Image]
    truths: list[list[Finding]]
    looks: list[str]


@dataclass(frozen=True)
class Answered:
    """One model's answers on a row set: the text, the findings read from it, the unreadable."""

    answers: list[str]
    found: list[list[Finding]]
    unreadable: int
    seconds: float


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
            for row in table:
                images.append(row["image"].convert("RGB"))
                truths.append(
                    [Finding(f["position"], f["kind"], f["direction"]) for f in row["findings"]]
                )
                looks.append(str(row.get("look") or "classic"))
    return RowSet(label, rest, images, truths, looks)


def answer(loaded, images: Sequence[Image.Image], batch_size: int = 8) -> Answered:
    """The model's answers under the grammar; a refused composite answers ``""`` (unreadable)."""
    framing = framing_of(loaded.model.config)
    readable = []
    for image in images:
        try:
            chat_vlm.view(image, framing)
            readable.append(True)
        except NoConnectorError:
            readable.append(False)
    start = time.perf_counter()
    said = chat_vlm.generate(
        loaded, [i for i, ok in zip(images, readable, strict=True) if ok], batch_size=batch_size
    )
    seconds = time.perf_counter() - start
    it = iter(said)
    return read_answers([next(it) if ok else "" for ok in readable], seconds)


def read_answers(answers: Sequence[str], seconds: float = 0.0) -> Answered:
    """Findings of each answer; one the answer grammar does not accept (cut short, refused) is
    unreadable and says nothing, as the Space shows it."""
    grammar = AnswerGrammar()
    ok = [grammar.accepts(a) for a in answers]
    found = [
        list(parse_answer(a).findings) if good else [] for a, good in zip(answers, ok, strict=True)
    ]
    return Answered(list(answers), found, ok.count(False), seconds)


def set_section(rows: RowSet, scored: dict[str, Answered], baseline: str) -> list[str]:
    """One row set's tables: per model overall / per kind, per look family, difference."""
    truth = rows.truths
    kinds = [k.value for k in DefectKind]
    tail = ["position-only F1", "verdict accuracy", "exact match", "unreadable", "s/answer"]
    lines = section_head(rows, truth, tail)
    for name, s in scored.items():
        per_kind = [cell(row_counts(truth, s.found, k)) for k in kinds]
        recalls = [recall_of(row_counts(truth, s.found, k)) for k in kinds]
        verdict = np.mean([bool(t) == bool(f) for t, f in zip(truth, s.found, strict=True)])
        exact = np.mean(
            [
                {(x.position, x.kind, x.direction) for x in t}
                == {(x.position, x.kind, x.direction) for x in f}
                for t, f in zip(truth, s.found, strict=True)
            ]
        )
        lines.append(
            f"| {name} | {cell(row_counts(truth, s.found))} | {' | '.join(per_kind)} | "
            + " | ".join("n/a" if r is None else f"{r:.3f}" for r in recalls)
            + f" | {_f(f1_of(position_counts(truth, s.found)))} | {verdict:.3f} | {exact:.3f} | "
            f"{s.unreadable} | {s.seconds / max(len(truth), 1):.3f} |"
        )
    lines += look_family_lines(rows, truth, scored)
    return [*lines, *difference_lines(truth, scored, baseline), ""]


def gamma_lines(
    rows: RowSet, as_shot: dict[str, Answered], relit: dict[float, dict[str, Answered]]
) -> list[str]:
    """Short-pin recall and findings F1 of each model with a gamma curve on the test panel only
    (the reference as shot), beside its figures as shot: a model that learned "short = dimmer"
    loses its short pins there. A row the registration refuses after the gamma is a miss."""
    gammas = sorted(relit)
    truth = rows.truths
    short = DefectKind.SHORT.value
    present = int(row_counts(truth, [[] for _ in truth], short)[:, 2].sum())
    head = ["as shot", *(f"gamma {g:g}" for g in gammas)]
    lines = [
        f"Short-pin recall [95 % CI] ({present} short pins) and findings F1 with a gamma curve on "
        "the test panel only (the reference as shot; `--test-gamma`):",
        "",
        "| model | "
        + " | ".join(f"short recall, {h}" for h in head)
        + " | "
        + " | ".join(f"findings F1, {h}" for h in head)
        + " | unreadable under gamma |",
        "|---|" + "---:|" * (2 * len(head) + 1),
    ]
    for name, shot in as_shot.items():
        answered = [shot, *(relit[g][name] for g in gammas)]
        recalls = [cell(row_counts(truth, a.found, short), recall_of) for a in answered]
        f1s = [_f(f1_of(row_counts(truth, a.found))) for a in answered]
        unreadable = " / ".join(str(relit[g][name].unreadable) for g in gammas)
        lines.append(f"| {name} | {' | '.join(recalls)} | {' | '.join(f1s)} | {unreadable} |")
    return [*lines, ""]


def _f(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", action="append", required=True, dest="sets",
                        help="LABEL=FOLDER:SPLIT[+SPLIT...] (repeat)")  # fmt: skip
    parser.add_argument("--model", action="append", required=True, dest="models",
                        help="NAME=BASE[+ADAPTER] (repeat; the first is the baseline)")  # fmt: skip
    parser.add_argument("--limit", type=int, default=0, help="rows per split (0: all)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--test-gamma", type=float, nargs="*", default=[], metavar="G",
                        help="also answer each set with gamma G on the test panel (e.g. 0.6 "
                        "1.6): short-pin recall under it (sets with short pins)")  # fmt: skip
    parser.add_argument("--write", action="store_true", help=f"write {RESULTS.name}")
    parser.add_argument("--out", type=Path, default=RESULTS, help="report to write with --write")
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
    # every model reads the same composites: register each once (two panels a composite)
    shorts = [any(f.kind is DefectKind.SHORT for t in rows.truths for f in t) for rows in sets]
    relit_images = {
        (i, g): [test_gamma(image, g) for image in rows.images]
        for i, rows in enumerate(sets)
        if shorts[i]
        for g in args.test_gamma
    }
    remember_at_least(
        2 * (sum(len(rows.images) for rows in sets) + sum(map(len, relit_images.values())))
    )
    scored: list[dict[str, Answered]] = [{} for _ in sets]
    relit: list[dict[float, dict[str, Answered]]] = [
        {g: {} for g in args.test_gamma} if shorts[i] else {} for i in range(len(sets))
    ]
    for name, folder in models:
        base, _, adapter = folder.partition("+")
        loaded = load_model(base, adapter or None, device="cpu", dtype=torch.float32)
        for rows, out in zip(sets, scored, strict=True):
            out[name] = answer(loaded, rows.images, args.batch_size)
            f1 = f1_of(row_counts(rows.truths, out[name].found))
            print(f"{name} on {rows.label}: F1 {_f(f1)} ({time.time() - started:.0f} s)",
                  file=sys.stderr)  # fmt: skip
        for (i, g), images in relit_images.items():
            relit[i][g][name] = answer(loaded, images, args.batch_size)
    baseline = models[0][0]
    command = "OMP_NUM_THREADS=1 python -m benchmarks.bench_vlm_looks " + " ".join(
        [f'--set "{s}"' for s in args.sets]
        + [f"--model {m}" for m in args.models]
        + (
            [f"--test-gamma {' '.join(f'{g:g}' for g in args.test_gamma)}"]
            if args.test_gamma
            else []
        )
    )
    lines = [
        "# Chat VLMs on every look: per look family and per defect kind",
        "",
        f"`{command}` on {date.today()}, {platform.machine()}, 2 CPU cores shared with other "
        "work, torch threads 1, CPU only. Baseline: "
        f"`{baseline}` ({models[0][1]}), in the same run on the same rows. Findings are "
        "(pin, kind) pairs (bend direction not required; exact match requires it); 95 % "
        f"bootstrap intervals, rows resampled ({BOOTSTRAP_DRAWS} draws). Held-out look families "
        "(`black-on-wood`, `steep-tilt`) are never trained on. s/answer: generation in batches "
        f"of {args.batch_size}, registration included.",
        "",
    ]
    for rows, out, lit in zip(sets, scored, relit, strict=True):
        lines += set_section(rows, out, baseline)
        if lit:
            lines += gamma_lines(rows, out, lit)
    for i, rows in enumerate(sets):
        if "held-out" not in rows.label:
            continue
        for name, s in scored[i].items():
            f1 = f1_of(row_counts(rows.truths, s.found))
            word = "met" if f1 is not None and f1 >= GOAL_HELD_OUT_F1 else "NOT met"
            lines.append(
                f"Goal (issue 19), {name} on {rows.label}: findings F1 >= "
                f"{GOAL_HELD_OUT_F1:.2f} -> {_f(f1)} ({word})."
            )
    lines += ["", f"Run time {time.time() - started:.0f} s."]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.write:
        args.out.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
