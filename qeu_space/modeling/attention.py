"""Attention rollout of the ViT classifier: where in the image its decision came from.

The seeds watched their ViT's attention maps "settle on the defect" as training went on, and read
them to decide what data to add next. Rollout (Abnar & Zuidema, 2020) follows the ``[CLS]``
token's attention back through every layer: each layer's head-averaged attention, plus the
identity for the residual path, row-normalised, multiplied from the first layer to the last.
The ``[CLS]`` row over the patches is the map; upsampled to the image, it is the heatmap.

Attention weights exist only with eager attention (SDPA never forms them), so the rollout switches
the model to ``"eager"`` for its own forward pass and back afterwards.

Example:
    >>> loaded = load_model("models/vit-inspector")
    >>> heatmap = attention_rollout(loaded, image)  # (image.height, image.width), in [0, 1]
    >>> attention_overlay(image, heatmap).save("attention.png")
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import matplotlib
import numpy as np
import torch
from PIL import Image

from qeu_space.modeling.families import vit
from qeu_space.modeling.families._common import inference, placement, rgb
from qeu_space.modeling.loaded import LoadedModel

__all__ = ["attention_overlay", "attention_rollout", "rollout"]


def rollout(attentions: tuple[torch.Tensor, ...] | list[torch.Tensor]) -> torch.Tensor:
    """``[CLS]`` -> token relevance, ``(batch, tokens - 1)``, from per-layer attentions.

    Args:
        attentions: one ``(batch, heads, tokens, tokens)`` tensor per layer, first layer first;
            token 0 is ``[CLS]``.
    """
    if not attentions:
        raise ValueError("no attention weights: run the model with output_attentions=True")
    first = attentions[0]
    tokens = first.shape[-1]
    eye = torch.eye(tokens, dtype=torch.float32, device=first.device)
    result = eye.expand(first.shape[0], tokens, tokens)
    for layer in attentions:
        mixed = layer.float().mean(dim=1) + eye  # heads averaged, residual path added
        mixed = mixed / mixed.sum(dim=-1, keepdim=True)
        result = mixed @ result
    return result[:, 0, 1:]


@contextlib.contextmanager
def _eager(model: Any) -> Iterator[None]:
    before = model.config._attn_implementation
    if before != "eager":
        model.set_attn_implementation("eager")
    try:
        yield
    finally:
        if before != "eager":
            model.set_attn_implementation(before)


def attention_rollout(
    loaded: LoadedModel, image: Image.Image, reference: Image.Image | None = None
) -> np.ndarray:
    """The rollout heatmap of ``image``: ``(image.height, image.width)`` float32 in [0, 1].

    A pair model (6 channels) also reads ``reference`` (the good product); its patches hold both
    pins, and the map is drawn on the test image.

    The patch grid is upsampled bilinearly onto the part of the image the model sees (all of it, or
    the pin grid for a model that frames it, :func:`qeu_space.modeling.families.vit.frame`); outside
    that part the map is 0. 1 is the most attended patch.

    Raises:
        ValueError: the model is not a ViT (it has no patch grid in its config), or a pair
            model got no reference.
    """
    model, processor = loaded.model, loaded.processor
    config = model.config
    if getattr(config, "model_type", None) != "vit":
        raise ValueError(
            f"attention rollout needs a ViT classifier, got model type {config.model_type!r}"
        )
    size = config.image_size
    height, width = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    grid = (height // config.patch_size, width // config.patch_size)
    image = rgb(image)
    view = vit.frame(image, config)
    device, dtype = placement(model)
    vit.check_references(config, [image], None if reference is None else [reference])
    if vit.is_pair(config):
        framed_ref = vit.frame(rgb(reference), config).image
        pixels = vit.pair_pixels(processor, [framed_ref], [view.image])
    else:
        pixels = processor(images=[view.image], return_tensors="pt")["pixel_values"]
    pixels = pixels.to(device, dtype)
    with inference(model), _eager(model):
        attentions = model(pixel_values=pixels, output_attentions=True).attentions
    relevance = rollout(attentions)[0].reshape(grid).cpu().numpy().astype(np.float32)
    relevance = relevance - relevance.min()
    relevance = relevance / relevance.max() if relevance.max() > 0 else relevance
    heatmap = view.map_to_source(relevance)  # back through the framing and the registration
    return np.clip(heatmap, 0.0, 1.0)


def attention_overlay(
    image: Image.Image, heatmap: np.ndarray, *, alpha: float = 0.45, cmap: str = "jet"
) -> Image.Image:
    """``image`` with ``heatmap`` (its size, values in [0, 1]) blended over it in a colormap.

    Raises:
        ValueError: the heatmap's shape is not the image's, or ``alpha`` is outside [0, 1].
    """
    image = rgb(image)
    heatmap = np.asarray(heatmap, dtype=np.float32)
    if heatmap.shape != (image.height, image.width):
        raise ValueError(
            f"heatmap is {heatmap.shape[::-1]} (w, h), image is {image.size}: pass the map "
            "that attention_rollout gave for this image"
        )
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    colours = matplotlib.colormaps[cmap](np.clip(heatmap, 0.0, 1.0))[..., :3]
    base = np.asarray(image, dtype=np.float32) / 255.0
    blended = (1.0 - alpha) * base + alpha * colours
    return Image.fromarray(np.round(blended * 255.0).astype(np.uint8), mode="RGB")
