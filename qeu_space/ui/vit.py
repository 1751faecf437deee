"""ViT verdict on one connector image, and where it looked (attention rollout).

Attention rollout (Abnar & Zuidema, 2020): average each layer's attention over heads, add the
identity for the residual connection, renormalise the rows, and multiply the layers together; the
class token's row over the patches says how much each patch fed the decision. It needs the
attention weights, so the model is loaded with ``attn_implementation="eager"``.

(Issue 5 may ship a rollout helper beside the embedded ViT; this one is the UI's until then.)

Example:
    >>> probabilities, attention = classify(model, processor, ("OK", "BENDNG", "NUKENG"), image)
    >>> attention.shape == (image.height, image.width)
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image


def attention_rollout(attentions: Sequence[torch.Tensor], grid: tuple[int, int]) -> np.ndarray:
    """The class token's rolled-out attention over a ``grid`` of patches, scaled to 0..1.

    Args:
        attentions: per layer, ``(1, heads, tokens, tokens)`` with the class token first.
        grid: ``(rows, columns)`` of patches; extra tokens (registers, distillation) are ignored.
    """
    rows, cols = grid
    result = None
    for layer in attentions:
        a = layer[0].float().mean(dim=0)
        a = a + torch.eye(a.shape[-1], device=a.device)
        a = a / a.sum(dim=-1, keepdim=True)
        result = a if result is None else a @ result
    if result is None:
        raise ValueError("the model returned no attention weights")
    cls_row = result[0, -rows * cols :].cpu().numpy()
    heat = cls_row.reshape(rows, cols)
    span = float(heat.max() - heat.min())
    return (heat - heat.min()) / span if span > 0 else np.zeros_like(heat)


def classify(
    model: Any, processor: Any, labels: Sequence[str], image: Image.Image
) -> tuple[dict[str, float], np.ndarray]:
    """Class probabilities and the rollout map upsampled to ``image``'s size (0..1)."""
    param = next(model.parameters())
    inputs = processor(images=image.convert("RGB"), return_tensors="pt")
    pixel_values = inputs["pixel_values"].to(param.device, param.dtype)
    with torch.inference_mode():
        out = model(pixel_values=pixel_values, output_attentions=True)
    probs = torch.softmax(out.logits[0].float(), dim=-1).cpu().numpy()
    probabilities = {label: float(p) for label, p in zip(labels, probs, strict=True)}
    height, width = pixel_values.shape[-2:]
    patch = model.config.patch_size
    grid = (height // patch, width // patch)
    heat = attention_rollout(out.attentions, grid)
    resized = Image.fromarray((heat * 255).astype(np.uint8)).resize(image.size, Image.BILINEAR)
    return probabilities, np.asarray(resized, dtype=np.float32) / 255.0
