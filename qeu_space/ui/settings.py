"""The Space's settings, read once from environment variables (documented in the README).

Defaults run offline on the models embedded in the repository (``models/``); on a Space the
variables name Hub ids instead. An empty value or ``none`` turns an optional model off.

Example:
    >>> s = AppSettings.from_env({"QEU_ADAPTERS": "none", "QEU_QUEUE_SIZE": "4"})
    >>> s.adapter is None, s.queue_size
    (True, 4)
    >>> AppSettings.from_env({"QEU_ADAPTERS": "latched=me/lora,short-pin=me/short"}).adapter_names
    ('latched', 'short-pin')
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from qeu_space.feedback import default_db_path
from qeu_space.vocabulary import DefectKind, kinds_in_order

REPO_ROOT = Path(__file__).resolve().parents[2]
#: Embedded models (folders under ``models/`` of the repository), absolute so that a missing one
#: is reported as missing and never mistaken for a Hub id.
DEFAULT_BASE = str(REPO_ROOT / "models" / "inspection-vlm-base")
DEFAULT_ADAPTER = str(REPO_ROOT / "models" / "inspection-vlm-lora")
DEFAULT_SHORT_PIN_ADAPTER = str(REPO_ROOT / "models" / "inspection-vlm-short-pin")
#: The adapters beside the base by default (``QEU_ADAPTERS``), as ``(name, Hub id or folder)``:
#: the first is the one the picker starts on and that ``/inspect`` uses without a name. The
#: short-pin adapter comes first: it teaches the base a defect kind it has no word for, so its
#: answers differ from the base's where a visitor can see it (the latched one adds nothing
#: measurable; its card says why).
DEFAULT_ADAPTERS: tuple[tuple[str, str], ...] = (
    ("short-pin", DEFAULT_SHORT_PIN_ADAPTER),
    ("latched", DEFAULT_ADAPTER),
)
#: Kinds of defect the generated samples show (``QEU_GALLERY_KINDS``): every kind the vocabulary
#: knows, so an adapter that teaches one (``short pin``) has samples to show it on.
DEFAULT_GALLERY_KINDS: tuple[DefectKind, ...] = tuple(DefectKind)
#: An adapter's name: what the picker shows and ``/inspect`` takes.
ADAPTER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,39}")
DEFAULT_VIT = str(REPO_ROOT / "models" / "vit-inspector")
DEFAULT_OD = str(REPO_ROOT / "models" / "inspection-od-base")
DEFAULT_OD_ADAPTER = str(REPO_ROOT / "models" / "inspection-od-lora")

_OFF = ("", "none", "off", "0", "false")


def _optional(env: Mapping[str, str], name: str, default: str | None) -> str | None:
    value = env.get(name)
    if value is None:
        return default
    return None if value.strip().lower() in _OFF else value.strip()


def _flag(env: Mapping[str, str], name: str) -> bool:
    value = (env.get(name) or "").strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in _OFF or value == "no":
        return False
    raise ValueError(f"{name} must be 1/true/yes/on or 0/false/no/off, got {value!r}")


def _number(env: Mapping[str, str], name: str, default: float, low: float, high: float) -> float:
    raw = env.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number, got {raw!r}") from None
    if not low <= value <= high:
        raise ValueError(f"{name} must be between {low:g} and {high:g}, got {raw}")
    return value


@dataclass(frozen=True)
class NamedAdapter:
    """One adapter of the chat VLM: its name in the Space and where it comes from.

    Attributes:
        name: what the picker shows and ``/inspect`` takes (letters, digits, ``-``, ``_``).
        source: Hub id or folder (an existing folder made absolute, as every model path).
    """

    name: str
    source: str


def adapter_name_of(source: str) -> str:
    """The name an adapter given without one gets: its folder's or Hub repo's last part."""
    tail = source.rstrip("/").rsplit("/", 1)[-1]
    name = re.sub(r"[^A-Za-z0-9_-]+", "-", tail).strip("-_")[:40]
    return name or "adapter"


def parse_adapters(text: str, variable: str = "QEU_ADAPTERS") -> tuple[NamedAdapter, ...]:
    """``name=source,name=source`` (a bare ``source`` is named by :func:`adapter_name_of`).

    Raises:
        ValueError: a bad or repeated name, or an entry without a source (naming ``variable``).
    """
    if text.strip().lower() in _OFF:
        return ()
    adapters: list[NamedAdapter] = []
    for entry in (e.strip() for e in text.split(",")):
        if not entry:
            continue
        name, sep, source = entry.partition("=")
        name, source = name.strip(), source.strip()
        if not sep:
            name, source = adapter_name_of(name), name
        if not source:
            raise ValueError(f"{variable}: {entry!r} names no adapter (write NAME=ID_OR_FOLDER)")
        if not ADAPTER_NAME.fullmatch(name):
            raise ValueError(
                f"{variable}: adapter name {name!r} must be 1-40 letters, digits, '-' or '_' "
                "(starting with a letter or digit)"
            )
        if any(a.name == name for a in adapters):
            raise ValueError(f"{variable}: the adapter name {name!r} is used twice")
        adapters.append(NamedAdapter(name, str(resolve_model_path(source))))
    return tuple(adapters)


def _adapters(env: Mapping[str, str]) -> tuple[NamedAdapter, ...]:
    """``QEU_ADAPTERS``, or its one-adapter alias ``QEU_ADAPTER``, or the default adapters."""
    several, one = env.get("QEU_ADAPTERS"), env.get("QEU_ADAPTER")
    if several is not None and one is not None:
        raise ValueError(
            "set QEU_ADAPTERS (name=adapter,...) or QEU_ADAPTER (one adapter), not both"
        )
    if several is not None:
        return parse_adapters(several)
    if one is not None:
        if "," in one:
            raise ValueError("QEU_ADAPTER names one adapter; use QEU_ADAPTERS for several")
        return parse_adapters(one, "QEU_ADAPTER")
    return tuple(NamedAdapter(n, str(resolve_model_path(s))) for n, s in DEFAULT_ADAPTERS)


def _kinds(env: Mapping[str, str], name: str, default: tuple[DefectKind, ...]) -> tuple:
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    try:
        return kinds_in_order(k for k in re.split(r"[\s,;]+", raw) if k)
    except ValueError as err:
        raise ValueError(f"{name}: {err} (e.g. 'bent missing short')") from None


def resolve_model_path(name: str | None) -> str | None:
    """An existing folder (relative to the working directory or to the repository) becomes an
    absolute path, so the app works from anywhere; anything else (a Hub id) is kept as given."""
    if name is None:
        return None
    path = Path(name).expanduser()
    for candidate in (path, REPO_ROOT / path):
        if candidate.exists():
            return str(candidate.resolve())
    return name


def default_model_threads() -> int:
    """All the CPU cores this process may use but one (at least one): a core stays free for the
    light endpoints while a model runs."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, cores - 1)


