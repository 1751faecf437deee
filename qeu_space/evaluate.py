"""``python -m qeu_space.evaluate``: score a model (and its adapter) on a Q/A or OD split.

The command line only; the scoring is :mod:`qeu_space.evaluation.evaluate`, whose models and data
are loaded after the arguments are parsed.

Example:
    python -m qeu_space.evaluate --task qa --base HuggingFaceTB/SmolVLM-256M-Instruct \\
        --adapter out/qa-lora --dataset out/dataset --split test --report out/eval.json
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from qeu_space.cli import (
    CliError,
    OneLineParser,
    check_device,
    check_output_file,
    deprecated_alias,
    fail,
    folder_or_hub_id,
    int_at_least,
)

#: :data:`qeu_space.evaluation.evaluate.TASKS`, repeated so that a wrong argument is answered
#: before registration and scipy load (tests/test_cli_errors.py checks they match).
TASKS = ("qa", "od")

PROG = "python -m qeu_space.evaluate"


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=PROG,
        description="Score a model (and its adapter against its base) on a Q/A or OD split.",
    )
    parser.add_argument("--task", required=True, choices=TASKS)
    parser.add_argument(
        "--base", required=True, type=folder_or_hub_id, help="base model Hub id or folder"
    )
    parser.add_argument("--adapter", type=folder_or_hub_id, help="PEFT adapter folder or Hub id")
    parser.add_argument(
        "--dataset", required=True, type=folder_or_hub_id, help="dataset folder or Hub id"
    )
    parser.add_argument("--split", default="test")
    parser.add_argument(
        "--report",
        required=True,
        type=Path,
        help="JSON file to write (and the markdown table beside it, same name, .md)",
    )
    parser.add_argument("--limit", type=int_at_least(1), help="score only the first N rows")
    parser.add_argument(
        "--compare-base",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="with --adapter, also score the base through disable_adapter() (default: on)",
    )
    parser.add_argument("--batch-size", type=int_at_least(1), default=4)
    parser.add_argument("--max-new-tokens", type=int_at_least(1), default=64)
    parser.add_argument(
        "--grammar",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="generate under the answer / <OD> grammar as the Space does (default: on); "
        "--no-grammar: unconstrained, the ablation",
    )
    parser.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: the best available)")
    parser.add_argument("--trust-remote-code", action="store_true")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    deprecated_alias(parser, "--no-progress", "--quiet", const=True)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:  # before any work: a report that cannot be written or a missing device loses nothing
        if args.report.suffix != ".json":
            raise CliError(f"--report must name a .json file, got {str(args.report)!r}")
        for path in (args.report, args.report.with_suffix(".md")):
            check_output_file(path, "--report")
        check_device(args.device)
    except CliError as err:
        return fail(PROG, err)
    from qeu_space.evaluation.evaluate import EvalOptions, run_evaluation

    settings = vars(args)
    settings["progress"] = not settings.pop("quiet")
    try:
        options = EvalOptions(**settings)
        report = run_evaluation(options)
    except (ValueError, OSError) as err:  # bad input, missing files, Hub unreachable
        return fail(PROG, err)
    print(report.to_markdown())
    print(f"wrote {options.report} and {options.report.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
