"""The Space's models, loaded once at start, and the functions that run them (``spaces.GPU``).

Three optional models, all through :func:`qeu_space.modeling.loading.load_model`: the chat VLM with
its named adapters (``QEU_ADAPTERS``: base and fine-tuned answers on one loaded model, each adapter
loaded once with :func:`~qeu_space.modeling.loading.add_adapter` and chosen per call with PEFT's
``set_adapter``), the ViT classifier of the test connector (verdict, and the attention rollout of
:mod:`qeu_space.modeling.attention`) and a Florence-2 for ``<OD>`` boxes. A model that is not
configured, whose folder is missing or that fails to load leaves its slot empty with a one-line
reason ("model not available: <name> (see README)"); an adapter whose file is unreadable, whose
weights are not numbers a training could give (NaN, infinite, astronomically large) or that does
not fit the base is left out with its reason, and the base and the other adapters still answer.
The app still serves everything else, and never makes up an answer for an empty slot.

Which adapter is active is state of the one loaded model, so choosing it and generating with it
happen under one lock (:data:`VLM_LOCK`): chat VLM calls run one at a time whatever
``QEU_MODEL_CONCURRENCY`` lets run beside them (SOARTC, the ViT).

Visitors see model *names* (a folder's name, or its path inside the repository; a Hub id as
given), never the server's absolute paths: :func:`display_name`, :func:`public_text`.

The model functions are module-level and take only picklable arguments, because on ZeroGPU
``spaces.GPU`` runs them in a forked worker that inherits :data:`MODELS` and receives its
arguments by pickling. On the CPU the models live in a model worker process by default
(:mod:`qeu_space.ui.worker`, ``QEU_MODEL_WORKER``): :func:`use_worker` makes every model function
send its call there, so that no model call holds the web server's GIL; the worker runs the very
same functions in-process (one code path).

Example:
    >>> load_models(AppSettings.from_env(), detect_device())
    >>> tuned = answer_with_vlm(composite, adapter="latched", max_new_tokens=64)
    >>> base = answer_with_vlm(composite, adapter=None, max_new_tokens=64)
"""

from __future__ import annotations

import functools
import logging
import re
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np
import spaces
from PIL import Image

from qeu_space.modeling.devices import DeviceInfo
from qeu_space.ui.settings import REPO_ROOT, AppSettings
from qeu_space.vocabulary import Finding

if TYPE_CHECKING:
    from qeu_space.ui.worker import ModelWorker

logger = logging.getLogger(__name__)

README_HINT = "see README"
#: Largest absolute LoRA weight accepted: trained adapters stay around 1; random bytes read as
#: floats reach 1e38. Beyond this the adapter is left out as garbage.
ADAPTER_WEIGHT_LIMIT = 1e4
#: Seconds a thread holds the GIL before one waiting for it gets it (see limit_model_threads).
GIL_SWITCH_S = 0.0002
#: Held while a chat VLM call chooses its adapter and generates (see the module docstring).
VLM_LOCK = threading.Lock()
_ABSOLUTE_PATH = re.compile(r"(?<![\w.:/~-])/(?:[\w.+\-]+/)*[\w.+\-]+")


def limit_model_threads(threads: int) -> int:
    """Bound the CPU threads torch uses for model calls (process-wide), so that a running model
    leaves a core to ``/feedback`` and ``/soartc``; returns the bound in force.

    Why: torch's default is one thread per core, and twenty queued inspections then keep every
    core busy; the light endpoints wait for CPU although their queue lanes are free.
    """
    import torch

    threads = max(1, int(threads))
    # A model call holds the GIL between torch ops; a light request waits for it up to the switch
    # interval at each of its many hand-overs (5 ms by default): 0.2 ms lets it in sooner.
    sys.setswitchinterval(min(sys.getswitchinterval(), GIL_SWITCH_S))
    torch.set_num_threads(threads)
    try:  # only possible before the first parallel work; later the default (cores) stays
        torch.set_num_interop_threads(threads)
    except RuntimeError:
        pass
    return torch.get_num_threads()


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
class AdapterSlot:
    """One named adapter of the chat VLM (``QEU_ADAPTERS``): in use, or why not.

    Attributes:
        name: its name in the Space (the picker, ``/inspect``'s ``adapter``).
        source: the configured Hub id or folder.
        peft_name: its adapter name inside the PEFT model (``qeu_adapter_00``, ...: never a
            visitor's text, and no name a prefix of another).
        reason: why it is not in use (one line), or ``""``.
    """

    name: str
    source: str
    peft_name: str
    reason: str = ""

    @property
    def in_use(self) -> bool:
        return not self.reason

    def status(self) -> str:
        """One line (names, never server paths)."""
        if self.in_use:
            return f"adapter `{self.name}` (`{display_name(self.source)}`) in use"
        return f"adapter `{self.name}` (`{display_name(self.source)}`) not in use: {self.reason}"


