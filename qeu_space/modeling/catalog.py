"""What the model code offers, by name only: adapter scopes, the ViT presets, embedded models.

Nothing here imports torch or transformers, so a command line can list these names in ``--help``
without loading any model code. :mod:`.families` builds on them: ``families.SCOPES`` is
:data:`SCOPES`, and ``families.vit.PRESETS`` has one config builder per name of
:data:`VIT_PRESETS` (tested).
"""

from __future__ import annotations

import os
from pathlib import Path

#: Parts of a model a LoRA can adapt: the language model, the vision tower + projector, or all.
SCOPES: tuple[str, ...] = ("language", "vision", "all")
#: ViT classifiers that start from random weights (``--task cls --base <preset>``).
VIT_PRESETS: tuple[str, ...] = (
    "vit-pins-scratch",
    "vit-tiny-scratch",
    "vit-test-tiny",
    "vit-pair-scratch",
    "vit-pair-test-tiny",
)
#: Models shipped with the project (folders of the models directory), the Space's defaults.
EMBEDDED_MODELS: tuple[str, ...] = (
    "inspection-vlm-base",
    "inspection-vlm-lora",
    "inspection-vlm-short-pin",
    "vit-inspector",
    "inspection-od-base",
    "inspection-od-lora",
)
#: Names another folder of embedded models (same folder names), e.g. retrained copies.
MODELS_DIR_ENV = "QEU_MODELS_DIR"


def models_dir() -> Path:
    """The folder holding the embedded models, wherever the project runs from.

    ``$QEU_MODELS_DIR`` when set; else ``models/`` of the repository this code runs from (a
    checkout, or an editable install); else the copy ``pip install .`` put beside the package
    (``qeu_space/embedded_models``, package data).

    Raises:
        FileNotFoundError: ``$QEU_MODELS_DIR`` names no folder, or none of the places has one.
    """
    named = os.environ.get(MODELS_DIR_ENV, "").strip()
    if named:
        path = Path(named).expanduser()
        if not path.is_dir():
            raise FileNotFoundError(f"{MODELS_DIR_ENV}={named} is not a folder")
        return path.resolve()
    package = Path(__file__).resolve().parents[1]
    for candidate in (package.parent / "models", package / "embedded_models"):
        if any((candidate / name / "config.json").is_file() for name in EMBEDDED_MODELS):
            return candidate
    raise FileNotFoundError(
        "no embedded models found: reinstall the package (pip install .) or set "
        f"{MODELS_DIR_ENV} to a folder holding {', '.join(EMBEDDED_MODELS)}"
    )


def embedded_model(name: str) -> Path:
    """The folder of one embedded model (:data:`EMBEDDED_MODELS`), see :func:`models_dir`.

    Example:
        >>> embedded_model("vit-inspector").name
        'vit-inspector'
    """
    if name not in EMBEDDED_MODELS:
        raise ValueError(f"unknown embedded model {name!r}; known: {', '.join(EMBEDDED_MODELS)}")
    return models_dir() / name
