"""Processors of the chat VLM families without their video part, and missing-package errors.

Qwen2-VL, Qwen2.5-VL, Qwen3-VL, SmolVLM2 and LLaVA-OneVision ship a video processor, which in
transformers 5 needs ``torchvision``; this project reads still images only. When the full
processor does not load (no torchvision), :func:`load_image_only` loads the same processor
class with its video part left out: the image processor (the PIL backend) and the tokenizer, so
prompts, image tokens and chat templates are exactly the released ones. A package that even
this path needs (SmolVLM2's processor insists on ``num2words``) is named in one line with the
command that installs it (:class:`MissingDependencyError`, a ``ValueError``: the command lines
print it and exit 2, the Space shows it in the model's panel).

Example:
    >>> from transformers import Qwen2VLProcessor
    >>> "video_processor" in image_only_class(Qwen2VLProcessor).get_attributes()
    False
"""

from __future__ import annotations

import functools
import inspect
import json
from pathlib import Path
from typing import Any

import transformers

#: Optional package -> the command that installs it (README "Model families").
INSTALL_COMMANDS: dict[str, str] = {
    "torchvision": 'pip install -r requirements-video.txt (or pip install ".[video]")',
    "num2words": "pip install num2words==0.5.14 (in requirements.txt)",
    "timm": "pip install timm",
    "einops": "pip install einops",
}


class MissingDependencyError(ValueError):
    """A model needs a package that is not installed; the message names it and its install."""


def missing_dependency(err: BaseException, what: str) -> MissingDependencyError | None:
    """The one-line error for ``err`` when it says a known optional package is missing."""
    text = str(err).lower()
    for package, command in INSTALL_COMMANDS.items():
        if package in text:
            return MissingDependencyError(f"{what} needs the package {package}: {command}")
    return None


def has_video_part(cls: type) -> bool:
    return "video_processor" in inspect.signature(cls.__init__).parameters


class NoVideoProcessor:
    """Stands where the video processor was left out: its settings read as ``None`` (SmolVLM2's
    chat template asks for ``num_frames`` even for an image), and using it says why not."""

    def __getattr__(self, name: str) -> None:
        if name.startswith("__"):
            raise AttributeError(name)
        return None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise MissingDependencyError(
            f"this processor was loaded without its video part; videos need the package "
            f"torchvision: {INSTALL_COMMANDS['torchvision']}"
        )


@functools.cache
def image_only_class(cls: type) -> type:
    """``cls`` (a processor class with a ``video_processor``) without its video part.

    transformers finds a processor's parts in its ``__init__`` signature (and the keyword
    arguments it loads from ``processor_config.json`` in the code's own parameter names), so
    the subclass gets a generated ``__init__`` with every parameter of ``cls`` but
    ``video_processor``, which passes ``video_processor=None`` on to ``cls``. It keeps the name
    of ``cls``, so a folder it saves loads with the full class where torchvision is installed.
    """
    base_init = cls.__init__
    params = [
        p
        for name, p in inspect.signature(base_init).parameters.items()
        if name not in ("self", "video_processor")
        and p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
    ]
    defaults = {p.name: None if p.default is p.empty else p.default for p in params}
    names = [p.name for p in params]
    source = (
        f"def __init__(self, {''.join(f'{n}=_defaults[{n!r}], ' for n in names)}**kwargs):\n"
        "    kwargs.pop('video_processor', None)\n"
        f"    _base_init(self, {''.join(f'{n}={n}, ' for n in names)}"
        "video_processor=None, **kwargs)\n"
    )
    scope: dict[str, Any] = {"_defaults": defaults, "_base_init": base_init}
    exec(source, scope)  # noqa: S102 - a fixed template over the parameter names of cls
    namespace = {
        "__init__": scope["__init__"],
        "__module__": __name__,
        "video_processor": NoVideoProcessor(),
    }
    return type(cls.__name__, (cls,), namespace)


def processor_class_name(name: str | Path) -> str | None:
    """``processor_class`` from a folder's ``processor_config.json`` (or tokenizer config)."""
    from transformers.utils import cached_file

    for filename in ("processor_config.json", "preprocessor_config.json", "tokenizer_config.json"):
        folder = Path(str(name))
        if folder.is_dir():
            path = folder / filename
            found = str(path) if path.is_file() else None
        else:
            found = cached_file(
                str(name),
                filename,
                _raise_exceptions_for_missing_entries=False,
                _raise_exceptions_for_connection_errors=False,
            )
        if found is None:
            continue
        with open(found, encoding="utf-8") as f:
            value = json.load(f).get("processor_class")
        if isinstance(value, str):
            return value
    return None


def load_image_only(name: str | Path, err: BaseException) -> Any:
    """The processor of ``name`` without its video part, after ``err`` refused the full one.

    Raises:
        MissingDependencyError: the image path needs a package that is missing too, or the
            processor has no video part and ``err`` named a missing package.
        Exception: ``err`` itself when neither applies (not a missing-package failure).
    """
    class_name = processor_class_name(name)
    cls = getattr(transformers, class_name, None) if class_name else None
    if cls is None or not has_video_part(cls):
        raise missing_dependency(err, f"the processor of {name}") or err
    try:
        return image_only_class(cls).from_pretrained(str(name))
    except ImportError as again:
        raise missing_dependency(again, f"the processor of {name}") or again from None
