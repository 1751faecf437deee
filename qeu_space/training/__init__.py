"""LoRA / DoRA / full fine-tuning of Florence-2 (``od``) and chat VLMs (``qa``) with ``Trainer``.

:mod:`.vision_pretrain` is the stage before it for the inspection VLM (its vision tower, per pin).

The names below are imported on first use, so that ``qeu_space.training.config`` (all that
``python -m qeu_space.train --help`` needs) loads without torch, transformers or peft.

Example:
    >>> from qeu_space.training import AdapterOptions, TrainConfig, train
    >>> result = train(TrainConfig("od", "tiny/florence2", "data/od", "runs/od",
    ...                            adapter=AdapterOptions(rank=8, scope="all"), max_steps=20))
    >>> result.history.eval[-1]["eval_map_50"]
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from qeu_space.training.config import AdapterOptions, TrainConfig
    from qeu_space.training.data import Collator, DatasetError, load_splits
    from qeu_space.training.history import LossHistory
    from qeu_space.training.run import TrainResult, train

#: Public name -> the submodule that defines it.
_EXPORTS: dict[str, str] = {
    "AdapterOptions": "config",
    "TrainConfig": "config",
    "Collator": "data",
    "DatasetError": "data",
    "load_splits": "data",
    "LossHistory": "history",
    "TrainResult": "run",
    "train": "run",
}

__all__ = [
    "AdapterOptions",
    "Collator",
    "DatasetError",
    "LossHistory",
    "TrainConfig",
    "TrainResult",
    "load_splits",
    "train",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
