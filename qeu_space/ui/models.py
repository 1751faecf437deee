"""The Space's models, loaded once at start, and the functions that run them (``spaces.GPU``).

Three optional models, all through :func:`qeu_space.modeling.loading.load_model`: the chat VLM with
its adapter (base vs fine-tuned answers on one loaded model), the ViT classifier of the test
connector (verdict, and the attention rollout of :mod:`qeu_space.modeling.attention`) and a
Florence-2 for ``<OD>`` boxes. A model that is not configured, whose folder is missing or that fails
to load leaves its slot empty with a one-line reason ("model not available: <name> (see README)");
an adapter whose file is unreadable or whose weights are not numbers a training could give (NaN,
infinite, astronomically large) is left out with its reason and the base answers alone. The app
still serves everything else, and never makes up an answer for an empty slot.

Visitors see model *names* (a folder's name, or its path inside the repository; a Hub id as
given), never the server's absolute paths: :func:`display_name`, :func:`public_text`.

The model functions are module-level and take only picklable arguments, because on ZeroGPU
``spaces.GPU`` runs them in a forked worker that inherits :data:`MODELS` and receives its
arguments by pickling.

Example:
    >>> load_models(AppSettings.from_env(), detect_device())
    >>> answers = answer_with_vlm(composite, tuned=True, max_new_tokens=64)
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import spaces
from PIL import Image

from qeu_space.modeling.devices import DeviceInfo
from qeu_space.ui.settings import REPO_ROOT, AppSettings
from qeu_space.vocabulary import Finding

logger = logging.getLogger(__name__)

README_HINT = "see README"
#: Largest absolute LoRA weight accepted: trained adapters stay around 1; random bytes read as
#: floats reach 1e38. Beyond this the adapter is left out as garbage.
ADAPTER_WEIGHT_LIMIT = 1e4
_ABSOLUTE_PATH = re.compile(r"(?<![\w.:/~-])/(?:[\w.+\-]+/)*[\w.+\-]+")


def display_name(name: str | None) -> str:
    """What visitors see of a model name: a folder inside the repository by its relative path
    (``models/vit-inspector``), another local folder by its own name, a Hub id as given."""
    if not name:
        return ""
    path = Path(name).expanduser()
    if not path.is_absolute() and not name.startswith((".", "~")):
        return name  # a Hub id (or already relative)
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return path.name or name


def public_text(text: str) -> str:
    """``text`` with every absolute path replaced by its :func:`display_name`."""
    return _ABSOLUTE_PATH.sub(lambda m: display_name(m.group(0)), text)


@dataclass
class ModelSlot:
    """One configured model: what was asked for, and either the loaded model or why not.

    Attributes:
        role: what the model does in the app (``chat VLM``, ``ViT``, ``Florence-2 OD``).
        name: the configured Hub id or folder, or ``None`` when not configured.
        loaded: the ``LoadedModel``, or ``None``.
        reason: why ``loaded`` is ``None`` (one line), or ``""``.
        adapter: the configured adapter (chat VLM / OD), or ``None``.
        adapter_reason: why the adapter is not in use, or ``""``.
    """

    role: str
    name: str | None
    loaded: Any = None
    reason: str = ""
    adapter: str | None = None
    adapter_reason: str = ""

    @property
    def available(self) -> bool:
        return self.loaded is not None

    @property
    def has_adapter(self) -> bool:
        return self.available and bool(getattr(self.loaded, "has_adapter", False))

    def status(self) -> str:
        """One line for the models panel (names, never server paths)."""
        if self.name is None:
            return f"{self.role}: not configured"
        if not self.available:
            return f"{self.role}: {self.reason}"
        line = f"{self.role}: `{display_name(self.name)}` loaded"
        if self.adapter and self.has_adapter:
            line += f" with adapter `{display_name(self.adapter)}`"
        elif self.adapter_reason:
            line += f"; {self.adapter_reason}"
        return line


@dataclass
class Models:
    """The loaded models of this process (see :data:`MODELS`)."""

    vlm: ModelSlot = field(default_factory=lambda: ModelSlot("chat VLM", None))
    vit: ModelSlot = field(default_factory=lambda: ModelSlot("ViT", None))
    od: ModelSlot = field(default_factory=lambda: ModelSlot("Florence-2 OD", None))
    device: DeviceInfo | None = None


#: The process's models: set by :func:`load_models`, read by the model functions (and inherited
#: by ZeroGPU's forked workers).
MODELS = Models()


def not_available(name: str, reason: str = "") -> str:
    extra = f"; {public_text(reason)}" if reason else ""
    return f"model not available: {display_name(name)} ({README_HINT}{extra})"


def _missing_folder(name: str) -> bool:
    """A name that is clearly a path (absolute, ``./``, ``~``) and does not exist: no Hub lookup."""
    path = Path(name).expanduser()
    return name.startswith((".", "/", "~")) and not path.exists()


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return public_text(text[0][:300]) if text else type(err).__name__


def adapter_weight_fault(model: Any) -> str | None:
    """Why the adapter weights of ``model`` cannot be a trained adapter's, or ``None``.

    Random bytes in ``adapter_model.safetensors`` load without complaint (the header is intact)
    and then make the model answer nothing; their values give them away: NaN, infinite, or far
    beyond :data:`ADAPTER_WEIGHT_LIMIT`.
    """
    import torch

    largest = 0.0
    with torch.no_grad():
        for name, weight in model.named_parameters():
            if "lora_" not in name:
                continue
            if not bool(torch.isfinite(weight).all()):
                return "its weights hold NaN or infinite values (a damaged file?)"
            largest = max(largest, float(weight.detach().abs().max()))
    if largest > ADAPTER_WEIGHT_LIMIT:
        return f"its weights reach {largest:.3g}, not values a training gives (a damaged file?)"
    return None


def load_models(settings: AppSettings, device: DeviceInfo) -> Models:
    """Load every configured model onto ``device``; failures become slot reasons, never raise."""
    models = Models(
        vlm=_load_slot("chat VLM", settings.base_model, settings.adapter, settings, device),
        vit=_load_slot("ViT", settings.vit_model, None, settings, device, family="vit"),
        od=_load_slot(
            "Florence-2 OD", settings.od_model, settings.od_adapter, settings, device, "florence2"
        ),
        device=device,
    )
    MODELS.vlm, MODELS.vit, MODELS.od, MODELS.device = models.vlm, models.vit, models.od, device
    for slot in (models.vlm, models.vit, models.od):
        logger.info("%s", slot.status())
    return models


def _load_slot(
    role: str,
    name: str | None,
    adapter: str | None,
    settings: AppSettings,
    device: DeviceInfo,
    family: str | None = None,
) -> ModelSlot:
    """One model through the project's single loading path (safetensors only, remote code only
    when allowed); ``family`` set means the model must be of that family."""
    from qeu_space.modeling.loading import load_model

    slot = ModelSlot(role, name, adapter=adapter)
    if name is None:
        return slot
    if _missing_folder(name):
        slot.reason = not_available(name)
        return slot
    use_adapter = adapter
    if adapter is not None and _missing_folder(adapter):
        slot.adapter_reason = f"adapter {not_available(adapter)}"
        use_adapter = None
    try:
        slot.loaded = load_model(
            name,
            use_adapter,
            trust_remote_code=settings.trust_remote_code,
            device=device.torch_device,
        )
    except Exception as err:  # noqa: BLE001 - any load failure leaves the slot empty, app runs
        if use_adapter is not None:  # the base may still load without its adapter
            slot.adapter_reason = f"adapter not used: {_first_line(err)}"
            try:
                slot.loaded = load_model(
                    name,
                    None,
                    trust_remote_code=settings.trust_remote_code,
                    device=device.torch_device,
                )
            except Exception as err2:  # noqa: BLE001
                slot.reason = not_available(name, _first_line(err2))
        else:
            slot.reason = not_available(name, _first_line(err))
    if slot.available and family is not None and slot.loaded.family != family:
        slot.reason = not_available(name, f"it is a {slot.loaded.family} model, not {family}")
        slot.loaded = None
    if slot.has_adapter:
        fault = adapter_weight_fault(slot.loaded.model)
        if fault is not None:
            slot.adapter_reason = f"adapter not used: {fault}"
            slot.loaded = replace(slot.loaded, model=slot.loaded.model.unload(), adapter=None)
    return slot


# --------------------------------------------------------------------------- model functions


def _family(loaded: Any) -> ModuleType:
    """The family module that prompts and parses ``loaded`` (its ``family`` names it)."""
    from qeu_space.modeling.families import FAMILIES

    return FAMILIES[loaded.family]


@dataclass(frozen=True)
class Answer:
    """One model's answer: its text and the findings read from it (boxes for ``<OD>`` output)."""

    text: str
    findings: tuple[Finding, ...]


