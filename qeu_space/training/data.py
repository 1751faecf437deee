"""Training data: read the dataset, check its columns, and collate rows through the family.

The dataset is what ``python -m dataset_tools build`` writes (a folder ``datasets.load_dataset``
reads), a ``DatasetDict.save_to_disk`` folder, or a Hub dataset id named by the user. Rows keep
their PIL images until the collator: the family's processor does all image work, once.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import datasets
from transformers import BatchFeature

#: Columns each task reads (DESIGN.md's rows); others (``id``, ``housing``, ...) pass through.
REQUIRED_COLUMNS: dict[str, tuple[str, ...]] = {
    "qa": ("image", "question", "answer", "findings"),
    "od": ("image", "bbox_str", "objects"),
    "cls": ("image", "label"),
}


class DatasetError(ValueError):
    """The dataset cannot train this task (missing split or columns)."""


def load_splits(
    source: str | Path,
    task: str,
    *,
    config_name: str | None = None,
    seed: int = 0,
    validation_fraction: float = 0.1,
) -> datasets.DatasetDict:
    """``train`` and ``validation`` splits of ``source``, with the task's columns checked.

    Without a ``validation`` split, ``validation_fraction`` of ``train`` is held out (seeded),
    as the seeds did with ``train_test_split``.

    Raises:
        DatasetError: no ``train`` split, or required columns missing (all of them named).
    """
    dd = _read(str(source), config_name)
    if "train" not in dd:
        raise DatasetError(f"dataset {source} has no 'train' split (splits: {sorted(dd)})")
    if "validation" not in dd:
        if len(dd["train"]) < 2:
            raise DatasetError(f"dataset {source} has no 'validation' split and too few rows")
        held = dd["train"].train_test_split(test_size=validation_fraction, seed=seed)
        dd = datasets.DatasetDict({"train": held["train"], "validation": held["test"]})
    for split in ("train", "validation"):
        check_columns(dd[split], task, name=f"{source} [{split}]")
    return datasets.DatasetDict({"train": dd["train"], "validation": dd["validation"]})


def check_columns(dataset: datasets.Dataset, task: str, *, name: str = "dataset") -> None:
    missing = [c for c in REQUIRED_COLUMNS[task] if c not in dataset.column_names]
    if missing:
        raise DatasetError(
            f"{name} lacks the column(s) {', '.join(missing)} that --task {task} needs "
            f"(it has: {', '.join(dataset.column_names)}); build it with "
            f"`python -m dataset_tools build --config {task}`"
        )


def _read(source: str, config_name: str | None) -> datasets.DatasetDict:
    path = Path(source)
    if path.is_dir() and (path / "dataset_dict.json").is_file():
        return _named_splits(source, datasets.load_from_disk(source))
    if not path.is_dir() and (source.startswith((".", "/", "~")) or source.count("/") != 1):
        raise DatasetError(f"dataset folder {source!r} does not exist")
    try:  # a folder datasets can read, or (named by the user) a Hub dataset id
        loaded = datasets.load_dataset(source, name=config_name)
    except (OSError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        hint = " (pick one with --dataset-config)" if "config" in first.lower() else ""
        what = (
            f"dataset folder {source!r} cannot be read"
            if path.is_dir()
            else f"dataset {source!r} is not a local folder and did not load from the Hub"
        )
        raise DatasetError(f"{what}: {first}{hint}") from None
    return _named_splits(source, loaded)


def _named_splits(source: str, loaded: object) -> datasets.DatasetDict:
    if not isinstance(loaded, datasets.DatasetDict):
        raise DatasetError(f"dataset {source} has no named splits; expected train/validation")
    return loaded


@dataclass(frozen=True)
class Collator:
    """``data_collator`` for ``Trainer``: rows -> the family's batch with masked labels.

    ``options`` are keyword arguments of the family's ``collate`` (the ViT's framing config, and
    for training batches its augmentation generator); most families take none.
    """

    family: ModuleType
    processor: Any
    options: Mapping[str, Any] = field(default_factory=dict)

    def __call__(self, rows: Sequence[Mapping[str, Any]]) -> BatchFeature:
        return self.family.collate(self.processor, rows, **self.options)


def collators(
    family: ModuleType,
    processor: Any,
    model_config: Any,
    seed: int,
    *,
    photometric: bool = False,
) -> tuple[Collator, Collator | None]:
    """The evaluation collator and, for families that augment their training rows, the training one.

    A family opts in with ``collate_options(model_config)`` (for every batch) and
    ``train_collate_options(seed)`` (training batches only). ``photometric`` (``--photometric``,
    chat VLMs) relights every training view with its own seeded draw
    (:class:`qeu_space.training.photometric.Photometric`); evaluation batches never are.

    Raises:
        ValueError: ``photometric`` for a family whose ``collate`` cannot relight its views.
    """
    options = (
        dict(family.collate_options(model_config)) if hasattr(family, "collate_options") else {}
    )
    evaluation = Collator(family, processor, options)
    extra: dict[str, Any] = {}
    if photometric:
        if "relight" not in inspect.signature(family.collate).parameters:
            raise ValueError(
                f"--photometric relights chat-VLM (qa) training views; the {family.NAME} family "
                "has its own augmentation: drop --photometric"
            )
        from qeu_space.training.photometric import Photometric

        extra["relight"] = Photometric(seed)
    if not hasattr(family, "train_collate_options") and not extra:
        return evaluation, None
    own = family.train_collate_options(seed) if hasattr(family, "train_collate_options") else {}
    training = {**options, **own, **extra}
    return evaluation, Collator(family, processor, training)


def keep_registered(
    dataset: datasets.Dataset, view: Any, framing: str | None, *, name: str = "train"
) -> datasets.Dataset:
    """``dataset`` without the rows whose composite the registration refuses, said in one line.

    Every model reads the registered frame, and a row it cannot read cannot be trained on (the
    collate would raise in the middle of an epoch); on the looks about 1 % of composites are
    refused (a pin lost in a strong shadow, a column cut by the border). Their registrations are
    remembered, so the first epoch does not search again.
    """
    from qeu_space.views.no_connector import NoConnectorError

    def readable(row: Mapping[str, Any]) -> bool:
        try:
            view(row["image"], framing)
        except NoConnectorError:
            return False
        return True

    kept = dataset.filter(readable, desc=f"registering {name} rows")
    if len(kept) < len(dataset):
        print(
            f"left out {len(dataset) - len(kept)} of {len(dataset)} {name} rows: the registration "
            "refuses their composite (no connector found)"
        )
    if not len(kept):
        raise DatasetError(f"no {name} row registers: is this a dataset of connector composites?")
    return kept
