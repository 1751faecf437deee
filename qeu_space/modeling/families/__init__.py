"""Model families: one module per family, all with the same few functions.

A family knows how its models are prompted and scored, never how they are loaded (that is one
path for all, :func:`qeu_space.modeling.loading.load_model`). Each module offers:

- ``NAME``, ``TASKS`` (dataset configs it trains on), ``BEST_METRIC`` (validation metric name);
- ``matches(model_type, config_dict) -> bool``;
- ``lora_target_modules(scope) -> str``: a PEFT ``target_modules`` regex over full module names
  for ``scope`` in :data:`SCOPES`;
- ``collate(processor, rows) -> BatchFeature``: a training batch whose ``labels`` hold -100 on
  every prompt, image and padding token;
- ``generate(loaded, images, *, max_new_tokens=64) -> list[str]``: greedy answers to the family's
  own prompt;
- ``parse(text, image_size) -> list[Finding]``: findings read back from one generated text.

Family extras: ``chat_vlm.scope_targets(model, scope)`` resolves a scope on a loaded model (every
linear layer of the part, and what is left out and why; training uses it where a family has it
and prints it); ``florence2.parse_boxes(text, image_size)`` gives the labelled pixel boxes (for
mAP), ``florence2.boxes_in_image(text, image)`` the same boxes where the product really is,
``florence2.findings_in_image(boxes, image)`` the pins of boxes given in an image's pixels (the
truth of ``od`` rows) and ``florence2.readable(text)`` whether an output is a well-formed
``bbox_str``; ``chat_vlm.generate(..., question=...)`` asks another question than the
inspection one. Families that frame the image by the model's ``qeu_framing`` offer
``collate_options(model_config)`` (the training collator's keyword arguments).
Both ``generate`` functions also take ``batch_size`` (default 8) and ``grammar`` (default on:
generation under the answer / ``<OD>`` grammar of :mod:`qeu_space.modeling.answer_grammar`).
The ``vit`` classifier (``cls`` task) answers with a class label: ``vit.predict(loaded,
images)`` gives labels and probabilities, its ``generate`` the label alone; it names its
transformers auto class in ``AUTO_CLASS`` and can start from random weights
(``scratch_config(base)``, see :func:`scratch_base`).

The registry is this explicit dict; nothing registers itself on import.

Example:
    >>> family_for({"model_type": "florence2"}).NAME
    'florence2'
"""

from __future__ import annotations

from collections.abc import Mapping
from types import ModuleType
from typing import Any

from qeu_space.modeling.catalog import SCOPES
from qeu_space.modeling.families import chat_vlm, florence2, vit

#: Family name -> module. Order matters: the first family whose ``matches`` accepts a model wins.
FAMILIES: dict[str, ModuleType] = {
    florence2.NAME: florence2,
    chat_vlm.NAME: chat_vlm,
    vit.NAME: vit,
}


__all__ = ["FAMILIES", "SCOPES", "UnknownFamilyError", "family_for", "scratch_base"]


class UnknownFamilyError(ValueError):
    """The model is none of the families this project trains and runs."""


def family_for(model_or_config: Any) -> ModuleType:
    """The family module of a model, a ``PeftModel``, a ``LoadedModel``, a config or a config dict.

    Raises:
        UnknownFamilyError: when no family accepts the model type.
    """
    config = _config_dict(model_or_config)
    model_type = str(config.get("model_type") or "")
    for module in FAMILIES.values():
        if module.matches(model_type, config):
            return module
    raise UnknownFamilyError(
        f"model type {model_type or '(none)'!r} is not a supported family: use a native "
        "Florence-2 (model_type 'florence2') or an image-text-to-text chat VLM such as "
        "SmolVLM / Idefics3, or a ViT classifier (model_type 'vit')"
    )


def scratch_base(base: Any) -> tuple[ModuleType, Any] | None:
    """``(family, scratch config)`` when ``base`` is a config to train from random weights.

    Only families with a ``scratch_config`` function (the ViT) start from scratch: a preset
    name or a weightless config folder. ``None`` means: load ``base`` as a model.
    """
    for module in FAMILIES.values():
        make = getattr(module, "scratch_config", None)
        scratch = make(base) if make is not None else None
        if scratch is not None:
            return module, scratch
    return None


def _config_dict(obj: Any) -> Mapping[str, Any]:
    if isinstance(obj, Mapping):
        return obj
    if hasattr(obj, "family") and hasattr(obj, "processor") and hasattr(obj, "model"):
        obj = obj.model  # a LoadedModel
    config = getattr(obj, "config", obj)  # a model (PeftModel forwards .config) or a config
    if hasattr(config, "to_dict"):
        return config.to_dict()
    raise TypeError(f"cannot tell the model family of a {type(obj).__name__}")