@dataclass
class ModelSlot:
    """One configured model: what was asked for, and either the loaded model or why not.

    Attributes:
        role: what the model does in the app (``chat VLM``, ``ViT``, ``Florence-2 OD``).
        name: the configured Hub id or folder, or ``None`` when not configured.
        loaded: the ``LoadedModel``, or ``None``.
        reason: why ``loaded`` is ``None`` (one line), or ``""``.
        adapter: the configured adapter (the OD model's), or ``None``.
        adapter_reason: why the adapter is not in use, or ``""``.
        adapters: the chat VLM's named adapters, in the configured order.
    """

    role: str
    name: str | None
    loaded: Any = None
    reason: str = ""
    adapter: str | None = None
    adapter_reason: str = ""
    adapters: list[AdapterSlot] = field(default_factory=list)

    def named(self, name: str) -> AdapterSlot | None:
        """The adapter called ``name``, or ``None``."""
        return next((a for a in self.adapters if a.name == name), None)

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
        for adapter in self.adapters:
            line += f"; {adapter.status()}"
        return line


@dataclass(frozen=True)
class RemoteModel:
    """A model loaded in the model worker, as the web process sees it: what it is (for the
    status lines and the ViT's legend), never its weights."""

    family: str
    base: str
    adapter: str | None
    device: str
    has_adapter: bool
    labels: tuple[str, ...] = ()
    channels: int = 3

    @classmethod
    def of(cls, loaded: Any) -> RemoteModel:
        return cls(
            loaded.family,
            str(loaded.base),
            None if loaded.adapter is None else str(loaded.adapter),
            loaded.device,
            loaded.has_adapter,
            class_labels(loaded) or (),
            input_channels(loaded),
        )


def input_channels(loaded: Any) -> int:
    """Image channels a vision model reads (6: a pair ViT, reference then test; else 3)."""
    if isinstance(loaded, RemoteModel):
        return loaded.channels
    return int(getattr(loaded.model.config, "num_channels", 3) or 3)


def class_labels(loaded: Any) -> tuple[str, ...] | None:
    """A classifier's class names in index order (``id2label``), or ``None`` for no model."""
    if loaded is None:
        return None
    if isinstance(loaded, RemoteModel):
        return loaded.labels
    id2label = getattr(loaded.model.config, "id2label", None) or {}
    return tuple(id2label[i] for i in sorted(id2label))


@dataclass
class Models:
    """The loaded models of this process (see :data:`MODELS`)."""

    vlm: ModelSlot = field(default_factory=lambda: ModelSlot("chat VLM", None))
    vit: ModelSlot = field(default_factory=lambda: ModelSlot("ViT", None))
    od: ModelSlot = field(default_factory=lambda: ModelSlot("Florence-2 OD", None))
    device: DeviceInfo | None = None
    grammar: bool = True  # answers under the answer / <OD> grammar (QEU_ANSWER_GRAMMAR)
    worker: bool = False  # the models run in the model worker process (QEU_MODEL_WORKER)

    def remote(self) -> Models:
        """These models as the web process sees them when the worker holds them (picklable)."""

        def slot(s: ModelSlot) -> ModelSlot:
            loaded = None if s.loaded is None else RemoteModel.of(s.loaded)
            adapters = [replace(a) for a in s.adapters]
            return replace(s, loaded=loaded, adapters=adapters)

        return replace(self, vlm=slot(self.vlm), vit=slot(self.vit), od=slot(self.od), worker=True)


#: The process's models: set by :func:`load_models`, read by the model functions (and inherited
#: by ZeroGPU's forked workers).
MODELS = Models()
#: The model worker the model functions send their calls to, or ``None``: they run here.
WORKER: ModelWorker | None = None


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


