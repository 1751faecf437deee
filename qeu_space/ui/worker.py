"""The model worker: the Space's models in a process of their own (``QEU_MODEL_WORKER``).

Why: a model call holds the GIL between its torch ops, so in the web server's interpreter a light
request (``/feedback``, ``/soartc``) waits for the interpreter although a core is free. The worker
loads the models once at start and answers the model functions of :mod:`qeu_space.ui.models`;
the web process sends the composite (a picklable PIL image) and gets the typed answer back
(:class:`~qeu_space.ui.models.Answer`, :class:`~qeu_space.ui.models.VitVerdict`). It runs at a
lower CPU priority (``QEU_MODEL_WORKER_NICE``), so the web process gets a busy core first.

The worker is started with ``python -m qeu_space.ui.worker`` (not ``multiprocessing``' spawn,
which would import the app's ``__main__`` again: ``app.py`` builds the whole Space at import),
talking over one socket pair. If the web process ends, however it ends, the worker reads the end
of the socket and exits. If the worker dies, every call waiting for it fails at once with one
line (:class:`WorkerDied`), and a fresh worker is started; calls made meanwhile wait for it.

Example:
    >>> worker = ModelWorker.start(settings, device)   # loads the models there
    >>> worker.models.vlm.status()                     # what the web process shows
    >>> worker.call("answer_with_vlm", composite, adapter=None, max_new_tokens=64)
    >>> worker.close()
"""

from __future__ import annotations

import atexit
import concurrent.futures
import itertools
import logging
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from multiprocessing.connection import Connection, Pipe
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

#: The model functions of :mod:`qeu_space.ui.models` a worker runs (nothing else is called by name).
CALLS = ("answer_with_vlm", "answers_with_vlm", "detect_with_florence", "classify_with_vit")
#: Seconds a worker may take to load the models before it is given up.
START_TIMEOUT = 600.0
#: Seconds ``close`` waits for a worker to leave before it is killed.
STOP_TIMEOUT = 10.0
_PACKAGE_ROOT = Path(__file__).resolve().parents[2]


class WorkerDied(RuntimeError):
    """The model worker stopped while a call waited for it (or could not be started again)."""


