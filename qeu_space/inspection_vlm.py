"""``python -m qeu_space.inspection_vlm --out DIR``: write the untrained inspection VLM.

The command line only; the model is built by :mod:`qeu_space.modeling.inspection_vlm`, imported
after the arguments are parsed so that ``--help`` answers without loading torch.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import asdict


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m qeu_space.inspection_vlm",
        description="Write the untrained inspection VLM (Idefics3 architecture) to a folder.",
    )
    parser.add_argument("--out", required=True, help="folder to write")
    parser.add_argument("--seed", type=int, default=0, help="weight initialisation seed")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Write the untrained starting point to ``--out``."""
    args = build_parser().parse_args(argv)
    from qeu_space.modeling.inspection_vlm import InspectionVLMConfig, build_inspection_vlm

    config = InspectionVLMConfig(seed=args.seed)
    path = build_inspection_vlm(args.out, config)
    print(f"wrote {path} ({asdict(config)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
