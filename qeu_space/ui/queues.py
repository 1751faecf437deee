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

Example:
    >>> lanes = [Lane("models", running=1, waiting=16, what="inspections", hint="...")]
    >>> demo.queue(max_size=sum(lane.waiting for lane in lanes))
    >>> install_lanes(demo, lanes)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import gradio as gr


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
        lane = self.lanes.get(fn.concurrency_id) if fn is not None else None
        if lane is not None:
            waiting = self.waiting(lane.name)
            if waiting >= lane.waiting:
                refusal = {**gr.validate(False, lane.refusal(waiting)), "parameter_name": "queue"}
                return False, [refusal], "validator_error"
        return await self._push(body=body, request=request, username=username)


def install_lanes(demo: gr.Blocks, lanes: Sequence[Lane]) -> LaneGuard:
    """Enable the queue of ``demo`` with these lanes (call once the events are wired)."""
    demo.queue(max_size=sum(lane.waiting for lane in lanes) + 1, default_concurrency_limit=1)
    guard = LaneGuard(demo._queue, lanes)
    demo._queue.push = guard.push
    return guard
