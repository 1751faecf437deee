"""The Space's user interface: settings, cases, model slots, handlers and the Blocks layout.

``app.py`` is its user: ``build_demo(settings, source).launch(**launch_options(settings))``.
The UI imports the library (``qeu_space``), never the reverse, and receives generated samples
through a :class:`~qeu_space.ui.cases.CaseSource` so that it does not import ``dataset_tools``.
"""

from __future__ import annotations

from qeu_space.ui.cases import Case, CaseSource, SampleRequest
from qeu_space.ui.layout import build_demo, launch_options
from qeu_space.ui.settings import AppSettings

__all__ = ["AppSettings", "Case", "CaseSource", "SampleRequest", "build_demo", "launch_options"]