def weights_file_fault(path: str) -> str | None:
    """Why an adapter's safetensors file cannot be a trained adapter's, or ``None``: the same
    test as :func:`adapter_weight_fault`, read from the file before anything is loaded (so a
    damaged adapter never touches the model the other adapters share). A file cut short raises
    safetensors' own error."""
    import torch
    from safetensors import safe_open

    largest = 0.0
    with safe_open(path, framework="pt") as f:
        for key in f.keys():  # noqa: SIM118 - safe_open is not a mapping
            tensor = f.get_tensor(key)
            if not tensor.is_floating_point() or tensor.numel() == 0:
                continue
            if not bool(torch.isfinite(tensor).all()):
                return "its weights hold NaN or infinite values (a damaged file?)"
            largest = max(largest, float(tensor.abs().max()))
    if largest > ADAPTER_WEIGHT_LIMIT:
        return f"its weights reach {largest:.3g}, not values a training gives (a damaged file?)"
    return None


def load_models(settings: AppSettings, device: DeviceInfo) -> Models:
    """Load every configured model onto ``device``; failures become slot reasons, never raise."""
    models = Models(
        vlm=_load_vlm(settings, device),
        vit=_load_slot("ViT", settings.vit_model, None, settings, device, family="vit"),
        od=_load_slot(
            "Florence-2 OD", settings.od_model, settings.od_adapter, settings, device, "florence2"
        ),
        device=device,
        grammar=settings.answer_grammar,
    )
    use_models(models)
    for slot in (models.vlm, models.vit, models.od):
        logger.info("%s", slot.status())
    return models


def use_models(models: Models) -> None:
    """Make ``models`` the ones the model functions run (:data:`MODELS`), in this process."""
    global WORKER
    WORKER = None
    MODELS.vlm, MODELS.vit, MODELS.od, MODELS.device, MODELS.grammar, MODELS.worker = (
        models.vlm,
        models.vit,
        models.od,
        models.device,
        models.grammar,
        models.worker,
    )


def use_worker(worker: ModelWorker) -> Models:
    """Send every model call to ``worker``; returns its models as this process sees them."""
    global WORKER
    use_models(worker.models)
    WORKER = worker
    return worker.models


def _in_worker(fn):
    """Run the model function in :data:`WORKER` when there is one, else here (the worker itself
    runs it here: one code path)."""

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        worker = WORKER
        if worker is None:
            return fn(*args, **kwargs)
        return worker.call(fn.__name__, *args, **kwargs)

    return call


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


def _adapter_fault(source: str) -> str | None:
    """Why an adapter cannot be loaded, found without touching the model, or ``None``."""
    from qeu_space.modeling.loading import adapter_weights_file

    if _missing_folder(source):
        return f"adapter {not_available(source)}"
    try:
        fault = weights_file_fault(adapter_weights_file(source))
    except Exception as err:  # noqa: BLE001 - unreadable: the adapter is left out, app runs
        return f"adapter not used: {_first_line(err)}"
    return f"adapter not used: {fault}" if fault else None


def _load_vlm(settings: AppSettings, device: DeviceInfo) -> ModelSlot:
    """The chat VLM and every adapter of ``QEU_ADAPTERS`` on it, each under its own name.

    An adapter that fails is left out with its reason. Loading into a shared model can fail
    half-way (PEFT has then put the adapter's layers in), so after a failure the base is loaded
    again with the adapters that succeeded: what answers is never a half-loaded adapter.
    """
    from qeu_space.modeling.loading import add_adapter, has_trainable_tokens

    slot = _load_slot("chat VLM", settings.base_model, None, settings, device)
    slot.adapters = [
        AdapterSlot(a.name, a.source, f"qeu_adapter_{i:02d}")
        for i, a in enumerate(settings.adapters)
    ]
    if not slot.available:
        for adapter in slot.adapters:
            adapter.reason = "the base model is not loaded"
        return slot
    loaded: list[AdapterSlot] = []
    # adapters with trainable tokens (``--new-words``) join last: PEFT cannot add a plain LoRA
    # after one; the picker keeps the configured order (stable sort)
    for adapter in sorted(slot.adapters, key=lambda a: has_trainable_tokens(a.source)):
        adapter.reason = _adapter_fault(adapter.source) or ""
        if adapter.reason:
            continue
        try:
            slot.loaded = add_adapter(slot.loaded, adapter.source, adapter.peft_name)
            loaded.append(adapter)
        except Exception as err:  # noqa: BLE001 - this adapter is left out, the others stay
            adapter.reason = f"adapter not used: {_first_line(err)}"
            slot = _reload_with(slot, loaded, settings, device)
            if not slot.available:
                break
    if not slot.available:
        for adapter in slot.adapters:
            adapter.reason = adapter.reason or "the base model is not loaded"
    return slot