@dataclass(frozen=True)
class AppSettings:
    """Everything configurable about the Space.

    Attributes:
        base_model: chat VLM (Hub id or folder) answering as "base" (``QEU_BASE_MODEL``).
        adapters: the named PEFT adapters on it, each giving a "fine-tuned" answer beside the
            base's; the first is the default (``QEU_ADAPTERS``, or ``QEU_ADAPTER`` for one).
        vit_model: ViT classifier (OK / BENDNG / NUKENG) of the test connector (``QEU_VIT_MODEL``).
        od_model: Florence-2 for ``<OD>`` boxes, or ``None`` (``QEU_OD_MODEL``).
        od_adapter: PEFT adapter on the OD model, or ``None`` (``QEU_OD_ADAPTER``).
        trust_remote_code: allow code shipped with the named models (``QEU_TRUST_REMOTE_CODE``).
        feedback_db: SQLite file of the feedback store (``QEU_FEEDBACK_DB``).
        feedback_repo: Hub dataset the feedback is pushed to, or ``None`` (``QEU_FEEDBACK_REPO``).
        feedback_every: minutes between feedback pushes (``QEU_FEEDBACK_EVERY``).
        max_upload_mb: largest upload (``QEU_MAX_UPLOAD_MB``).
        max_pixels: largest ``width * height`` of an upload (``QEU_MAX_PIXELS``).
        queue_size: model calls (``/inspect``) waiting at most (``QEU_QUEUE_SIZE``).
        model_concurrency: model calls running at once (``QEU_MODEL_CONCURRENCY``).
        light_queue_size: requests waiting at most for each light endpoint (``/soartc``;
            ``/generate`` and ``/compose``), apart from the model queue
            (``QEU_LIGHT_QUEUE_SIZE``).
        inspections_kept: inspections kept for feedback (``QEU_INSPECTIONS_KEPT``).
        inspection_minutes: how long an inspection can be judged (``QEU_INSPECTION_TTL``).
        cache_minutes: age after which Gradio's temporary files (uploads, output images) are
            deleted (``QEU_CACHE_MINUTES``).
        max_new_tokens: longest generated answer (``QEU_MAX_NEW_TOKENS``).
        feedback_per_minute: judgements one client may send a minute (``QEU_FEEDBACK_PER_MINUTE``).
        model_threads: CPU threads torch may use for model calls (``QEU_MODEL_THREADS``; default
            all cores but one, so ``/feedback`` and ``/soartc`` keep a core while models run).
        gallery_size: generated samples in the gallery (``QEU_GALLERY_SIZE``).
        gallery_seed: seed of the gallery (``QEU_GALLERY_SEED``).
        gallery_kinds: defect kinds the generated samples show (``QEU_GALLERY_KINDS``).
        diff_samples: generated samples the "where they differ" view answers with the base and
            each adapter (``QEU_DIFF_SAMPLES``; the gallery's samples come first).
        answer_grammar: generate answers under the answer / ``<OD>`` grammar
            (``QEU_ANSWER_GRAMMAR``, on unless set to 0/false/no/off: the ablation).
        model_worker: run the models in a worker process of their own (``QEU_MODEL_WORKER``):
            ``None`` (unset) on the CPU only; never on ZeroGPU, whose ``spaces.GPU`` needs the
            calls in the main process.
        model_worker_nice: how much lower the worker's CPU priority is (``QEU_MODEL_WORKER_NICE``,
            0-19), so the web process gets a busy core first.
    """

    base_model: str | None = DEFAULT_BASE
    adapters: tuple[NamedAdapter, ...] = tuple(NamedAdapter(n, s) for n, s in DEFAULT_ADAPTERS)
    vit_model: str | None = DEFAULT_VIT
    od_model: str | None = DEFAULT_OD
    od_adapter: str | None = DEFAULT_OD_ADAPTER
    trust_remote_code: bool = False
    feedback_db: Path = field(default_factory=default_db_path)
    feedback_repo: str | None = None
    feedback_every: float = 5.0
    max_upload_mb: float = 10.0
    max_pixels: int = 4096 * 4096
    queue_size: int = 16
    model_concurrency: int = 1
    light_queue_size: int = 32
    inspections_kept: int = 256
    inspection_minutes: float = 60.0
    cache_minutes: float = 60.0
    max_new_tokens: int = 64
    feedback_per_minute: int = 20
    model_threads: int = field(default_factory=lambda: default_model_threads())
    gallery_size: int = 8
    gallery_seed: int = 0
    gallery_kinds: tuple[DefectKind, ...] = DEFAULT_GALLERY_KINDS
    diff_samples: int = 24
    answer_grammar: bool = True
    model_worker: bool | None = None
    model_worker_nice: int = 10

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> AppSettings:
        """Read the ``QEU_*`` variables; a bad value raises ``ValueError`` naming the variable."""
        env = os.environ if environ is None else environ
        db = env.get("QEU_FEEDBACK_DB", "").strip()
        return cls(
            base_model=resolve_model_path(_optional(env, "QEU_BASE_MODEL", DEFAULT_BASE)),
            adapters=_adapters(env),
            vit_model=resolve_model_path(_optional(env, "QEU_VIT_MODEL", DEFAULT_VIT)),
            od_model=resolve_model_path(_optional(env, "QEU_OD_MODEL", DEFAULT_OD)),
            od_adapter=resolve_model_path(_optional(env, "QEU_OD_ADAPTER", DEFAULT_OD_ADAPTER)),
            trust_remote_code=_flag(env, "QEU_TRUST_REMOTE_CODE"),
            feedback_db=Path(db).expanduser() if db else default_db_path(),
            feedback_repo=_optional(env, "QEU_FEEDBACK_REPO", None),
            feedback_every=_number(env, "QEU_FEEDBACK_EVERY", 5.0, 0.1, 1440),
            max_upload_mb=_number(env, "QEU_MAX_UPLOAD_MB", 10.0, 0.01, 200),
            max_pixels=int(_number(env, "QEU_MAX_PIXELS", 4096 * 4096, 96 * 96, 1e9)),
            queue_size=int(_number(env, "QEU_QUEUE_SIZE", 16, 1, 10_000)),
            model_concurrency=int(_number(env, "QEU_MODEL_CONCURRENCY", 1, 1, 64)),
            light_queue_size=int(_number(env, "QEU_LIGHT_QUEUE_SIZE", 32, 1, 10_000)),
            inspections_kept=int(_number(env, "QEU_INSPECTIONS_KEPT", 256, 1, 100_000)),
            inspection_minutes=_number(env, "QEU_INSPECTION_TTL", 60.0, 0.1, 10_080),
            cache_minutes=_number(env, "QEU_CACHE_MINUTES", 60.0, 0.02, 10_080),
            max_new_tokens=int(_number(env, "QEU_MAX_NEW_TOKENS", 64, 1, 1024)),
            feedback_per_minute=int(_number(env, "QEU_FEEDBACK_PER_MINUTE", 20, 1, 100_000)),
            model_threads=int(_number(env, "QEU_MODEL_THREADS", default_model_threads(), 1, 1024)),
            gallery_size=int(_number(env, "QEU_GALLERY_SIZE", 8, 1, 64)),
            gallery_seed=int(_number(env, "QEU_GALLERY_SEED", 0, 0, 2**31)),
            gallery_kinds=_kinds(env, "QEU_GALLERY_KINDS", DEFAULT_GALLERY_KINDS),
            diff_samples=int(_number(env, "QEU_DIFF_SAMPLES", 24, 4, 64)),
            answer_grammar=_flag(env, "QEU_ANSWER_GRAMMAR")
            if (env.get("QEU_ANSWER_GRAMMAR") or "").strip()
            else True,
            model_worker=_flag(env, "QEU_MODEL_WORKER")
            if (env.get("QEU_MODEL_WORKER") or "").strip()
            else None,
            model_worker_nice=int(_number(env, "QEU_MODEL_WORKER_NICE", 10, 0, 19)),
        )

    def uses_worker(self, device_kind: str) -> bool:
        """Whether the models run in the model worker on a device of ``device_kind``
        (``cpu``, ``cuda``, ``zerogpu``): by default on the CPU only, never on ZeroGPU."""
        if device_kind == "zerogpu":
            return False
        return device_kind == "cpu" if self.model_worker is None else self.model_worker

    @property
    def adapter(self) -> str | None:
        """The default adapter's Hub id or folder (the first of :attr:`adapters`), or ``None``."""
        return self.adapters[0].source if self.adapters else None

    @property
    def adapter_names(self) -> tuple[str, ...]:
        return tuple(a.name for a in self.adapters)

    @property
    def max_upload_bytes(self) -> int:
        """``max_upload_mb`` in bytes, 1 MB = 1,048,576 bytes: Gradio's upload toast counts so
        (``max_file_size`` of 10 MB shows "10.0 Mb"), and so do the app's messages."""
        return int(self.max_upload_mb * 2**20)

    @property
    def delete_cache(self) -> tuple[int, int]:
        """``gr.Blocks(delete_cache=(every, age))`` in seconds: files older than
        ``cache_minutes`` go, checked every tenth of that (at least every second, at most every
        ten minutes)."""
        age = max(1, round(self.cache_minutes * 60))
        return max(1, min(600, age // 10)), age
