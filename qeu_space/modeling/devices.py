"""Where the Space runs its models: ZeroGPU, a local CUDA device, or the CPU.

On a ZeroGPU Space (``SPACES_ZERO_GPU=true``, set by the platform) models are placed on ``cuda`` at
start-up and every model call runs inside a function decorated with ``spaces.GPU``, which borrows
a GPU for its duration; elsewhere ``spaces.GPU`` returns the function unchanged, so the same code
runs on a workstation GPU or on a CPU. The choice is made once at start and shown in the UI.

``spaces`` must be imported before torch touches CUDA on ZeroGPU: importing this module first
(``app.py`` does) takes care of that.

Example:
    >>> info = detect_device()
    >>> info.kind in ("zerogpu", "cuda", "cpu")
    True
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

import spaces  # noqa: F401 - first, so that ZeroGPU can patch torch before CUDA is initialised

DeviceKind = Literal["zerogpu", "cuda", "cpu"]


@dataclass(frozen=True)
class DeviceInfo:
    """The device chosen at start.

    Attributes:
        kind: ``zerogpu``, ``cuda`` or ``cpu``.
        torch_device: where weights go (``cuda`` on ZeroGPU too: ``spaces`` handles the move).
        description: a line for the UI, e.g. ``CPU (4 threads)``.
    """

    kind: DeviceKind
    torch_device: str
    description: str


def zero_gpu_enabled() -> bool:
    """Whether the platform says this is a ZeroGPU Space (``spaces``' own switch)."""
    from spaces.config import Config

    return bool(Config.zero_gpu)


def detect_device(environ: dict[str, str] | None = None) -> DeviceInfo:
    """ZeroGPU if the platform enables it, else CUDA if torch sees a device, else CPU.

    ``QEU_DEVICE=cpu`` forces the CPU (a busy shared GPU, or a test).
    """
    import torch

    env = os.environ if environ is None else environ
    forced = (env.get("QEU_DEVICE") or "").strip().lower()
    if forced and forced not in ("cpu", "cuda"):
        raise ValueError(f"QEU_DEVICE must be 'cpu' or 'cuda', got {forced!r}")
    if forced != "cpu" and zero_gpu_enabled():
        return DeviceInfo("zerogpu", "cuda", "ZeroGPU (a GPU is lent for each model call)")
    if forced != "cpu" and torch.cuda.is_available():
        name = torch.cuda.get_device_name(0)
        return DeviceInfo("cuda", "cuda", f"CUDA: {name}")
    if forced == "cuda":
        raise ValueError("QEU_DEVICE=cuda but torch sees no CUDA device")
    threads = torch.get_num_threads()
    return DeviceInfo("cpu", "cpu", f"CPU ({threads} thread{'s' if threads != 1 else ''})")
