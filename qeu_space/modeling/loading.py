"""One loading path for every model: ``(base id or folder, adapter id or folder | None)``.

Training, evaluation, the adapter tools and the Space all load through :func:`load_model`, so
the safety rules hold everywhere: weights come from safetensors only, remote code runs only when
the caller turns it on for the model it names, and an adapter is refused (with the base it was
trained for in the message) when it belongs to another base.

Base vs fine-tuned on one loaded model: when an adapter is given, ``loaded.model`` is a
``peft.PeftModel`` and the base answers inside ``with loaded.model.disable_adapter(): ...``;
:meth:`LoadedModel.base_only` does the same and is a no-op without an adapter. Several adapters
share one base through PEFT's named adapters: :func:`add_adapter` loads each under its own name
(the same checks as :func:`load_model`), and ``loaded.model.set_adapter(name)`` picks the one
that answers.

Example:
    >>> loaded = load_model("tiny/florence2", "runs/od-lora")
    >>> family = family_for(loaded.model)
    >>> tuned = family.generate(loaded, images)
    >>> with loaded.base_only():
    ...     base = family.generate(loaded, images)
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
import transformers
from huggingface_hub import hf_hub_download
from peft import PeftModel, get_peft_model_state_dict
from safetensors import safe_open
from transformers import (
    AutoModelForCausalLM,
    AutoModelForImageTextToText,
    AutoProcessor,
    PretrainedConfig,
)
from transformers.utils import cached_file

from qeu_space.modeling.families import family_for
from qeu_space.modeling.loaded import LoadedModel
from qeu_space.modeling.processors import MissingDependencyError, load_image_only
from qeu_space.views.shipped import PROCESSOR_CONFIGS, STANDARD_CLASSES, shipped_class

__all__ = [
    "ADAPTER_WEIGHTS",
    "AdapterMismatchError",
    "MissingDependencyError",
    "LoadedModel",
    "RemoteCodeError",
    "UnsafeWeightsError",
    "adapter_weights_file",
    "add_adapter",
    "default_device",
    "load_model",
    "load_processor",
    "read_config",
    "same_base",
    "trained_for",
]

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"


class RemoteCodeError(ValueError):
    """The model's config asks for code from its repository and the caller did not allow it."""


class AdapterMismatchError(ValueError):
    """The adapter was trained for another base model, or its tensors do not fit this one."""


class UnsafeWeightsError(ValueError):
    """Weights are only available as pickles (``.bin``); this project loads safetensors only."""


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def _default_dtype(device: str) -> torch.dtype:
    if device.startswith("cuda") and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def read_config(base: str | Path, *, trust_remote_code: bool = False) -> dict[str, Any]:
    """The base's ``config.json`` as a dict, refusing remote code unless it is allowed.

    Raises:
        FileNotFoundError: ``base`` looks like a path but is not a folder, or is a Hub id that
            cannot be read (unknown, or not cached without network).
        RemoteCodeError: the config has an ``auto_map`` (code shipped with the model) and
            ``trust_remote_code`` is off.
    """
    name = str(base)
    if _looks_like_path(name) and not Path(name).is_dir():
        raise FileNotFoundError(f"base model folder {name!r} does not exist")
    try:
        config, _ = PretrainedConfig.get_config_dict(name)
    except OSError as err:  # not on the Hub, not in its cache, or no network: one line says so
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise FileNotFoundError(
            f"base model {name!r} is neither a folder nor a Hub model this machine can read "
            f"({reason})"
        ) from None
    auto_map = config.get("auto_map")
    if auto_map and not trust_remote_code:
        classes = ", ".join(sorted(auto_map)) if isinstance(auto_map, dict) else str(auto_map)
        raise RemoteCodeError(
            f"{name} needs code from its repository (config.json auto_map: {classes}); pass "
            "--trust-remote-code (trust_remote_code=True) only if you trust that code"
        )
    return config


