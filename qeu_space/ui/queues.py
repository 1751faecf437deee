"""Lanes of Gradio's queue: model calls never hold up, nor crowd out, the light endpoints.

Gradio's queue runs each concurrency group (``concurrency_id``) with its own ``concurrency_limit``
but has one ``max_size`` for all of them: with the queue full of ``/inspect`` calls, ``/feedback``,
``/soartc`` and ``/generate`` were refused as well. Here every group is a :class:`Lane` with its
own number of running and of waiting requests; a request is refused only when *its* lane is full,
with a message that says what to do, and Gradio's own ``max_size`` is set to the sum of the lanes
(never reached first; also what keeps ZeroGPU from reducing it to 1).

The refusal travels as a validation error (HTTP 422), the one kind of refusal whose text both
``gradio_client`` (``ValidationError``) and the browser show; a plain "queue full" (HTTP 503)
reaches ``gradio_client`` as a fixed "Queue is full! Please try again." without our text.

The same gate checks every typed endpoint's inputs before anything runs (:func:`check_inputs`):
a list where text is expected, or a server path or URL where a file is expected, is refused with
one line naming the parameter, and no file is fetched or moved. Whatever still fails inside Gradio
gets a one-line message instead of ``{"error": null}`` (:func:`public_error_payload`), never a
server path. :class:`RateLimit` bounds how often one client may send feedback.

Example:
    >>> lanes = [Lane("models", running=1, waiting=16, what="inspections", hint="...")]
    >>> demo.queue(max_size=sum(lane.waiting for lane in lanes))
    >>> install_lanes(demo, lanes)
"""

from __future__ import annotations

import logging
import threading
import time
import types
import typing
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import gradio as gr
import gradio.utils

logger = logging.getLogger(__name__)
#: Gradio's own error payload (before :func:`install_lanes` replaces it).
_GRADIO_ERROR_PAYLOAD = gradio.utils.error_payload

NOT_RECEIVED = (
    "the {what} was not received: upload the file (gradio_client: handle_file(path); HTTP: "
    "POST it to /gradio_api/upload and pass the path it returns); server paths and URLs are "
    "not read"
)


@dataclass(frozen=True)
class Lane:
    """One concurrency group of the queue.

    Attributes:
        name: the ``concurrency_id`` its events are wired with.
        running: requests running at once (``None``: no limit beyond Gradio's worker threads).
        waiting: requests waiting at most; one more is refused.
        what: what its requests are, for the refusal (``"inspections"``).
        hint: what to do instead of waiting, for the refusal.
    """

    name: str
    running: int | None
    waiting: int
    what: str
    hint: str = ""

    def __post_init__(self) -> None:
        if self.waiting < 1 or (self.running is not None and self.running < 1):
            raise ValueError(f"lane {self.name}: running and waiting must be >= 1")

    def wiring(self) -> dict[str, Any]:
        """Keywords of the events in this lane."""
        return {"concurrency_id": self.name, "concurrency_limit": self.running}

    def refusal(self, waiting: int) -> str:
        return (
            f"The queue for {self.what} is full ({waiting} waiting, at most {self.waiting}): "
            f"try again in a minute. {self.hint}"
        ).strip()


class LaneGuard:
    """Wraps the queue's ``push``: refuse a request whose lane is full, else queue it as usual.

    The check and Gradio's own append happen without an ``await`` between them, so concurrent
    requests cannot overfill a lane.
    """

    def __init__(self, queue: Any, lanes: Sequence[Lane]) -> None:
        self.queue = queue
        self.lanes = {lane.name: lane for lane in lanes}
        self._push = queue.push

    def waiting(self, name: str) -> int:
        event_queue = self.queue.event_queue_per_concurrency_id.get(name)
        return len(event_queue.queue) if event_queue is not None else 0

    async def push(self, body: Any, request: Any, username: str | None) -> tuple:
        fn = self.queue.blocks.fns.get(body.fn_index) if body.fn_index is not None else None
        if fn is not None:
            wrong = check_inputs(fn.fn, getattr(body, "data", None))
            if wrong is not None:
                name, message = wrong
                refusal = {**gr.validate(False, message), "parameter_name": name}
                return False, [refusal], "validator_error"
        lane = self.lanes.get(fn.concurrency_id) if fn is not None else None
        if lane is not None:
            waiting = self.waiting(lane.name)
            if waiting >= lane.waiting:
                refusal = {**gr.validate(False, lane.refusal(waiting)), "parameter_name": "queue"}
                return False, [refusal], "validator_error"
        return await self._push(body=body, request=request, username=username)


def _allowed(hint: Any) -> tuple[type, ...] | str | None:
    """What a parameter's type hint lets through: ``"file"`` for ``FileData``, a tuple of
    types for text, numbers and flags, ``None`` for anything else (not checked here)."""
    from gradio.data_classes import FileData

    if hint is FileData:
        return "file"
    if hint is str:
        return (str,)
    if hint is bool:
        return (bool,)
    if hint in (int, float):
        return (int, float)
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = typing.get_args(hint)
        if type(None) in args and str in args and len(args) == 2:
            return (str, type(None))
    return None


