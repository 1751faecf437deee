"""Names of the processor a model folder ships, and the standard classes those extend.

A folder made by :func:`qeu_space.hub.processor.install_processor` carries ``processing_qeu.py``
(:mod:`qeu_space.views.processors`, bundled) and names its classes in the processor configs'
``auto_map``. This project frames images itself, so its loader reads such a folder with the
standard class the shipped one extends (:data:`STANDARD_CLASSES`); plain transformers users load
the shipped class with ``trust_remote_code=True``. Kept free of heavy imports: the CLI and the
loader read it before anything else.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

PROCESSOR_FILE = "processing_qeu.py"
MODULE_NAME = "processing_qeu"
#: Each shipped class and the standard transformers class it adds the view to.
STANDARD_CLASSES: dict[str, str] = {
    "QEUViTImageProcessor": "ViTImageProcessorPil",
    "QEUIdefics3Processor": "Idefics3Processor",
    "QEUFlorence2Processor": "Florence2Processor",
}
#: The processor configs that may name a shipped class, in the order transformers reads them.
PROCESSOR_CONFIGS = ("processor_config.json", "preprocessor_config.json")


def shipped_class(config: Mapping[str, Any]) -> str | None:
    """The shipped class a processor config names through ``auto_map``, else ``None``."""
    auto_map = config.get("auto_map")
    if not isinstance(auto_map, Mapping):
        return None
    for value in auto_map.values():
        if isinstance(value, str) and value.startswith(f"{MODULE_NAME}."):
            return value.removeprefix(f"{MODULE_NAME}.")
    return None
