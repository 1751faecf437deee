"""How fast evaluation runs: samples/s of ``qeu_space.evaluation`` on tiny models, and metrics/s.

Prints, in one run, and writes to ``benchmarks/RESULTS_evaluate.md``:

* evaluation samples/s on CPU (one thread) for the tiny Idefics3 (``qa``) and tiny Florence-2
  (``od``) with a LoRA adapter: the ``adapter`` run and the ``base`` run under
  ``disable_adapter()``, against the baseline of the family's ``generate`` called directly on the
  same images (no evaluation code around it), plus the process's peak memory;
* metric speed on synthetic predictions: ``qa_metrics`` (parse + sklearn) per sample against the
  baseline of ``parse_answer`` alone, and ``od_metrics`` (faster-coco-eval) per image against
  ``parse_bbox_str`` alone.

Random-weight models answer nonsense, so only speeds mean something here, not scores.

Usage:
    python -m benchmarks.bench_evaluate [--samples 16] [--max-new-tokens 32] [--metric-samples 2000]
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import resource
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import torch  # noqa: E402
from peft import LoraConfig, get_peft_model  # noqa: E402
from transformers import AutoModelForImageTextToText  # noqa: E402

from dataset_tools.builders import BuildConfig  # noqa: E402
from dataset_tools.save import build_to_folder  # noqa: E402
from qeu_space.evaluation.evaluate import evaluate, load_split  # noqa: E402
from qeu_space.evaluation.metrics import od_metrics, qa_metrics  # noqa: E402
from qeu_space.modeling.families import family_for  # noqa: E402
from qeu_space.modeling.loading import load_model  # noqa: E402
from qeu_space.modeling.tiny_models import make_tiny_florence2, make_tiny_idefics3  # noqa: E402
from qeu_space.vocabulary import (  # noqa: E402
    ALL_POSITIONS,
    DefectKind,
    Direction,
    Finding,
    format_answer,
    format_bbox_str,
    parse_answer,
    parse_bbox_str,
)

RESULTS = Path(__file__).with_name("RESULTS_evaluate.md")
MODELS = {"qa": make_tiny_idefics3, "od": make_tiny_florence2}


def _adapter(base: Path, out: Path) -> Path:
    model = AutoModelForImageTextToText.from_pretrained(base)
    regex = family_for(model).lora_target_modules("language")
    peft_model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules=regex))
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.02)
    peft_model.save_pretrained(out)
    return out


def bench_evaluation(root: Path, samples: int, max_new_tokens: int) -> list[tuple[str, ...]]:
    rows = []
    for task, make in MODELS.items():
        data = root / f"data-{task}"
        build_to_folder(BuildConfig(config=task, num=samples, eval_fraction=1.0), data, command="")
        table = load_split(str(data), task, "test").select(range(samples))
        base = make(root / f"{task}-base")
        loaded = load_model(base, _adapter(base, root / f"{task}-lora"), device="cpu")
        family = family_for(loaded)
        images = [image.convert("RGB") for image in table["image"]]
        family.generate(loaded, images[:2], max_new_tokens=max_new_tokens)  # warm-up
        with loaded.base_only():
            start = time.perf_counter()
            family.generate(loaded, images, max_new_tokens=max_new_tokens)
            direct = samples / (time.perf_counter() - start)
        report = evaluate(
            loaded, table, task=task, batch_size=8, max_new_tokens=max_new_tokens, progress=False
        )
        base_run, adapter_run = report.run("base"), report.run("adapter")
        rows.append(
            (
                task,
                f"tiny {loaded.family}",
                f"{direct:.2f}",
                f"{base_run.samples_per_s:.2f}",
                f"{adapter_run.samples_per_s:.2f}",
            )
        )
        print(
            f"{task}: generate() alone {direct:.2f} samples/s (baseline); evaluate base "
            f"{base_run.samples_per_s:.2f}, adapter {adapter_run.samples_per_s:.2f} samples/s"
        )
    return rows


def _synthetic(n: int, seed: int = 0) -> tuple[list[list[Finding]], list[str], list[str]]:
    """Truths with 0-3 findings (boxed), answers that get about half of them right."""
    rng = random.Random(seed)
    truths, answers, bbox_strs = [], [], []
    for _ in range(n):
        truth = []
        for position in rng.sample(ALL_POSITIONS, rng.randint(0, 3)):
            kind = rng.choice(list(DefectKind))
            direction = rng.choice(list(Direction)) if kind.has_direction else None
            x, y = 20 + 40 * position.column, 250 + 40 * position.row_index
            truth.append(Finding(position, kind, direction, box=(x, y, x + 20, y + 20)))
        said = [f for f in truth if rng.random() < 0.5]
        if rng.random() < 0.3:
            said.append(Finding(rng.choice(ALL_POSITIONS), "missing pin", box=(5, 5, 25, 25)))
        said = list({(f.position, f.kind): f for f in said}.values())
        truths.append(truth)
        answers.append(format_answer(said))
        bbox_strs.append(format_bbox_str(said, (448, 448)))
    return truths, answers, bbox_strs


def _rate(n: int, fn, repeats: int = 3) -> float:
    """Items per second, best of ``repeats`` (the least disturbed by other work on the machine)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return n / best