def _kind(value: Any) -> str:
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    if value is None:
        return "nothing (null)"
    return type(value).__name__


def check_inputs(fn: Callable | None, data: Any) -> tuple[str, str] | None:
    """The first input of a typed endpoint ``fn`` that its type hint refuses, as
    ``(parameter, one-line reason)``, or ``None``.

    A file parameter must name a file Gradio received (inside its upload folder): a server path
    (``/etc/passwd``, ``../``) or a URL is refused before Gradio would move or fetch it.
    """
    from gradio.utils import get_function_params

    from qeu_space.ui.files import upload_path
    from qeu_space.views.image_io import UploadError

    if fn is None or not isinstance(data, list):
        return None
    try:
        params = get_function_params(fn)
    except Exception:  # noqa: BLE001 - untyped helpers (lambdas) are not checked here
        return None
    for (name, _, _, hint), value in zip(params, data, strict=False):
        allowed = _allowed(hint)
        what = name.replace("_", " ")
        if allowed == "file":
            if value is None:
                continue  # the handler says which file is missing
            if not isinstance(value, dict) or not isinstance(value.get("path"), str):
                return name, f"the {what} must be a file, got {_kind(value)}: " + (
                    NOT_RECEIVED.format(what=what).split(": ", 1)[1]
                )
            if value.get("url") and not value["url"].startswith("/"):
                return name, NOT_RECEIVED.format(what=what)
            try:
                upload_path(value, what)
            except UploadError:
                return name, NOT_RECEIVED.format(what=what)
        elif allowed is not None:
            if allowed == (int, float) and isinstance(value, bool):
                return name, f"the {what} must be a number, got {_kind(value)}"
            if value is None and str in allowed:
                continue
            if not isinstance(value, allowed):
                expected = {str: "text", bool: "true or false", int: "a number"}[allowed[0]]
                return name, f"the {what} must be {expected}, got {_kind(value)}"
    return None


def public_error_payload(error: BaseException | None, show_error: bool) -> dict[str, Any]:
    """Gradio's error payload, but never ``{"error": null}``: an error that is not a
    ``gr.Error`` gets one line that says what went wrong in general terms (its text may hold
    server paths, so it stays in the log)."""
    from gradio.exceptions import AppError, InvalidPathError

    if show_error or isinstance(error, AppError) or error is None:
        return _GRADIO_ERROR_PAYLOAD(error, show_error)
    if isinstance(error, InvalidPathError):
        message = NOT_RECEIVED.format(what="file")
    else:
        message = (
            f"the server could not answer this request ({type(error).__name__}); nothing was "
            "stored: check each input against the API page (view API) and try again"
        )
    return {"error": message, "duration": None, "visible": True, "title": "Error"}


def install_lanes(demo: gr.Blocks, lanes: Sequence[Lane]) -> LaneGuard:
    """Enable the queue of ``demo`` with these lanes (call once the events are wired), the
    input gate, and one-line messages for every refusal."""
    import gradio.queueing
    import gradio.utils

    demo.queue(max_size=sum(lane.waiting for lane in lanes) + 1, default_concurrency_limit=1)
    guard = LaneGuard(demo._queue, lanes)
    demo._queue.push = guard.push
    gradio.queueing.error_payload = public_error_payload  # the queue's name for it
    gradio.utils.error_payload = public_error_payload  # the routes' (unqueued calls)
    return guard


class RateLimited(ValueError):
    """A client sent more than its share; the message says how long to wait."""


class RateLimit:
    """At most ``per_minute`` calls per client key in any 60 seconds (a sliding window).

    Thread-safe; keys idle for a minute are forgotten, so memory follows the active clients.
    """

    def __init__(
        self, per_minute: int, clock: Callable[[], float] = time.monotonic, what: str = "feedback"
    ) -> None:
        if per_minute < 1:
            raise ValueError(f"per_minute must be >= 1, got {per_minute}")
        self.per_minute = per_minute
        self.what = what
        self._clock = clock
        self._calls: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def take(self, key: str) -> None:
        """Count one call of ``key``, or raise :class:`RateLimited` (the call is not counted)."""
        now = self._clock()
        with self._lock:
            calls = self._calls.setdefault(key, deque())
            while calls and now - calls[0] >= 60:
                calls.popleft()
            if len(calls) >= self.per_minute:
                wait = 60 - (now - calls[0])
                raise RateLimited(
                    f"too much {self.what} from you: at most {self.per_minute} a minute "
                    f"(QEU_FEEDBACK_PER_MINUTE); wait {wait:.0f} s and send it again"
                )
            calls.append(now)
            if len(self._calls) > 10_000:
                for stale in [k for k, c in self._calls.items() if not c or now - c[-1] >= 60]:
                    del self._calls[stale]