@dataclass(frozen=True)
class VitVerdict:
    """The ViT's class probabilities and its attention map over the test connector (0..1)."""

    probabilities: dict[str, float]
    attention: np.ndarray

    @property
    def label(self) -> str:
        return max(self.probabilities, key=self.probabilities.get)


@spaces.GPU(duration=60)
def answer_with_vlm(composite: Image.Image, *, tuned: bool, max_new_tokens: int) -> Answer:
    """The chat VLM's answer to the inspection question, with the adapter on or off."""
    loaded = MODELS.vlm.loaded
    if loaded is None:
        raise RuntimeError(MODELS.vlm.reason or "no chat VLM configured")
    family = _family(loaded)
    if tuned and not loaded.has_adapter:
        raise RuntimeError("no adapter loaded")
    if tuned:
        text = family.generate(loaded, [composite], max_new_tokens=max_new_tokens)[0]
    else:
        with loaded.base_only():
            text = family.generate(loaded, [composite], max_new_tokens=max_new_tokens)[0]
    return Answer(text, tuple(family.parse(text, composite.size)))


@spaces.GPU(duration=60)
def detect_with_florence(composite: Image.Image, *, max_new_tokens: int) -> Answer:
    """Florence-2 ``<OD>`` boxes (adapter on when one is loaded)."""
    loaded = MODELS.od.loaded
    if loaded is None:
        raise RuntimeError(MODELS.od.reason or "no OD model configured")
    family = _family(loaded)
    text = family.generate(loaded, [composite], max_new_tokens=max_new_tokens)[0]
    return Answer(text, tuple(family.parse(text, composite.size)))


@spaces.GPU(duration=30)
def classify_with_vit(connector: Image.Image) -> VitVerdict:
    """The ViT's verdict on one connector image, and its attention rollout."""
    from qeu_space.modeling.attention import attention_rollout

    loaded = MODELS.vit.loaded
    if loaded is None:
        raise RuntimeError(MODELS.vit.reason or "no ViT configured")
    _, probabilities = _family(loaded).predict(loaded, [connector])[0]
    return VitVerdict(probabilities, attention_rollout(loaded, connector))