def bench_metrics(n: int) -> list[tuple[str, ...]]:
    truths, answers, bbox_strs = _synthetic(n)
    boxes = [[(f.kind.value, f.box) for f in t] for t in truths]
    qa_metrics(truths[:10], answers[:10])  # imports and first-call costs out of the timing
    od_metrics(boxes[:10], [parse_bbox_str(s, (448, 448)) for s in bbox_strs[:10]])
    parse_only = _rate(n, lambda: [parse_answer(a) for a in answers])
    qa_rate = _rate(n, lambda: qa_metrics(truths, answers, references=answers))
    bbox_only = _rate(n, lambda: [parse_bbox_str(s, (448, 448)) for s in bbox_strs])
    od_rate = _rate(
        n, lambda: od_metrics(boxes, [parse_bbox_str(s, (448, 448)) for s in bbox_strs])
    )
    print(f"qa_metrics: {qa_rate:,.0f} samples/s (parse_answer alone: {parse_only:,.0f}/s)")
    print(f"od_metrics: {od_rate:,.0f} images/s (parse_bbox_str alone: {bbox_only:,.0f}/s)")
    return [
        (
            "qa_metrics (parse + sklearn + BLEU/ROUGE if installed)",
            f"{qa_rate:,.0f}",
            "parse_answer alone",
            f"{parse_only:,.0f}",
        ),
        (
            "od_metrics (parse + faster-coco-eval)",
            f"{od_rate:,.0f}",
            "parse_bbox_str alone",
            f"{bbox_only:,.0f}",
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=16, help="test rows per task")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--metric-samples", type=int, default=2000)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="bench-evaluate-") as tmp:
        eval_rows = bench_evaluation(Path(tmp), args.samples, args.max_new_tokens)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak resident memory: {peak_mib:.0f} MiB")
    metric_rows = bench_metrics(args.metric_samples)

    command = "python -m benchmarks.bench_evaluate " + " ".join(argv or sys.argv[1:])
    lines = [
        "# Evaluation speed",
        "",
        f"`{command.strip()}` on {date.today()}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPU cores (shared), torch threads 1, CPU only. The machine is shared "
        "with other work: repeated runs differ by up to about a third.",
        "",
        f"## Evaluation ({args.samples} test composites of 448 px, max_new_tokens="
        f"{args.max_new_tokens}, batch 8)",
        "",
        "Baseline: the family's `generate` called directly on the same images (base weights),",
        "already decoded. `evaluate` also decodes each PNG from the dataset (about 6 ms per",
        "448 px composite), which is most of the gap for models this small; a real model's",
        "generation dwarfs it. The adapter row adds the LoRA matmuls of every targeted layer.",
        "",
        "| task | model | generate() alone, samples/s | evaluate base, samples/s "
        "| evaluate adapter, samples/s |",
        "|---|---|---:|---:|---:|",
        *("| " + " | ".join(r) + " |" for r in eval_rows),
        "",
        f"Peak resident memory of the run: {peak_mib:.0f} MiB.",
        "",
        f"## Metrics ({args.metric_samples} synthetic samples, 0-3 findings each)",
        "",
        "| metric | per second | baseline | per second |",
        "|---|---:|---|---:|",
        *("| " + " | ".join(r) + " |" for r in metric_rows),
        "",
    ]
    RESULTS.write_text("\n".join(lines), encoding="utf-8")
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
