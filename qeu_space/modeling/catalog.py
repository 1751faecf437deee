"""What the model code offers, by name only: adapter scopes and the ViT presets.

Nothing here imports torch or transformers, so a command line can list these names in ``--help``
without loading any model code. :mod:`.families` builds on them: ``families.SCOPES`` is
:data:`SCOPES`, and ``families.vit.PRESETS`` has one config builder per name of
:data:`VIT_PRESETS` (tested).
"""

from __future__ import annotations

#: Parts of a model a LoRA can adapt: the language model, the vision tower + projector, or all.
SCOPES: tuple[str, ...] = ("language", "vision", "all")
#: ViT classifiers that start from random weights (``--task cls --base <preset>``).
VIT_PRESETS: tuple[str, ...] = ("vit-pins-scratch", "vit-tiny-scratch", "vit-test-tiny")
