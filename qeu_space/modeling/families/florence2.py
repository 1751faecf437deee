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

import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from PIL import Image, ImageEnhance
from transformers import BatchFeature

from qeu_space.geometry import CompositeLayout
from qeu_space.modeling import answer_grammar
from qeu_space.modeling.families._common import batches, check_scope, inference, placement, rgb
from qeu_space.modeling.loaded import LoadedModel
from qeu_space.views.framing import View, frame, framing_of, grid_box
from qeu_space.views.registration import CompositeRegistration
from qeu_space.vocabulary import (
    OD_PROMPT,
    Box,
    DefectKind,
    Direction,
    Finding,
    dequantize,
    parse_bbox_str,
    quantize,
    sort_findings,
)

NAME = "florence2"
TASKS: tuple[str, ...] = ("od",)
#: Validation metric (``eval_`` + this) that picks the best checkpoint.
BEST_METRIC = "map_50"
PROMPT = OD_PROMPT
LAMP_GAIN = 0.45
"""Training batches see the lamp anywhere from ``1 - LAMP_GAIN`` to ``1 + LAMP_GAIN`` of its
brightness (as the ViT's): the robustness benchmark's gains 0.6 and 1.4 lie inside. Trained on
the datasets' own lighting only, the ``<OD>`` base scored findings F1 0.625 at gain 0.6."""

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


def collate_options(config: Any) -> dict[str, Any]:
    """Every batch is framed as the model asks (``qeu_framing``; none: the whole composite)."""
    return {"framing": framing_of(config)}


def view(image: Image.Image, framing: str | None = None) -> View:
    """A composite as a Florence-2 with ``framing`` reads it, registered into the canonical frame.

    ``None`` (models without ``qeu_framing``, e.g. the tiny test models): the whole composite,
    both products registered. ``composite_test_grid``: only the test product's pin grid.
    """
    return frame(rgb(image), framing, source="composite")


def view_box(framing: str | None, size: tuple[int, int]) -> tuple[int, int, int, int]:
    """Where ``framing``'s view lies in the canonical composite of ``size``, in whole pixels
    (:func:`~qeu_space.views.framing.frame` crops exactly this box)."""
    x1, y1, x2, y2 = (round(v) for v in grid_box(size, framing))
    return x1, y1, x2, y2


def canonical_target(bbox_str: str, composite: View, framing: str | None = None) -> str:
    """A row's ``bbox_str`` (boxes in the image) as the model must say it: in its view.

    Each box goes through the test product's registration exactly
    (:meth:`CompositeRegistration.box_to_canonical`) into the canonical composite, then into the
    view framed there (``framing``: subtract the view's origin); the bins are the view's.
    With registration off the view is cut from the image as it is.
    """
    regs = composite.registration
    size = composite.source_size
    ox, oy, _, _ = view_box(framing, size)
    width, height = composite.image.size
    parts = []
    for label, box in parse_bbox_str(bbox_str, size):
        if isinstance(regs, CompositeRegistration):
            box = regs.box_to_canonical(box, "test")
        x1, y1, x2, y2 = box[0] - ox, box[1] - oy, box[2] - ox, box[3] - oy
        locs = (quantize(x1, width), quantize(y1, height), quantize(x2, width),
                quantize(y2, height))  # fmt: skip
        parts.append(label + "".join(f"<loc_{v}>" for v in locs))
    return "".join(parts)


_LOC_QUAD = re.compile(r"<loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)>")


def composite_text(text: str, framing: str | None, size: tuple[int, int]) -> str:
    """An output in a framed view's bins, re-expressed in the canonical composite's bins.

    What :func:`generate` returns for every model, so that :func:`parse`, :func:`boxes_in_image`
    and ``Florence2Processor.post_process_generation(..., image_size=composite size)`` read it
    whatever the model's view. Only whole box quadruples move; anything else is kept as said.
    """
    if framing is None:
        return text
    x1, y1, x2, y2 = view_box(framing, size)
    width, height = x2 - x1, y2 - y1

    def move(match: re.Match) -> str:
        a, b, c, d = (int(v) for v in match.groups())
        box = (dequantize(a, width) + x1, dequantize(b, height) + y1,
               dequantize(c, width) + x1, dequantize(d, height) + y1)  # fmt: skip
        bins = (quantize(box[0], size[0]), quantize(box[1], size[1]),
                quantize(box[2], size[0]), quantize(box[3], size[1]))  # fmt: skip
        return "".join(f"<loc_{v}>" for v in bins)

    return _LOC_QUAD.sub(move, text)


