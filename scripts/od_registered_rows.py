"""Keep the ``od`` rows whose composite the registration reads (train and validation splits).

Why: ``python -m qeu_space.train --task od`` frames every composite through the registration,
and its collate raises on a composite refused with "no connector found" (about 1 % of the rows
drawn on the training looks). The ``<OD>`` base's stage 7 trained on the rows kept here.

Usage:
    OMP_NUM_THREADS=1 python scripts/od_registered_rows.py data/od-looks data/od-looks-reg
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from datasets import DatasetDict, load_dataset  # noqa: E402

from qeu_space.modeling.families import florence2  # noqa: E402
from qeu_space.views.registration import NoConnectorError  # noqa: E402

FRAMING = "composite_test_grid"  # the shipped base's qeu_framing


def registers(row: dict) -> bool:
    """Whether the row's composite is read (not refused) in the ``<OD>`` base's view."""
    try:
        florence2.view(row["image"].convert("RGB"), FRAMING)
    except NoConnectorError:
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", help="od dataset folder (python -m dataset_tools build)")
    parser.add_argument("out", help="folder to write (save_to_disk layout)")
    parser.add_argument("--num-proc", type=int, default=1)
    args = parser.parse_args(argv)
    ds = load_dataset(args.source)
    kept = DatasetDict(
        {s: ds[s].filter(registers, num_proc=args.num_proc) for s in ("train", "validation")}
    )
    for split, rows in kept.items():
        print(f"{split}: {len(ds[split])} -> {len(rows)} rows")
    kept.save_to_disk(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