def load_model(
    base: str | Path,
    adapter: str | Path | None = None,
    *,
    trust_remote_code: bool = False,
    device: str | None = None,
    dtype: torch.dtype | None = None,
) -> LoadedModel:
    """Load a base model (Hub id or local folder) and, optionally, a PEFT adapter on top.

    Hub ids are only fetched when the caller names them; tests pass folders. Weights load with
    ``use_safetensors=True`` (a ``.bin``-only model or adapter is refused). The model is put in
    eval mode on ``device``.

    Args:
        base: Hub id (``"florence-community/Florence-2-base"``) or folder of the base model; a
            fully fine-tuned output folder is a base too.
        adapter: Hub id or folder holding ``adapter_config.json`` + ``adapter_model.safetensors``.
        trust_remote_code: allow code shipped with the model (configs with ``auto_map``, such
            as Phi-3-vision); off unless the user turns it on for a model they name.
        device: ``"cpu"``, ``"cuda"``, ...; default CUDA when available, else CPU.
        dtype: weight dtype; default bfloat16 on a CUDA device that supports it, else float32.

    Returns:
        A :class:`LoadedModel`; ``family_for(loaded.model)`` is its family module.

    Raises:
        RemoteCodeError: the config needs remote code and ``trust_remote_code`` is off.
        UnknownFamilyError: the model is none of Florence-2, a chat VLM or a ViT classifier.
        AdapterMismatchError: the adapter names another base, or its tensors do not fit.
        UnsafeWeightsError: only pickled weights are available.
    """
    base_name = str(base)
    config = read_config(base_name, trust_remote_code=trust_remote_code)
    family = family_for(config)
    adapter_name = str(adapter) if adapter is not None else None
    if adapter_name is not None:
        _check_adapter_base(adapter_name, base_name)
    device = device or default_device()
    dtype = dtype or _default_dtype(device)
    _check_safetensors(base_name)

    # The processor first: a package it needs and lacks is named before the weights load.
    processor = load_processor(base_name, trust_remote_code=trust_remote_code)
    model_class = _model_class(config, trust_remote_code, family)
    model = model_class.from_pretrained(
        base_name, use_safetensors=True, trust_remote_code=trust_remote_code, dtype=dtype
    )
    if adapter_name is not None:
        model = _attach_adapter(model, adapter_name, base_name)
    model.to(device)
    model.eval()
    return LoadedModel(model, processor, family.NAME, base_name, adapter_name, device)


def add_adapter(loaded: LoadedModel, adapter: str | Path, name: str) -> LoadedModel:
    """Load one more PEFT adapter into ``loaded``'s model, under the adapter name ``name``.

    The first adapter wraps the base in a ``peft.PeftModel``; later ones join it
    (``PeftModel.load_adapter``), so every adapter shares the base's weights in memory. The
    checks are :func:`load_model`'s: the adapter must name this base, its weights must be
    safetensors and every saved tensor must fit a module here. The active adapter is left as it
    was (the first one loaded); ``loaded.model.set_adapter(name)`` switches, and
    ``loaded.base_only()`` turns all of them off.

    Args:
        loaded: a model from :func:`load_model` (with or without adapters).
        adapter: Hub id or folder of the adapter.
        name: PEFT adapter name (letters, digits, ``_``; unique in this model; ``.`` is not
            allowed by torch's module names).

    Returns:
        ``loaded`` with ``model`` the ``PeftModel`` (``adapter`` stays the first adapter's).

    Raises:
        AdapterMismatchError: the adapter names another base, or its tensors do not fit. The
            model may then hold a half-loaded adapter: load the base again rather than use it.
        UnsafeWeightsError: only pickled weights are available.
        ValueError: ``name`` is already loaded.
    """
    adapter_name = str(adapter)
    if isinstance(loaded.model, PeftModel) and name in loaded.model.peft_config:
        raise ValueError(f"an adapter named {name!r} is already loaded")
    _check_adapter_base(adapter_name, loaded.base)
    if (
        isinstance(loaded.model, PeftModel)
        and _holds_trainable_tokens(loaded.model)
        and not has_trainable_tokens(adapter_name)
    ):
        # PEFT 0.21 then looks for this adapter's token rows and fails with a KeyError
        raise AdapterMismatchError(
            f"adapter {adapter_name} has no trainable tokens but an adapter with them is already "
            "loaded; load adapters without trainable tokens first (the Space does)"
        )
    active = loaded.model.active_adapter if isinstance(loaded.model, PeftModel) else None
    model = _attach_adapter(loaded.model, adapter_name, loaded.base, name)
    if active is not None:
        model.set_adapter(active)
    model.to(loaded.device)
    model.eval()
    return replace(loaded, model=model, adapter=loaded.adapter or adapter_name)


