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
from qeu_space.views.framing import View, frame
from qeu_space.views.registration import CompositeRegistration
from qeu_space.vocabulary import (
    OD_PROMPT,
    Box,
    DefectKind,
    Finding,
    parse_bbox_str,
    quantize,
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


def view(image: Image.Image) -> View:
    """A composite as Florence-2 reads it: both products registered into the canonical frame."""
    return frame(rgb(image), None, source="composite")


def canonical_target(bbox_str: str, composite: View) -> str:
    """A row's ``bbox_str`` (boxes in the image) with its boxes in the canonical composite.

    The model reads the canonical frame, so it learns where defects lie there; each box goes
    through the test product's registration exactly (:meth:`Registration.box_to_canonical`).
    """
    regs = composite.registration
    if not isinstance(regs, CompositeRegistration):  # registration off: the view is the image
        return bbox_str
    size = composite.image.size
    parts = []
    for label, box in parse_bbox_str(bbox_str, size):
        x1, y1, x2, y2 = regs.box_to_canonical(box, "test")
        locs = (quantize(x1, size[0]), quantize(y1, size[1]), quantize(x2, size[0]),
                quantize(y2, size[1]))  # fmt: skip
        parts.append(label + "".join(f"<loc_{v}>" for v in locs))
    return "".join(parts)


def collate(processor: Any, rows: Sequence[Mapping[str, Any]]) -> BatchFeature:
    """``<OD>`` + image into the encoder; ``bbox_str`` tokens as decoder labels (padding -100).

    Rows need ``image`` and ``bbox_str``; ``prompt`` defaults to ``<OD>``. The image is read in
    the canonical frame (:func:`view`) and the target's boxes are moved there too.
    """
    views = [view(row["image"]) for row in rows]
    prompts = [row.get("prompt") or PROMPT for row in rows]
    images = [v.image for v in views]
    batch = processor(text=prompts, images=images, return_tensors="pt", padding=True)
    targets = processor.tokenizer(
        [canonical_target(row["bbox_str"], v) for row, v in zip(rows, views, strict=True)],
        padding=True,
        return_tensors="pt",
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

    The model reads each composite in the canonical frame (:func:`view`), so its boxes are in
    canonical composite pixels; :func:`boxes_in_image` maps them back onto the image. Generation
    settings other than sampling (beams, n-gram blocking) come from the model's
    ``generation_config``; sampling is always off so that a run is reproducible.
    """
    model, processor = loaded.model, loaded.processor
    device, dtype = placement(model)
    texts: list[str] = []
    with inference(model):
        for chunk in batches(list(images), batch_size):
            inputs = processor(
                text=[PROMPT] * len(chunk),
                images=[view(i).image for i in chunk],
                return_tensors="pt",
            ).to(device)
            inputs["pixel_values"] = inputs["pixel_values"].to(dtype)
            out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
            texts += [_clean(t) for t in processor.batch_decode(out, skip_special_tokens=False)]
    return texts


def _clean(text: str) -> str:
    return re.sub(r"</?s>|<pad>", "", text).strip()


def parse_boxes(text: str, image_size: tuple[int, int]) -> list[tuple[str, Box]]:
    """``(label, (x1, y1, x2, y2))`` pairs in pixels, Florence-2's dequantisation (bin centres).

    The pixels are those of the canonical composite the model read (see :func:`boxes_in_image`).
    """
    return parse_bbox_str(text, image_size)


def boxes_in_image(text: str, image: Image.Image) -> list[tuple[str, Box]]:
    """The boxes of an ``<OD>`` output on ``image``, in ``image``'s pixels (registration undone)."""
    composite = view(image)  # the registration is remembered: no second search
    return [(label, composite.box_to_source(box))
            for label, box in parse_boxes(text, composite.image.size)]  # fmt: skip


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
