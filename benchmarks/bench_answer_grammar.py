"""What the answer grammar costs: seconds per answer with and without it, on one CPU core.

For each model (the embedded ``models/inspection-vlm-base``, ``models/inspection-od-base``, and
tiny random-weight Idefics3 / Florence-2 built here), the same composites are answered one at a
time (what a Space user waits for) unconstrained (``grammar=False``: the baseline of this run)
and under the grammar (the default), interleaved so that a busy machine slows both alike. The
first constrained call also builds the tokenizer's tables: reported apart. The share of answers
that are canonical (chat VLMs) or readable (``<OD>``) is given for both.

Example:
    OMP_NUM_THREADS=1 python -m benchmarks.bench_answer_grammar --n 12 --write
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from datetime import date
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

from dataset_tools.builders import BuildConfig, build_dataset  # noqa: E402
from qeu_space.modeling import answer_grammar  # noqa: E402
from qeu_space.modeling.families import family_for, florence2  # noqa: E402
from qeu_space.modeling.loading import load_model  # noqa: E402
from qeu_space.modeling.tiny_models import make_tiny_florence2, make_tiny_idefics3  # noqa: E402
from qeu_space.ui.reading import canonical_findings  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "RESULTS_answer_grammar.md"


def well_formed(family, text: str) -> bool:
    if family is florence2:
        return florence2.readable(text)
    return canonical_findings(text) is not None


def measure(name: str, path: Path, images: list, max_new_tokens: int) -> dict:
    loaded = load_model(path, device="cpu")
    family = family_for(loaded.model)
    tokenizer = loaded.processor.tokenizer
    family.generate(loaded, images[:1], max_new_tokens=max_new_tokens, grammar=False)  # warm-up
    start = time.perf_counter()
    build = (
        answer_grammar.od_constraint if family is florence2 else answer_grammar.answer_constraint
    )
    build(tokenizer)
    tables = time.perf_counter() - start
    seconds: dict[tuple[bool, int], list[float]] = {}
    ok = {False: 0, True: 0}
    for repeat in (0, 1):  # 0: states met for the first time (cold), 1: all cached (warm)
        for image in images:
            for grammar in (False, True):
                start = time.perf_counter()
                text = family.generate(
                    loaded, [image], max_new_tokens=max_new_tokens, grammar=grammar
                )[0]
                seconds.setdefault((grammar, repeat), []).append(time.perf_counter() - start)
                ok[grammar] += repeat == 0 and well_formed(family, text)
    row = {
        "model": name,
        "vocab": len(tokenizer),
        "tables_s": tables,
        "free_s": statistics.median(seconds[False, 1]),
        "grammar_s": statistics.median(seconds[True, 1]),
        "cold_free_s": statistics.median(seconds[False, 0]),
        "cold_grammar_s": statistics.median(seconds[True, 0]),
        "ok_free": ok[False],
        "ok_grammar": ok[True],
        "n": len(images),
    }
    row["overhead"] = row["grammar_s"] / row["free_s"] - 1
    print(
        f"{name}: {row['free_s'] * 1000:.0f} ms/answer free (baseline), "
        f"{row['grammar_s'] * 1000:.0f} ms under the grammar ({row['overhead']:+.0%}); "
        f"first pass {row['cold_free_s'] * 1000:.0f} / {row['cold_grammar_s'] * 1000:.0f} ms; "
        f"tables {tables:.2f} s once; well formed {ok[False]}/{len(images)} free, "
        f"{ok[True]}/{len(images)} under the grammar",
        flush=True,
    )
    return row


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=12, help="composites per model")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--write", action="store_true", help=f"write {RESULTS.name}")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rows = build_dataset(BuildConfig("qa", num=args.n, seed=9191, size=448, eval_fraction=1.0))
    images = [image.convert("RGB") for image in rows["test"]["image"]][: args.n]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        models = {
            "tiny Idefics3 (random)": make_tiny_idefics3(Path(tmp) / "vlm"),
            "tiny Florence-2 (random)": make_tiny_florence2(Path(tmp) / "od", seed=5),
            "models/inspection-vlm-base": ROOT / "models" / "inspection-vlm-base",
            "models/inspection-od-base": ROOT / "models" / "inspection-od-base",
        }
        for name, path in models.items():
            results.append(measure(name, path, images, args.max_new_tokens))
    if args.write:
        lines = [
            "# Answer grammar: latency per answer",
            "",
            f"{date.today()}, {platform.processor() or platform.machine()}, one CPU thread, "
            f"{args.n} test-split composites (448 px, seed 9191) answered one at a time, "
            f"max_new_tokens {args.max_new_tokens}; median milliseconds per answer, unconstrained "
            "(`grammar=False`, the baseline of the same run) and under the grammar (default), "
            "interleaved. Main columns: a second pass over the same composites (the grammar's "
            "states met before are cached, as in a running Space); first pass: states met for "
            "the first time. Tables: decoding the vocabulary and exploring the grammar, once per "
            "tokenizer and process. Well formed: canonical answers (chat VLM) or readable "
            "`<OD>` output, first pass.",
            "",
            "| model | vocab | free ms/answer | grammar ms/answer | overhead | first pass free / "
            "grammar ms | tables (once) | well formed free | well formed grammar |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        lines += [
            f"| {r['model']} | {r['vocab']} | {r['free_s'] * 1000:.0f} | "
            f"{r['grammar_s'] * 1000:.0f} | {r['overhead']:+.0%} | "
            f"{r['cold_free_s'] * 1000:.0f} / {r['cold_grammar_s'] * 1000:.0f} | "
            f"{r['tables_s']:.2f} s | "
            f"{r['ok_free']}/{r['n']} | {r['ok_grammar']}/{r['n']} |"
            for r in results
        ]
        lines += ["", "Command: `OMP_NUM_THREADS=1 python -m benchmarks.bench_answer_grammar "
                  f"--n {args.n} --write`", ""]  # fmt: skip
        RESULTS.write_text("\n".join(lines))


if __name__ == "__main__":
    main()
