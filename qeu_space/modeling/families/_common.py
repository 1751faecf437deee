"""Small helpers every family module uses (private: the families' public face is their module)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from PIL import Image

from qeu_space.modeling.catalog import SCOPES


def check_scope(scope: str) -> str:
    if scope not in SCOPES:
        raise ValueError(f"adapter scope must be one of {SCOPES}, got {scope!r}")
    return scope


def rgb(image: Image.Image) -> Image.Image:
    """Processors expect three channels; dataset images may be grey or RGBA."""
    if not isinstance(image, Image.Image):
        raise TypeError(f"expected a PIL image, got {type(image).__name__}")
    return image if image.mode == "RGB" else image.convert("RGB")


def placement(model: torch.nn.Module) -> tuple[torch.device, torch.dtype]:
    """Device and floating dtype of a model's weights (inputs must follow them)."""
    param = next(p for p in model.parameters() if p.is_floating_point())
    return param.device, param.dtype


def batches(items: Sequence, size: int) -> Iterator[Sequence]:
    if size < 1:
        raise ValueError(f"batch_size must be at least 1, got {size}")
    for start in range(0, len(items), size):
        yield items[start : start + size]


@contextmanager
def inference(model: torch.nn.Module) -> Iterator[None]:
    """Eval mode and no autograd for generation, restoring training mode afterwards."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        model.train(was_training)
