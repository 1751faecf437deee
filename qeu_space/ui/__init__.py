"""The Space's user interface: settings, cases, model slots, handlers and the Blocks layout.

``app.py`` is its user: ``build_demo(settings, source).launch(**launch_options(settings))``.
The UI imports the library (``qeu_space``), never the reverse, and receives generated samples
through a :class:`~qeu_space.ui.cases.CaseSource` so that it does not import ``dataset_tools``.

The names below are imported when first used, so that the model worker
(:mod:`qeu_space.ui.worker`), which needs :mod:`qeu_space.ui.models` only, never imports Gradio.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from qeu_space.ui.cases import Case, CaseSource, SampleRequest
    from qeu_space.ui.layout import build_demo, launch_options
    from qeu_space.ui.settings import AppSettings

_WHERE = {
    "AppSettings": "qeu_space.ui.settings",
    "Case": "qeu_space.ui.cases",
    "CaseSource": "qeu_space.ui.cases",
    "SampleRequest": "qeu_space.ui.cases",
    "build_demo": "qeu_space.ui.layout",
    "launch_options": "qeu_space.ui.layout",
}

__all__ = ["AppSettings", "Case", "CaseSource", "SampleRequest", "build_demo", "launch_options"]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name]), name)