def _reload_with(
    slot: ModelSlot, adapters: list[AdapterSlot], settings: AppSettings, device: DeviceInfo
) -> ModelSlot:
    """``slot``'s base loaded afresh with ``adapters`` (which loaded before, so load again)."""
    from qeu_space.modeling.loading import add_adapter

    fresh = _load_slot(slot.role, slot.name, None, settings, device)
    try:
        for adapter in adapters:
            if fresh.available:
                fresh.loaded = add_adapter(fresh.loaded, adapter.source, adapter.peft_name)
    except Exception as err:  # noqa: BLE001 - loaded once, failed now: give up on the model
        fresh.loaded, fresh.reason = None, not_available(slot.name or "", _first_line(err))
    slot.loaded, slot.reason = fresh.loaded, fresh.reason
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


def _vlm_for(adapter: str | None) -> tuple[Any, AdapterSlot | None]:
    """The loaded chat VLM and the adapter slot that is to answer (``None``: the base)."""
    loaded = MODELS.vlm.loaded
    if loaded is None:
        raise RuntimeError(MODELS.vlm.reason or "no chat VLM configured")
    if adapter is None:
        return loaded, None
    named = MODELS.vlm.named(adapter)
    if named is None or not named.in_use or not loaded.has_adapter:
        raise RuntimeError(f"adapter {adapter!r} is not loaded")
    return loaded, named


def _generate(loaded: Any, named: AdapterSlot | None, images: list, max_new_tokens: int) -> list:
    """Greedy answers with ``named`` active (``None``: every adapter off), under the lock."""
    family = _family(loaded)
    options = {"max_new_tokens": max_new_tokens, "grammar": MODELS.grammar}
    with VLM_LOCK:
        if named is None:
            with loaded.base_only():
                return family.generate(loaded, images, **options)
        loaded.model.set_adapter(named.peft_name)
        return family.generate(loaded, images, **options)


@spaces.GPU(duration=60)
@_in_worker
def answer_with_vlm(composite: Image.Image, *, adapter: str | None, max_new_tokens: int) -> Answer:
    """The chat VLM's answer to the inspection question: the base's (``adapter=None``) or with
    the named adapter on."""
    loaded, named = _vlm_for(adapter)
    text = _generate(loaded, named, [composite], max_new_tokens)[0]
    return Answer(text, tuple(_family(loaded).parse(text, composite.size)))


@spaces.GPU(duration=120)
@_in_worker
def answers_with_vlm(
    composites: Sequence[Image.Image], *, adapter: str | None, max_new_tokens: int
) -> list[Answer]:
    """:func:`answer_with_vlm` for several composites in one call (one GPU lease on ZeroGPU).

    Each composite is answered alone, exactly as :func:`answer_with_vlm` answers it (a batch
    pads prompts, which can change a greedy answer), taking the lock per answer so that an
    inspection waits for one answer, not for the whole list."""
    loaded, named = _vlm_for(adapter)
    texts = [_generate(loaded, named, [image], max_new_tokens)[0] for image in composites]
    family = _family(loaded)
    return [
        Answer(text, tuple(family.parse(text, image.size)))
        for text, image in zip(texts, composites, strict=True)
    ]


@spaces.GPU(duration=60)
@_in_worker
def detect_with_florence(
    composite: Image.Image, *, max_new_tokens: int, tuned: bool = True
) -> Answer:
    """Florence-2 ``<OD>`` boxes (adapter on when one is loaded, unless ``tuned`` is off)."""
    loaded = MODELS.od.loaded
    if loaded is None:
        raise RuntimeError(MODELS.od.reason or "no OD model configured")
    family = _family(loaded)
    options = {"max_new_tokens": max_new_tokens, "grammar": MODELS.grammar}
    if tuned or not loaded.has_adapter:
        text = family.generate(loaded, [composite], **options)[0]
    else:
        with loaded.base_only():
            text = family.generate(loaded, [composite], **options)[0]
    return Answer(text, tuple(family.parse(text, composite.size)))


@spaces.GPU(duration=30)
@_in_worker
def classify_with_vit(connector: Image.Image, reference: Image.Image | None = None) -> VitVerdict:
    """The ViT's verdict on one connector image, and its attention rollout. A pair ViT (6
    channels) compares it with ``reference``; a single-image ViT reads ``connector`` alone."""
    from qeu_space.modeling.attention import attention_rollout

    loaded = MODELS.vit.loaded
    if loaded is None:
        raise RuntimeError(MODELS.vit.reason or "no ViT configured")
    refs = None if reference is None else [reference]
    _, probabilities = _family(loaded).predict(loaded, [connector], references=refs)[0]
    return VitVerdict(probabilities, attention_rollout(loaded, connector, reference))
