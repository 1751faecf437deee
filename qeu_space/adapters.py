"""``python -m qeu_space.adapters``: inspect a PEFT adapter folder, or publish one with its card.

The command line only; the work is :mod:`qeu_space.hub.adapters` (reading and summarising an
adapter, writing its model card, pushing it), imported after the arguments are parsed.

Example:
    python -m qeu_space.adapters inspect out/qa-lora --plot norms.png [--json]
    python -m qeu_space.adapters push out/qa-lora --push-to me/qeu-qa-lora \\
        --dataset me/qeu-connectors --metrics out/eval.json [--private]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from qeu_space.cli import (
    CliError,
    OneLineParser,
    check_output_file,
    deprecated_alias,
    existing_path,
    fail,
    hub_repo_id,
)

PROG = "python -m qeu_space.adapters"


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog=PROG, description="Inspect or publish a PEFT adapter.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    inspect = sub.add_parser("inspect", help="rank, modules, parameter share, update norms")
    inspect.add_argument("folder", type=existing_path("folder"))
    inspect.add_argument("--plot", type=Path, help="write a bar plot of the norms (PNG)")
    inspect.add_argument("--json", action="store_true", help="print JSON instead of a table")
    push = sub.add_parser("push", help="write the model card and upload to a model repo")
    push.add_argument("folder", type=existing_path("folder"))
    push.add_argument("--push-to", dest="repo_id", metavar="REPO", type=hub_repo_id,
                      help="OWNER/NAME of the model repo (required)")  # fmt: skip
    deprecated_alias(push, "--to", "--push-to", dest="repo_id", metavar="REPO", type=hub_repo_id)
    push.add_argument("--private", action="store_true")
    push.add_argument(
        "--dataset",
        dest="datasets",
        action="append",
        default=[],
        help="dataset Hub id for the card (repeatable)",
    )
    push.add_argument(
        "--metrics", type=existing_path("file"), help="report JSON from qeu_space.evaluate"
    )
    push.add_argument("--base-model", help="Hub id of the base, when the adapter names a folder")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "push" and not args.repo_id:  # required, under either spelling
        parser.error("the following arguments are required: --push-to")
    if args.command == "inspect" and args.plot is not None:
        try:  # before any work
            check_output_file(args.plot, "--plot")
        except CliError as err:
            return fail(f"{PROG} inspect", err)
    from qeu_space.hub.adapters import PushOptions, inspect_adapter, plot_norms, push_adapter
    from qeu_space.hub.upload import HubError

    try:
        if args.command == "inspect":
            summary = inspect_adapter(args.folder)
            print(json.dumps(summary.to_dict(), indent=2) if args.json else summary.to_markdown())
            if args.plot:
                print(f"wrote {plot_norms(summary, args.plot)}", file=sys.stderr)
            return 0
        options = PushOptions(
            folder=args.folder,
            repo_id=args.repo_id,
            private=args.private,
            datasets=args.datasets,
            metrics=args.metrics,
            base_model=args.base_model,
        )
        url = push_adapter(options)
    except (ValueError, OSError, HubError) as err:
        return fail(f"{PROG} {args.command}", err)
    print(f"pushed {options.folder} to {options.repo_id}: {url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
