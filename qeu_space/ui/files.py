"""Files between the Space and its callers: uploads in, images out (Gradio's cache folder).

Handlers take Gradio's raw file payloads (events wired with ``preprocess=False``, and the typed
``gr.api`` endpoints), so Gradio does not check their paths: :func:`upload_path` accepts only a
file inside Gradio's upload folder, where ``/upload`` puts what a client sends; any other path
(``/etc/...``, the models) is refused as "not received". Output images of the API endpoints are
written by :class:`OutputFiles` as JPEG (a fraction of a millisecond, where PNG or WebP cost 5-40 ms
per image) into the same folder, and registered with the Blocks so that ``delete_cache`` removes
them like Gradio's own files.

Example:
    >>> files = OutputFiles()
    >>> demo.temp_file_sets.append(files.paths)
    >>> payload = files.image(heatmap, "heatmap")        # {"path": ..., "meta": {...}}
"""

from __future__ import annotations

import hashlib
import io
import os
import threading
from pathlib import Path
from typing import Any

from PIL import Image

from qeu_space.views.image_io import UploadError

JPEG_QUALITY = 92


def upload_folder() -> Path:
    """Gradio's upload/cache folder (``GRADIO_TEMP_DIR``), resolved."""
    from gradio.utils import get_upload_folder

    return Path(get_upload_folder()).resolve()


def upload_path(payload: Any, what: str) -> str:
    """The path of a raw file payload (``{"path": ...}`` or a path), if Gradio received it.

    Raises:
        UploadError: no file, or a path outside Gradio's upload folder.
    """
    if isinstance(payload, dict):
        payload = payload.get("path")
    if not payload or not isinstance(payload, str | os.PathLike):
        raise UploadError(f"no {what}: upload one first")
    path = Path(payload).resolve()
    if not path.is_relative_to(upload_folder()):
        raise UploadError(f"the {what} was not received (upload it; server paths are not read)")
    return str(path)


class OutputFiles:
    """Images written for API callers, as files Gradio serves and ``delete_cache`` deletes."""

    def __init__(self) -> None:
        self.paths: set[str] = set()
        self._lock = threading.Lock()

    def image(self, image: Image.Image, name: str) -> dict[str, Any]:
        """Write ``image`` as ``<digest>/<name>.jpg``; returns the file payload for a client."""
        buf = io.BytesIO()
        image.convert("RGB").save(buf, format="JPEG", quality=JPEG_QUALITY)
        data = buf.getvalue()
        folder = upload_folder() / hashlib.sha256(data).hexdigest()[:40]
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{name}.jpg"
        if not path.exists():
            partial = path.with_name(f".{name}-{os.getpid()}-{threading.get_ident()}.partial")
            partial.write_bytes(data)
            os.replace(partial, path)
        with self._lock:
            self.paths.add(str(path))
        return {"path": str(path), "orig_name": path.name, "meta": {"_type": "gradio.FileData"}}
