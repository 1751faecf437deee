"""Write a built dataset as parquet shards plus its card, all or nothing.

Everything is written into a staging folder beside the destination and renamed into place only when
complete, so an error or Ctrl-C leaves either the old folder or nothing, never half a dataset.
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import datasets

from dataset_tools.builders import BuildConfig, build_dataset
from dataset_tools.card import dataset_card

MAX_ROWS_PER_SHARD = 5000


class OutputDirError(ValueError):
    """The destination cannot be written as asked."""


def check_output_dir(out: Path, overwrite: bool) -> None:
    """Refuse a non-empty destination without ``overwrite``, or one that cannot be written."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputDirError(f"--out {out} is a file; give a folder path")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise OutputDirError(
            f"--out {out} is not empty; pass --overwrite to replace it or choose another folder"
        )
    parent = out.resolve().parent
    existing = next((p for p in (parent, *parent.parents) if p.exists()), None)
    if existing is None or not os.access(existing, os.W_OK | os.X_OK):
        raise OutputDirError(
            f"--out {out}: cannot write in {existing or parent}; choose a writable folder"
        )


def write_parquet(dd: datasets.DatasetDict, cfg: BuildConfig, folder: Path, command: str) -> None:
    """``<config>/<split>-0000i-of-0000n.parquet`` per split, and ``README.md``."""
    split_files: dict[str, list[str]] = {}
    for split, ds in dd.items():
        n = max(1, math.ceil(len(ds) / MAX_ROWS_PER_SHARD))
        files = []
        for i in range(n):
            name = f"{cfg.config}/{split}-{i:05d}-of-{n:05d}.parquet"
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            ds.shard(num_shards=n, index=i, contiguous=True).to_parquet(str(folder / name))
            files.append(name)
        split_files[split] = files
    rows = {s: len(d) for s, d in dd.items()}
    card = dataset_card(cfg, split_files, rows, command, {s: d.data.nbytes for s, d in dd.items()})
    card.save(folder / "README.md")


@contextmanager
def staged_folder(out: Path) -> Iterator[Path]:
    """Yield an empty staging folder beside ``out``; on success it replaces ``out`` in one rename.

    On any error (Ctrl-C included) the staging folder is removed and ``out`` is left as it was.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.with_name(f".{out.name}.partial-{os.getpid()}")
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        staging.mkdir()
        yield staging
        if out.exists():
            out.rename(old)
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if old.exists() and not out.exists():
            old.rename(out)
        raise
    shutil.rmtree(old, ignore_errors=True)


def build_to_folder(
    cfg: BuildConfig, out: Path, *, command: str, overwrite: bool = False
) -> dict[str, int]:
    """Build ``cfg`` and write it to ``out`` atomically; returns the rows per split."""
    check_output_dir(out, overwrite)
    with staged_folder(out) as staging:
        cache = staging / ".cache"
        dd = build_dataset(cfg, cache_dir=str(cache))
        write_parquet(dd, cfg, staging, command)
        rows = {split: len(ds) for split, ds in dd.items()}
        del dd
        shutil.rmtree(cache, ignore_errors=True)
    return rows