def collate(
    processor: Any,
    rows: Sequence[Mapping[str, Any]],
    *,
    framing: str | None = None,
    rng: random.Random | None = None,
    gain: float = 0.0,
) -> BatchFeature:
    """``<OD>`` + image into the encoder; ``bbox_str`` tokens as decoder labels (padding -100).

    Rows need ``image`` and ``bbox_str``; ``prompt`` defaults to ``<OD>``. The image is read in
    the model's view (:func:`view`) and the target's boxes are moved there too. With ``rng``
    (training batches) each view is relit by a factor drawn from ``[1 - gain, 1 + gain]`` (the
    registration is found on the image as it is; boxes do not move).
    """
    views = [view(row["image"], framing) for row in rows]
    prompts = [row.get("prompt") or PROMPT for row in rows]
    images = [v.image for v in views]
    if rng is not None and gain:
        images = [relit(image, rng.uniform(1 - gain, 1 + gain)) for image in images]
    batch = processor(text=prompts, images=images, return_tensors="pt", padding=True)
    targets = processor.tokenizer(
        [canonical_target(row["bbox_str"], v, framing) for row, v in zip(rows, views, strict=True)],
        padding=True,
        return_tensors="pt",
    )
    batch["labels"] = targets["input_ids"].masked_fill(targets["attention_mask"] == 0, -100)
    return batch


def relit(image: Image.Image, factor: float) -> Image.Image:
    """``image`` under a lamp ``factor`` times as bright (pixel values scaled, clipped)."""
    return ImageEnhance.Brightness(image).enhance(factor)


def train_collate_options(seed: int) -> dict[str, Any]:
    """Training batches are also relit at random (:data:`LAMP_GAIN`), seeded."""
    return {"rng": random.Random(seed), "gain": LAMP_GAIN}


def generate(
    loaded: LoadedModel,
    images: Sequence[Image.Image],
    *,
    max_new_tokens: int = 64,
    batch_size: int = 8,
    grammar: bool = True,
) -> list[str]:
    """Greedy ``<OD>`` outputs, one ``bbox_str``-like text per image (``<s>``/``</s>`` removed).

    ``grammar`` (on by default) decodes under the ``<OD>`` grammar
    (:class:`~qeu_space.modeling.answer_grammar.OdGrammar`: known kinds, each followed by four
    ``<loc_N>`` tokens), so an output that ends within ``max_new_tokens`` is :func:`readable`;
    ``grammar=False`` is the unconstrained ablation.

    The model reads each composite in its view (:func:`view`, by its ``qeu_framing``); its boxes
    are returned in the bins of the canonical composite (:func:`composite_text`), and
    :func:`boxes_in_image` maps them back onto the image. Generation settings other than sampling
    (beams, n-gram blocking) come from the model's ``generation_config``; sampling is always off
    so that a run is reproducible.
    """
    model, processor = loaded.model, loaded.processor
    device, dtype = placement(model)
    framing = framing_of(model.config)
    tokenizer = processor.tokenizer
    constraint = answer_grammar.od_constraint(tokenizer) if grammar else None
    texts: list[str] = []
    with inference(model):
        for chunk in batches(list(images), batch_size):
            views = [view(i, framing) for i in chunk]
            inputs = processor(
                text=[PROMPT] * len(chunk),
                images=[v.image for v in views],
                return_tensors="pt",
            ).to(device)
            inputs["pixel_values"] = inputs["pixel_values"].to(dtype)
            extra = {}
            if constraint is not None:
                extra["logits_processor"] = answer_grammar.logits_processors(
                    constraint, model.generation_config, tokenizer, max_new_tokens
                )
            out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, **extra)
            decoded = processor.batch_decode(out, skip_special_tokens=False)
            texts += [
                composite_text(_clean(t), framing, v.source_size)
                for t, v in zip(decoded, views, strict=True)
            ]
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


