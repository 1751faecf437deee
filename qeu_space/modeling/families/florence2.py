"""Native Florence-2 (``Florence2ForConditionalGeneration``) answering the ``<OD>`` task.

Florence-2 is an encoder-decoder: the image tokens and the prompt go into the encoder, and the
decoder is trained on the ``bbox_str`` alone (``<s>bent pin<loc_..>x4...</s>``). So the label mask
is simple and exact: the labels *are* the target tokens, and only its padding is set to -100;
prompt and image tokens never enter the labels at all.

Module names (native transformers, checked on the tiny model): language model
``model.language_model.{encoder,decoder}.layers.N.{self_attn,encoder_attn}.{q,k,v,out}_proj``
and ``...layers.N.fc1/fc2``; vision tower ``model.vision_tower.blocks.S.N.*.{qkv,proj,fc1,fc2}``;
projector ``model.multi_modal_projector.image_projection``. ``fc1``/``fc2`` exist in both
towers, hence regexes over full names.

Example:
    >>> vision = lora_target_modules("vision")
    >>> bool(re.fullmatch(vision, "model.vision_tower.blocks.0.0.channel_block.ffn.fc1"))
    True
    >>> bool(re.fullmatch(vision, "model.language_model.encoder.layers.0.fc1"))
    False
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from PIL import Image
from transformers import BatchFeature

from qeu_space.geometry import CompositeLayout
from qeu_space.modeling.families._common import batches, check_scope, inference, placement, rgb
from qeu_space.modeling.loaded import LoadedModel
from qeu_space.vocabulary import (
    OD_PROMPT,
    Box,
    DefectKind,
    Finding,
    parse_bbox_str,
    sort_findings,
)

NAME = "florence2"
TASKS: tuple[str, ...] = ("od",)
#: Validation metric (``eval_`` + this) that picks the best checkpoint.
BEST_METRIC = "map_50"
PROMPT = OD_PROMPT

_LANGUAGE = r"model\.language_model\.(encoder|decoder)\.layers\.\d+\.(\w+\.)?(q_proj|k_proj|v_proj|out_proj|fc1|fc2)"  # noqa: E501
_VISION = r"model\.vision_tower\..*\.(qkv|proj|fc1|fc2)"
_PROJECTOR = r"model\.multi_modal_projector\.image_projection"
#: Scope -> PEFT ``target_modules`` regex (``re.fullmatch`` on full module names).
TARGET_MODULES: dict[str, str] = {
    "language": _LANGUAGE,
    "vision": f"({_VISION})|({_PROJECTOR})",
    "all": f"({_LANGUAGE})|({_VISION})|({_PROJECTOR})",
}


def matches(model_type: str, config: Mapping[str, Any]) -> bool:
    return model_type == "florence2"


def lora_target_modules(scope: str) -> str:
    """PEFT regex for ``language`` (BART), ``vision`` (DaViT + projector) or ``all``."""
    return TARGET_MODULES[check_scope(scope)]


def collate(processor: Any, rows: Sequence[Mapping[str, Any]]) -> BatchFeature:
    """``<OD>`` + image into the encoder; ``bbox_str`` tokens as decoder labels (padding -100).

    Rows need ``image`` and ``bbox_str``; ``prompt`` defaults to ``<OD>``.
    """
    images = [rgb(row["image"]) for row in rows]
    prompts = [row.get("prompt") or PROMPT for row in rows]
    batch = processor(text=prompts, images=images, return_tensors="pt", padding=True)
    targets = processor.tokenizer(
        [row["bbox_str"] for row in rows], padding=True, return_tensors="pt"
    )
    batch["labels"] = targets["input_ids"].masked_fill(targets["attention_mask"] == 0, -100)
    return batch


def generate(
    loaded: LoadedModel,
    images: Sequence[Image.Image],
    *,
    max_new_tokens: int = 64,
    batch_size: int = 8,
) -> list[str]:
    """Greedy ``<OD>`` outputs, one ``bbox_str``-like text per image (``<s>``/``</s>`` removed).

    Generation settings other than sampling (beams, n-gram blocking) come from the model's
    ``generation_config``; sampling is always off so that a run is reproducible.
    """
    model, processor = loaded.model, loaded.processor
    device, dtype = placement(model)
    texts: list[str] = []
    with inference(model):
        for chunk in batches(list(images), batch_size):
            inputs = processor(
                text=[PROMPT] * len(chunk), images=[rgb(i) for i in chunk], return_tensors="pt"
            ).to(device)
            inputs["pixel_values"] = inputs["pixel_values"].to(dtype)
            out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
            texts += [_clean(t) for t in processor.batch_decode(out, skip_special_tokens=False)]
    return texts


def _clean(text: str) -> str:
    return re.sub(r"</?s>|<pad>", "", text).strip()


def parse_boxes(text: str, image_size: tuple[int, int]) -> list[tuple[str, Box]]:
    """``(label, (x1, y1, x2, y2))`` pairs in pixels, Florence-2's dequantisation (bin centres)."""
    return parse_bbox_str(text, image_size)


def parse(text: str, image_size: tuple[int, int]) -> list[Finding]:
    """Findings from an ``<OD>`` output on a composite of ``image_size`` (square, >= 96 px).

    Each box of a known defect kind becomes a finding at the test product's pin under its
    centre; boxes over no pin (the reference panel, the labels), inverted boxes and unknown
    labels are dropped. OD labels carry no bend direction, so ``direction`` is ``None``.
    """
    width, height = image_size
    if width != height:
        raise ValueError(f"OD findings need a square composite image, got {width} x {height}")
    layout = CompositeLayout(int(width))
    findings: dict[tuple, Finding] = {}
    for label, box in parse_boxes(text, image_size):
        try:
            kind = DefectKind.parse(label)
        except ValueError:
            continue
        position = layout.position_at((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)
        if position is None or box[2] <= box[0] or box[3] <= box[1]:
            continue
        findings.setdefault((position, kind), Finding(position, kind, None, box))
    return sort_findings(findings.values())