def adapter_weights_file(adapter: str | Path) -> str:
    """The local path of an adapter's ``adapter_model.safetensors`` (a Hub id's cached copy)."""
    return _adapter_file(str(adapter), ADAPTER_WEIGHTS)


def load_processor(name: str | Path, *, trust_remote_code: bool = False) -> Any:
    """The processor of a model (Hub id or folder).

    A model that ships this project's own processor (``processing_qeu.py``, named in its
    processor config's ``auto_map``: :mod:`qeu_space.hub.processor`) is read with the standard
    transformers class that processor extends: the library registers and frames every image
    itself (keeping the view to map boxes back), so the shipped code never runs here and no
    image is framed twice. Anything else loads through ``AutoProcessor``.

    Raises:
        ValueError: the model ships a processor class this version does not know.
        MissingDependencyError: the processor needs a package that is not installed (one line
            naming it and its install command; a video part alone is left out instead).
    """
    name = str(name)
    for filename in PROCESSOR_CONFIGS:
        config = _json_file(name, filename)
        shipped = shipped_class(config) if config is not None else None
        if shipped is None:
            continue
        if shipped not in STANDARD_CLASSES:
            raise ValueError(
                f"{name} ships processor {shipped!r}, which this version of qeu_space does not "
                f"know (known: {', '.join(STANDARD_CLASSES)}); upgrade qeu_space"
            )
        return getattr(transformers, STANDARD_CLASSES[shipped]).from_pretrained(name)
    try:
        return AutoProcessor.from_pretrained(name, trust_remote_code=trust_remote_code)
    except (ImportError, OSError) as err:
        # The video part of Qwen2-VL / SmolVLM2 / LLaVA-OneVision needs torchvision (not
        # installed, or not saved in a folder made without it): images need only the rest.
        return load_image_only(name, err)


def _json_file(name: str, filename: str) -> dict[str, Any] | None:
    """``filename`` of a folder or Hub repo as a dict, or ``None`` when it has none."""
    folder = Path(name)
    if folder.is_dir():
        path: str | None = str(folder / filename) if (folder / filename).is_file() else None
    else:
        path = cached_file(
            name,
            filename,
            _raise_exceptions_for_missing_entries=False,
            _raise_exceptions_for_connection_errors=False,
        )
    if path is None:
        return None
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    return data if isinstance(data, dict) else None


def _looks_like_path(name: str) -> bool:
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or Path(name).exists()


def _model_class(config: dict[str, Any], trust_remote_code: bool, family: ModuleType) -> type:
    family_class = getattr(family, "AUTO_CLASS", None)  # e.g. the ViT classifier's
    if family_class is not None:
        return family_class
    auto_map = config.get("auto_map") or {}
    if trust_remote_code and isinstance(auto_map, dict) and auto_map:
        if "AutoModelForImageTextToText" not in auto_map and "AutoModelForCausalLM" in auto_map:
            return AutoModelForCausalLM  # e.g. Phi-3-vision registers only a causal-LM class
    return AutoModelForImageTextToText


def _check_safetensors(name: str) -> None:
    folder = Path(name)
    if not folder.is_dir():
        return  # a Hub id: from_pretrained(use_safetensors=True) refuses pickles itself
    if any(folder.glob("*.safetensors")):
        return
    if any(folder.glob("*.bin")) or any(folder.glob("*.pt")):
        raise UnsafeWeightsError(
            f"{name} has weights only as pickles (.bin/.pt); convert them to safetensors "
            "(this project never unpickles weights)"
        )


