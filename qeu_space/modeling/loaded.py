"""A loaded model: the plain dataclass that :func:`.loading.load_model` returns.

It lives apart from :mod:`.loading` so that imports run one way: the families take and build it
(``vit.new_model``) without importing the loading path, which imports them. Its family module is
``FAMILIES[loaded.family]`` (:data:`qeu_space.modeling.families.FAMILIES`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class LoadedModel:
    """A model ready to generate, with what is needed to prompt it and to say what it is.

    Attributes:
        model: the transformers model, or a ``peft.PeftModel`` wrapping it when ``adapter`` is set.
        processor: its ``AutoProcessor`` (tokenizer, image processor, chat template).
        family: key of :data:`qeu_space.modeling.families.FAMILIES` (``"florence2"``,
            ``"chat_vlm"``, ``"vit"``).
        base: the base id or folder as given.
        adapter: the adapter id or folder as given (the first one when
            :func:`.loading.add_adapter` loaded several under their names), or ``None``.
        device: where the weights are (``"cpu"``, ``"cuda"``, ``"cuda:1"``).
    """

    model: Any
    processor: Any
    family: str
    base: str
    adapter: str | None
    device: str

    @property
    def has_adapter(self) -> bool:
        from peft import PeftModel

        return isinstance(self.model, PeftModel)

    @contextlib.contextmanager
    def base_only(self) -> Iterator[None]:
        """Run the base model: ``disable_adapter()`` with adapters (all of them are off inside),
        nothing without one."""
        if self.has_adapter:
            with self.model.disable_adapter():
                yield
        else:
            yield
