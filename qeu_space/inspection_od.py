"""``python -m qeu_space.inspection_od --out DIR``: write the untrained ``<OD>`` model.

The command line only; the model is built by :mod:`qeu_space.modeling.inspection_od`, imported
after the arguments are parsed so that ``--help`` answers without loading torch.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import asdict

from qeu_space.cli import CliError, OneLineParser, check_output_folder, fail, staged_folder

PROG = "python -m qeu_space.inspection_od"


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=PROG,
        description="Write the untrained <OD> model (native Florence-2 architecture) to a folder.",
    )
    parser.add_argument("--out", required=True, help="folder to write (must be empty)")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a non-empty --out (swapped in only once the new model is complete)",
    )
    parser.add_argument("--seed", type=int, default=0, help="weight initialisation seed")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Write the untrained starting point to ``--out``."""
    args = build_parser().parse_args(argv)
    try:
        check_output_folder(args.out, overwrite=args.overwrite)
    except CliError as err:
        return fail(PROG, err)
    from qeu_space.modeling.inspection_od import InspectionODConfig, build_inspection_od

    config = InspectionODConfig(seed=args.seed)
    try:
        with staged_folder(args.out) as staging:
            build_inspection_od(staging, config)
    except OSError as err:
        return fail(PROG, f"could not write {args.out}: {err.strerror or err}")
    print(f"wrote {args.out} ({asdict(config)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