def _exit_text(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        return f"killed by signal {-code}"
    return f"exit code {code}"


class ModelWorker:
    """One model worker process, restarted when it dies; :meth:`call` is thread-safe.

    Attributes:
        models: the :class:`~qeu_space.ui.models.Models` the worker loaded, as the web process
            sees them (each model a :class:`~qeu_space.ui.models.RemoteModel`: what it is, never
            its weights), with the same reasons as an in-process load.
        restarts: workers started after the first one died.
    """

    def __init__(self, settings: Any, device: Any) -> None:
        self.settings, self.device = settings, device
        self.models: Any = None
        self.restarts = 0
        self._lock = threading.Lock()  # process, connection, pending calls, state
        self._send_lock = threading.Lock()
        self._ready = threading.Event()
        self._pending: dict[int, concurrent.futures.Future] = {}
        self._ids = itertools.count()
        self._process: subprocess.Popen | None = None
        self._conn: Connection | None = None
        self._failed = ""  # why no worker can answer (a restart failed), or ""
        self._starting: tuple[subprocess.Popen, Connection] | None = None
        self._loading: subprocess.Popen | None = None  # a worker launched, not yet ready
        self._closed = False

    @classmethod
    def start(cls, settings: Any, device: Any, *, wait: bool = True) -> ModelWorker:
        """Start the worker (stopped at exit); with ``wait``, until it has loaded the models
        (else call :meth:`wait` after other start-up work: the two overlap).

        Raises:
            WorkerDied: the worker stopped before it was ready (its log says why).
        """
        worker = cls(settings, device)
        worker._starting = worker._launch()
        atexit.register(worker.close)
        if wait:
            worker.wait()
        return worker

    def wait(self) -> Any:
        """Wait until the first worker has loaded the models; returns :attr:`models`."""
        if self.models is None:
            self.models = self._await(*self._starting)
        return self.models

    @property
    def pid(self) -> int | None:
        """The running worker's process id (``None`` while none runs)."""
        process = self._process
        return process.pid if process is not None and process.poll() is None else None

    def _launch(self) -> tuple[subprocess.Popen, Connection]:
        """Start a worker process and hand it the settings (it loads the models)."""
        ours, theirs = Pipe(duplex=True)
        env = dict(os.environ)
        path = env.get("PYTHONPATH")
        env["PYTHONPATH"] = str(_PACKAGE_ROOT) + (os.pathsep + path if path else "")
        process = subprocess.Popen(
            [sys.executable, "-m", "qeu_space.ui.worker", str(theirs.fileno())],
            pass_fds=(theirs.fileno(),),
            env=env,
        )
        theirs.close()
        self._loading = process
        try:
            ours.send(("start", self.settings, self.device))
        except OSError:
            pass  # it died at once: _await says so
        return process, ours

    def _await(self, process: subprocess.Popen, ours: Connection) -> Any:
        """Wait for a launched worker's models (``Models``); then it answers calls."""
        try:
            deadline = time.monotonic() + START_TIMEOUT
            while not ours.poll(1.0):
                if process.poll() is not None or time.monotonic() > deadline:
                    raise EOFError
            kind, models = ours.recv()
        except (EOFError, OSError, pickle.PickleError):
            _stop(process)
            ours.close()
            raise WorkerDied(
                f"the model worker stopped while loading the models ({_exit_text(process.poll())}"
                "; its log is above)"
            ) from None
        assert kind == "ready", kind
        with self._lock:
            self._loading = None
            if self._closed:  # closed while it loaded
                ours.close()
                process.terminate()
                raise WorkerDied("the model worker was stopped (the app is shutting down)")
            self._process, self._conn = process, ours
            self._failed = ""
        self._ready.set()
        threading.Thread(target=self._read, args=(process, ours), daemon=True).start()
        logger.info("model worker %d ready", process.pid)
        return models

    def _read(self, process: subprocess.Popen, conn: Connection) -> None:
        """Deliver the worker's answers; on its death fail every waiting call and restart it."""
        while True:
            try:
                kind, call_id, ok, value = conn.recv()
            except (EOFError, OSError):
                break
            except Exception:  # noqa: BLE001 - an answer that cannot be read: never a hang
                logger.exception("unreadable message from the model worker: stopping it")
                process.kill()
                break
            with self._lock:
                future = self._pending.pop(call_id, None)
            if future is not None:
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(value)
        with self._send_lock:  # never while a call is being written to it
            conn.close()
        code = process.wait()
        with self._lock:
            if self._closed:
                return
            self._ready.clear()
            self._process = self._conn = None
            waiting, self._pending = self._pending, {}
        why = f"the model worker stopped ({_exit_text(code)})"
        logger.error("%s; %d waiting call(s) failed; starting a new one", why, len(waiting))
        for future in waiting.values():
            future.set_exception(
                WorkerDied(f"{why} during this call; it is being restarted: try again")
            )
        try:
            self._await(*self._launch())
            self.restarts += 1
        except WorkerDied as err:
            logger.error("%s", err)
            with self._lock:
                self._failed = f"{err}: restart the Space"
            self._ready.set()  # waiting calls learn why at once

    def call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Run model function ``name`` in the worker and return its result (or raise its error).

        Raises:
            WorkerDied: the worker stopped during the call, or no worker can be started.
        """
        if name not in CALLS:
            raise ValueError(f"{name!r} is no model function of the worker ({', '.join(CALLS)})")
        payload = pickle.dumps((name, args, kwargs))  # what does not pickle fails here, alone
        future: concurrent.futures.Future = concurrent.futures.Future()
        deadline = time.monotonic() + START_TIMEOUT
        while True:  # a worker being restarted is waited for
            if not self._ready.wait(max(0.0, deadline - time.monotonic())):
                raise WorkerDied("the model worker is not ready (still restarting): try again")
            with self._lock:
                if self._closed:
                    raise WorkerDied("the model worker is stopped (the app is shutting down)")
                if self._failed:
                    raise WorkerDied(self._failed)
                if self._conn is None:  # it died since: the reader has cleared ``_ready``
                    continue
                conn, call_id = self._conn, next(self._ids)
                self._pending[call_id] = future  # the reader fails it if the worker dies now
                break
        try:
            with self._send_lock:
                conn.send(("call", call_id, payload))
        except Exception:  # noqa: BLE001 - it died just now: the reader fails the future
            pass
        return future.result()

    def close(self) -> None:
        """Stop the worker (and no new one is started); waiting calls fail with one line."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            process, conn = self._process, self._conn
            waiting, self._pending = self._pending, {}
            loading = self._loading
        self._ready.set()
        if loading is not None:  # no use loading the models any more
            loading.terminate()
        if conn is not None:
            try:
                with self._send_lock:
                    conn.send(("stop",))
            except OSError:
                pass
        if process is not None:
            _stop(process)
        for future in waiting.values():
            future.set_exception(
                WorkerDied("the model worker was stopped (the app is shutting down)")
            )
        atexit.unregister(self.close)


def _stop(process: subprocess.Popen) -> None:
    try:
        process.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.terminate()
        try:
            process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# --------------------------------------------------------------------------- the worker's side


def serve(conn: Connection) -> None:
    """The worker's loop: load the models, then answer calls (``model_concurrency`` at once)
    until told to stop or until the web process is gone."""
    from qeu_space.ui import models as model_fns

    kind, settings, device = conn.recv()
    assert kind == "start", kind
    model_fns.limit_model_threads(settings.model_threads)
    loaded = model_fns.load_models(settings, device)
    if settings.model_worker_nice and hasattr(os, "nice"):  # loaded at full speed, then yield
        os.nice(settings.model_worker_nice)
    conn.send(("ready", loaded.remote()))
    send_lock = threading.Lock()

    def run(call_id: int, name: str, args: tuple, kwargs: dict) -> None:
        try:
            reply = (True, getattr(model_fns, name)(*args, **kwargs))
        except Exception as err:  # noqa: BLE001 - the web process shows it as the panel's line
            logger.exception("%s failed", name)
            reply = (False, err)
            try:
                pickle.loads(pickle.dumps(err))
            except Exception:  # noqa: BLE001 - an error that does not pickle goes as its text
                reply = (False, RuntimeError(str(err).strip() or type(err).__name__))
        with send_lock:
            conn.send(("result", call_id, *reply))

    with concurrent.futures.ThreadPoolExecutor(settings.model_concurrency) as pool:
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                os._exit(0)  # the web process is gone: leave now, running calls included
            if message[0] == "stop":
                break
            _, call_id, payload = message
            name, args, kwargs = pickle.loads(payload)
            if name in CALLS:
                pool.submit(run, call_id, name, args, kwargs)
    conn.close()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # Ctrl-C reaches the whole process group: the web process stops the worker (or its end of
    # the socket closes), so the worker itself ignores it rather than print a traceback
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(
        level=logging.INFO,
        format=f"%(levelname)s model-worker[{os.getpid()}] %(name)s: %(message)s",
    )
    serve(Connection(int(argv[0])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
