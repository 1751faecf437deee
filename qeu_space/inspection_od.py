"""``python -m qeu_space.inspection_od --out DIR``: write the untrained ``<OD>`` model.

The command line only; the model is built by :mod:`qeu_space.modeling.inspection_od`, imported
after the arguments are parsed so that ``--help`` answers without loading torch.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from qeu_space.cli import untrained_model_parser, write_untrained_model

PROG = "python -m qeu_space.inspection_od"


def build_parser() -> argparse.ArgumentParser:
    return untrained_model_parser(
        PROG, "Write the untrained <OD> model (native Florence-2 architecture) to a folder."
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Write the untrained starting point to ``--out``."""
    args = build_parser().parse_args(argv)

    def load() -> tuple:  # torch and transformers: only once --out is known to be writable
        from qeu_space.modeling.inspection_od import InspectionODConfig, build_inspection_od

        return build_inspection_od, InspectionODConfig

    return write_untrained_model(PROG, args, load)


if __name__ == "__main__":
    sys.exit(main())
