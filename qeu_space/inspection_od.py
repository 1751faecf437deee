"""``python -m qeu_space.inspection_od --out DIR``: write the untrained ``<OD>`` model.

The command line only; the model is built by :mod:`qeu_space.modeling.inspection_od`, imported
after the arguments are parsed so that ``--help`` answers without loading torch.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import asdict


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m qeu_space.inspection_od",
        description="Write the untrained <OD> model (native Florence-2 architecture) to a folder.",
    )
    parser.add_argument("--out", required=True, help="folder to write")
    parser.add_argument("--seed", type=int, default=0, help="weight initialisation seed")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Write the untrained starting point to ``--out``."""
    args = build_parser().parse_args(argv)
    from qeu_space.modeling.inspection_od import InspectionODConfig, build_inspection_od

    config = InspectionODConfig(seed=args.seed)
    path = build_inspection_od(args.out, config)
    print(f"wrote {path} ({asdict(config)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
