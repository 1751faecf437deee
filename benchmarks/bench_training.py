"""Training speed and peak memory on the tiny models (CPU), so that regressions show.

Each case runs in its own process (peak RSS from ``resource.getrusage`` is per process, and torch
allocates outside Python's ``tracemalloc``), on one thread:

- ``loop`` (baseline): the seeds' way, a hand-written loop of collate + forward + backward + AdamW
  on a LoRA model, no ``Trainer``;
- ``trainer-lora``: the project's path, :func:`qeu_space.training.train` (``Trainer``, collator,
  logging, no validation inside the measured steps);
- ``trainer-full``: the same with ``--full-finetune``;
- ``validate``: generation + scoring of validation rows (what each validation adds), samples/s.

Run: ``python benchmarks/bench_training.py [--steps 20] [--write]`` (``--write`` updates
``benchmarks/RESULTS_training.md``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("NUMBA_NUM_THREADS", "1")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script from anywhere: the project's packages first
RESULTS = REPO / "benchmarks" / "RESULTS_training.md"
FAMILIES = ("florence2", "chat_vlm")
MODES = ("loop", "trainer-lora", "trainer-full", "validate")
TASK = {"florence2": "od", "chat_vlm": "qa"}
BATCH = 4
WARMUP = 2  # optimizer steps left out of the timing (first-call allocations)


def _peak_mb() -> float:
    """Peak RSS of this process image (``VmHWM``; ``ru_maxrss`` survives ``exec`` on Linux, so a
    child would report its parent's peak)."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _step_timer(warmup: int):
    """A ``TrainerCallback`` timing the optimizer steps after ``warmup`` (as the loop does)."""
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        start: float | None = None
        end: float | None = None

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == warmup:
                self.start = time.perf_counter()
            self.end = time.perf_counter()

    return StepTimer()


def _prepare(root: Path) -> None:
    """Tiny models and ``dataset_tools`` folders, made once and shared by every case."""
    import datasets

    from dataset_tools.builders import BuildConfig
    from dataset_tools.save import build_to_folder
    from qeu_space.modeling.tiny_models import make_tiny_florence2, make_tiny_idefics3

    datasets.disable_progress_bars()
    make_tiny_florence2(root / "florence2")
    make_tiny_idefics3(root / "chat_vlm")
    for task in ("qa", "od"):
        build_to_folder(BuildConfig(task, num=96, seed=0, size=224), root / task, command="bench")


def run_case(root: Path, family: str, mode: str, steps: int) -> dict:
    """One measurement in this process; returns its figures."""
    import torch

    torch.set_num_threads(1)
    from qeu_space.modeling.families import FAMILIES as REGISTRY
    from qeu_space.training import AdapterOptions, TrainConfig, train

    model_dir, data_dir = root / family, root / TASK[family]
    full = mode.endswith("full")
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        adapter = AdapterOptions(rank=16, alpha=32, scope="all", full_finetune=full)
        config = TrainConfig(
            TASK[family], str(model_dir), str(data_dir), str(Path(tmp) / "out"),
            adapter=adapter, max_steps=steps, batch_size=BATCH, eval_samples=0,
            logging_steps=steps, learning_rate=1e-3,
        )  # fmt: skip
        if mode.startswith("trainer"):
            timer = _step_timer(WARMUP)
            result = train(replace(config, max_steps=steps + WARMUP), callbacks=[timer])
            trainable = sum(p.numel() for p in result.model.parameters() if p.requires_grad)
            total = sum(p.numel() for p in result.model.parameters())
            return {
                "steps_per_s": steps / (timer.end - timer.start),
                "peak_mb": _peak_mb(),
                "trainable": trainable,
                "total": total,
            }
        return _loop(family, mode, config, REGISTRY[family], steps)


def _loop(family: str, mode: str, config, module, steps: int) -> dict:
    import datasets
    import torch

    from qeu_space.modeling.loading import load_model
    from qeu_space.training.run import _trainable

    loaded = load_model(config.base, device="cpu", dtype=torch.float32)
    rows = datasets.load_dataset(
        config.dataset, split="validation" if mode == "validate" else "train"
    )
    if mode == "validate":
        from qeu_space.evaluation.evaluate import category_names
        from qeu_space.training import validation

        n = min(len(rows), 16)
        subset = list(rows.select(range(n)))
        start = time.perf_counter()
        texts = module.generate(loaded, [r["image"] for r in subset], max_new_tokens=32)
        names = category_names(rows) if config.task == "od" else None
        pairs = validation.counts(config.task, module, subset, texts, names)
        validation.score(config.task, pairs)
        return {"samples_per_s": n / (time.perf_counter() - start), "peak_mb": _peak_mb()}
    model = _trainable(loaded.model, config, module)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    batches = [rows.select(range(i * BATCH, (i + 1) * BATCH)) for i in range(len(rows) // BATCH)]
    start = 0.0
    for step in range(steps + WARMUP):
        if step == WARMUP:
            start = time.perf_counter()
        batch = module.collate(loaded.processor, list(batches[step % len(batches)]))
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return {"steps_per_s": steps / (time.perf_counter() - start), "peak_mb": _peak_mb()}


def _spawn(root: Path, family: str, mode: str, steps: int) -> dict:
    cmd = [sys.executable, __file__, "--case", str(root), family, mode, "--steps", str(steps)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{family}/{mode} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _table(results: dict[tuple[str, str], dict]) -> str:
    lines = [
        "| model | case | steps/s | samples/s | peak RSS (MB) | trainable / total params |",
        "|---|---|---|---|---|---|",
    ]
    for (family, mode), r in results.items():
        steps = f"{r['steps_per_s']:.2f}" if "steps_per_s" in r else ""
        samples = f"{r['samples_per_s']:.1f}" if "samples_per_s" in r else ""
        if "steps_per_s" in r:
            samples = f"{r['steps_per_s'] * BATCH:.1f}"
        params = f"{r['trainable']:,} / {r['total']:,}" if "trainable" in r else ""
        lines.append(f"| {family} | {mode} | {steps} | {samples} | {r['peak_mb']:.0f} | {params} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="measured optimizer steps")
    parser.add_argument("--case", nargs=3, help=argparse.SUPPRESS)  # ROOT FAMILY MODE
    parser.add_argument("--write", action="store_true", help="update RESULTS_training.md")
    args = parser.parse_args()
    if args.case:
        root, family, mode = args.case
        print(json.dumps(run_case(Path(root), family, mode, args.steps)))
        return 0
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        _prepare(Path(tmp))
        for family in FAMILIES:
            for mode in MODES:
                results[(family, mode)] = _spawn(Path(tmp), family, mode, args.steps)
                print(family, mode, json.dumps(results[(family, mode)]), flush=True)
    table = _table(results)
    print(table)
    for family in FAMILIES:
        base, ours = results[(family, "loop")], results[(family, "trainer-lora")]
        print(
            f"{family}: Trainer path {ours['steps_per_s']:.2f} steps/s vs hand-written loop "
            f"(baseline) {base['steps_per_s']:.2f} steps/s "
            f"({ours['steps_per_s'] / base['steps_per_s']:.0%} of baseline)"
        )
    if args.write:
        import torch

        command = f"OMP_NUM_THREADS=1 python benchmarks/bench_training.py --steps {args.steps}"
        RESULTS.write_text(
            "# Training benchmark (tiny models, CPU)\n\n"
            f"Command: `{command} --write`\n\n"
            f"Machine: {platform.machine()}, {os.cpu_count()} CPUs (shared), one torch thread; "
            f"Python {platform.python_version()}, torch {torch.__version__}. Batch {BATCH} rows of "
            "224 px composites from `dataset_tools` (96 train rows), LoRA r=16 on all scopes "
            "unless `trainer-full`; the first two steps are not timed. `loop` is the baseline "
            "(hand-written loop, no Trainer); "
            "`validate` is greedy generation (32 new tokens) + scoring per validation row. "
            "Peak RSS is the whole process (Python, torch, transformers included).\n\n"
            f"{table}\n",
            encoding="utf-8",
        )
        print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
