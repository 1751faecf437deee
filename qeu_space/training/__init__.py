"""LoRA / DoRA / full fine-tuning of Florence-2 (``od``) and chat VLMs (``qa``) with ``Trainer``.

:mod:`.vision_pretrain` is the stage before it for the inspection VLM (its vision tower, per pin).

Example:
    >>> from qeu_space.training import AdapterOptions, TrainConfig, train
    >>> result = train(TrainConfig("od", "tiny/florence2", "data/od", "runs/od",
    ...                            adapter=AdapterOptions(rank=8, scope="all"), max_steps=20))
    >>> result.history.eval[-1]["eval_map_50"]
"""

from __future__ import annotations

from qeu_space.training.config import AdapterOptions, TrainConfig
from qeu_space.training.data import Collator, DatasetError, load_splits
from qeu_space.training.history import LossHistory
from qeu_space.training.run import TrainResult, train

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