def _adapter_file(adapter: str, filename: str) -> str:
    folder = Path(adapter)
    if folder.is_dir():
        path = folder / filename
        if not path.is_file():
            hint = (
                "; a fully fine-tuned model loads as the base, not as an adapter"
                if filename == ADAPTER_CONFIG and (folder / "config.json").is_file()
                else ""
            )
            if filename == ADAPTER_WEIGHTS and any(folder.glob("adapter_model.bin")):
                raise UnsafeWeightsError(
                    f"adapter {adapter} has only adapter_model.bin (a pickle); save it as "
                    "safetensors (peft's default)"
                )
            raise FileNotFoundError(f"adapter folder {adapter} has no {filename}{hint}")
        return str(path)
    if _looks_like_path(adapter):
        raise FileNotFoundError(f"adapter folder {adapter!r} does not exist")
    return hf_hub_download(adapter, filename)


def has_trainable_tokens(adapter: str | Path) -> bool:
    """Whether an adapter trains embedding rows beside its LoRA (``trainable_token_indices``,
    ``train --new-words``); an unreadable config counts as no."""
    try:
        with open(_adapter_file(str(adapter), ADAPTER_CONFIG), encoding="utf-8") as f:
            return bool(json.load(f).get("trainable_token_indices"))
    except (OSError, ValueError):
        return False


def _holds_trainable_tokens(model: Any) -> bool:
    return any(type(m).__name__ == "TrainableTokensWrapper" for m in model.modules())


def trained_for(adapter: str | Path) -> str | None:
    """The base an adapter was trained on (``base_model_name_or_path`` of its config)."""
    with open(_adapter_file(str(adapter), ADAPTER_CONFIG), encoding="utf-8") as f:
        return json.load(f).get("base_model_name_or_path")


def _check_adapter_base(adapter: str, base: str) -> None:
    recorded = trained_for(adapter)
    if recorded and not same_base(recorded, base):
        raise AdapterMismatchError(
            f"adapter {adapter} was trained for base {recorded!r}, not {base!r}; "
            f"load it with the base {recorded!r}"
        )


def same_base(recorded: str, base: str) -> bool:
    """Whether an adapter's recorded base and the given base name the same model.

    Equal names, the same local folder, or a Hub id ``org/name`` and a local copy of it (a
    folder called ``name`` or a Hub cache snapshot of ``org/name``).
    """
    if recorded == base:
        return True
    a, b = Path(recorded).expanduser(), Path(base).expanduser()
    if a.exists() and b.exists():
        return a.resolve() == b.resolve()
    for hub_id, local in ((recorded, b), (base, a)):
        if local.exists() and not Path(hub_id).exists() and hub_id.count("/") == 1:
            resolved = local.resolve()
            cache_name = "models--" + hub_id.replace("/", "--")
            if resolved.name == hub_id.split("/")[1] or cache_name in resolved.parts:
                return True
    return False


def _attach_adapter(model: Any, adapter: str, base: str, name: str = "default") -> PeftModel:
    weights = _adapter_file(adapter, ADAPTER_WEIGHTS)
    recorded = trained_for(adapter) or "an unrecorded base"
    try:
        if isinstance(model, PeftModel):
            model.load_adapter(adapter, adapter_name=name, is_trainable=False)
            peft_model = model
        else:
            peft_model = PeftModel.from_pretrained(
                model, adapter, adapter_name=name, is_trainable=False
            )
    except (RuntimeError, ValueError, KeyError) as err:
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        mismatch = [line for line in lines if "size mismatch" in line]
        reason = (mismatch or lines or [type(err).__name__])[0]
        raise AdapterMismatchError(
            f"adapter {adapter} (trained for {recorded}) does not fit base {base}: {reason}"
        ) from None
    expected = {
        k: tuple(v.shape)
        for k, v in get_peft_model_state_dict(
            peft_model, adapter_name=name, save_embedding_layers=False
        ).items()
    }
    with safe_open(weights, framework="pt") as f:
        saved = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
    missing = sorted(k for k in saved if _strip_adapter_name(k) not in _stripped(expected))
    if missing:
        raise AdapterMismatchError(
            f"adapter {adapter} (trained for {recorded}) does not fit base {base}: "
            f"{len(missing)} adapter tensors have no module here (e.g. {missing[0]})"
        )
    return peft_model


def _strip_adapter_name(key: str) -> str:
    return key.replace(".default.", ".").replace(".default", "")


def _stripped(keys: dict[str, tuple]) -> set[str]:
    return {_strip_adapter_name(k) for k in keys}