def findings_on_image(findings: Sequence[Finding], image: Image.Image) -> list[Finding]:
    """Findings read on the canonical grid (:func:`parse`) with their boxes on ``image``'s pixels,
    where :func:`boxes_in_image` puts them: what an API report gives, beside what is drawn."""
    composite = view(image)  # the registration is remembered: no second search
    return [f if f.box is None else replace(f, box=composite.box_to_source(f.box))
            for f in findings]  # fmt: skip


def parse(text: str, image_size: tuple[int, int]) -> list[Finding]:
    """Findings from an ``<OD>`` output on a composite of ``image_size`` (square, >= 96 px).

    Each box of a known defect kind becomes a finding at the test product's pin under its
    centre; boxes over no pin (the reference panel, the labels), inverted boxes and unknown
    labels are dropped. OD labels carry no bend direction, so ``direction`` is ``None``.
    """
    return pin_findings(parse_boxes(text, image_size), image_size)


def pin_findings(
    boxes: Sequence[tuple[str, Box]], image_size: tuple[int, int], *, directions: bool = False
) -> list[Finding]:
    """Labelled boxes in the canonical composite of ``image_size`` as findings on the test grid.

    A box counts at the pin whose cell holds its centre (one finding per pin and kind, the
    first box kept). With ``directions``, a bent pin's direction is read from where its box
    lies around the pin: the displaced tip widens the box on that side only.
    """
    width, height = image_size
    if width != height:
        raise ValueError(f"OD findings need a square composite image, got {width} x {height}")
    layout = CompositeLayout(int(width))
    ox, oy = layout.origin("test")
    findings: dict[tuple, Finding] = {}
    for label, box in boxes:
        try:
            kind = DefectKind.parse(label)
        except ValueError:
            continue
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        position = layout.position_at(cx, cy)
        if position is None or box[2] <= box[0] or box[3] <= box[1]:
            continue
        direction = None
        if directions and kind.has_direction:
            px, py = layout.connector.pin_center(position)
            dx, dy = cx - px - ox, cy - py - oy
            if abs(dx) >= abs(dy):
                direction = Direction.RIGHT if dx > 0 else Direction.LEFT
            else:
                direction = Direction.DOWN if dy > 0 else Direction.UP
        findings.setdefault((position, kind), Finding(position, kind, direction, box))
    return sort_findings(findings.values())


def findings_in_image(
    boxes: Sequence[tuple[str, Box]], image: Image.Image, *, directions: bool = False
) -> list[Finding]:
    """Labelled boxes in ``image``'s pixels (e.g. an ``od`` row's truth ``objects``) as findings.

    Each box goes through the test product's registration into the canonical composite, where
    :func:`pin_findings` reads its pin: the truth positions an ``od`` row does not store.
    Finding boxes are canonical.
    """
    composite = view(image)
    regs = composite.registration
    if isinstance(regs, CompositeRegistration):
        boxes = [(label, regs.box_to_canonical(box, "test")) for label, box in boxes]
    return pin_findings(boxes, composite.image.size, directions=directions)


_CLEAN_BOXES = re.compile(
    "(?:(?:" + "|".join(re.escape(k.value) for k in DefectKind) + r")(?:<loc_\d{1,3}>){4})*"
)


def readable(text: str) -> bool:
    """Whether an ``<OD>`` output is a clean ``bbox_str``: nothing but the vocabulary's kind
    names, each followed by exactly four location tokens (the empty output, "no defect", is
    readable). Anything else (``bentbent pin<loc_0>...``) is unreadable: no verdict, never a pass.
    """
    return _CLEAN_BOXES.fullmatch(_clean(text)) is not None
