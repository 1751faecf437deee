"""The model worker (issue 21, item 4): the Space's models in a process of their own.

On tiny random-weight models: every model function answers through the worker exactly as in
process, the models panel says the same (load errors included), a worker killed during a call
fails that call with one line and is restarted, a closed worker refuses calls, and a worker whose
web process dies leaves by itself. The launched app (tests/test_app.py) runs its models in the
worker too, as the Space does on a CPU.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from qeu_space.modeling.devices import DeviceInfo
from qeu_space.ui import models as model_fns
from qeu_space.ui.settings import AppSettings
from qeu_space.ui.worker import ModelWorker, WorkerDied
from tests.browser.app_server import make_tiny_models
from tests.test_app_units import damaged_adapter

pytestmark = pytest.mark.timeout(600)

CPU = DeviceInfo("cpu", "cpu", "CPU (1 thread)")
REPO = Path(__file__).resolve().parents[1]
MAX_NEW_TOKENS = 8


@pytest.mark.parametrize(
    ("value", "kind", "uses"),
    [
        (None, "cpu", True),  # unset: the worker on the CPU
        (None, "cuda", False),
        (None, "zerogpu", False),
        (True, "cuda", True),
        (True, "zerogpu", False),  # spaces.GPU needs the calls in the main process
        (False, "cpu", False),
    ],
)
def test_where_the_models_run(value: bool | None, kind: str, uses: bool) -> None:
    assert AppSettings(model_worker=value).uses_worker(kind) is uses


@pytest.mark.parametrize(
    ("env", "worker", "nice"),
    [
        ({}, None, 10),
        ({"QEU_MODEL_WORKER": "1"}, True, 10),
        ({"QEU_MODEL_WORKER": "off", "QEU_MODEL_WORKER_NICE": "0"}, False, 0),
        ({"QEU_MODEL_WORKER_NICE": "19"}, None, 19),
    ],
)
def test_worker_settings_from_env(env: dict, worker: bool | None, nice: int) -> None:
    settings = AppSettings.from_env(env)
    assert (settings.model_worker, settings.model_worker_nice) == (worker, nice)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"QEU_MODEL_WORKER": "maybe"}, "QEU_MODEL_WORKER must be 1/true/yes/on or 0/false"),
        ({"QEU_MODEL_WORKER_NICE": "20"}, "QEU_MODEL_WORKER_NICE"),
    ],
)
def test_bad_worker_settings_say_which(env: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AppSettings.from_env(env)


def test_the_worker_never_imports_gradio() -> None:
    """What the worker imports (qeu_space.ui.models) must not pull in the web UI."""
    code = "import sys, qeu_space.ui.models; print('gradio' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False", out.stderr


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("worker-models")
    names = make_tiny_models(root)
    broken = damaged_adapter(Path(names["QEU_ADAPTERS"].split(",")[0].split("=")[1]),
                             root / "garbage-lora", "garbage")  # fmt: skip
    names["QEU_ADAPTERS"] += f",garbage={broken}"
    return names


def settings_for(tiny: dict[str, str], **extra: str) -> AppSettings:
    return AppSettings.from_env(
        {
            **tiny,
            "QEU_ANSWER_GRAMMAR": "0",  # random tiny models answer apart only without it
            "QEU_MODEL_THREADS": "1",
            "QEU_MAX_NEW_TOKENS": str(MAX_NEW_TOKENS),
            **extra,
        }
    )


@pytest.fixture(scope="module")
def composites():
    """Two test-split samples, drawn as the Space's gallery draws them."""
    from dataset_tools.compose import make_sample
    from dataset_tools.sampling import draw_spec, row_rng
    from qeu_space.geometry import CompositeLayout

    out = []
    for index in range(2):
        rng = row_rng(0, "test", index)
        spec = draw_spec("qa", "test", index, rng, unlabelled_fraction=0.0)
        out.append(make_sample(spec, rng, layout=CompositeLayout(448)).image)
    return out


def every_answer(composites) -> dict:
    """What each model function answers on ``composites`` (whichever way the calls go)."""
    from qeu_space.ui.cases import split_composite

    out: dict = {}
    for name in (None, "latched", "short-pin"):
        out["vlm", name] = model_fns.answers_with_vlm(
            composites, adapter=name, max_new_tokens=MAX_NEW_TOKENS
        )
        out["vlm1", name] = model_fns.answer_with_vlm(
            composites[0], adapter=name, max_new_tokens=MAX_NEW_TOKENS
        )
    for tuned in (True, False):
        out["od", tuned] = model_fns.detect_with_florence(
            composites[0], max_new_tokens=MAX_NEW_TOKENS, tuned=tuned
        )
    out["vit"] = model_fns.classify_with_vit(split_composite(composites[0])[1])
    return out


def statuses(models: model_fns.Models) -> list[str]:
    return [slot.status() for slot in (models.vlm, models.vit, models.od)]


@pytest.fixture(scope="module")
def in_process(tiny, composites):
    """The models loaded here, and their answers (one torch thread, as the worker's)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        models = model_fns.load_models(settings_for(tiny), CPU)
        return models, every_answer(composites)
    finally:
        torch.set_num_threads(before)
        model_fns.use_models(model_fns.Models())


@pytest.fixture(scope="module")
def worker(tiny, in_process):
    worker = ModelWorker.start(settings_for(tiny), CPU)
    yield worker
    worker.close()


@pytest.fixture
def through_worker(worker):
    """The model functions sending their calls to the worker; in process again after."""
    models = model_fns.use_worker(worker)
    yield models
    model_fns.use_models(model_fns.Models())


def test_answers_through_the_worker_equal_answers_in_process(
    in_process, through_worker, composites
) -> None:
    models, expected = in_process
    got = every_answer(composites)
    assert got.keys() == expected.keys()
    for key in expected:
        if key == "vit":
            continue
        assert got[key] == expected[key], key
    vit, want = got["vit"], expected["vit"]
    assert vit.probabilities.keys() == want.probabilities.keys()
    for label, p in want.probabilities.items():
        assert vit.probabilities[label] == pytest.approx(p, abs=1e-6)
    assert vit.attention.shape == want.attention.shape
    assert abs(vit.attention - want.attention).max() < 1e-5
    # the base and an adapter really answer apart: the comparison above is not vacuous
    assert expected["vlm", None] != expected["vlm", "latched"]


def test_the_web_process_sees_the_same_models_and_reasons(in_process, through_worker) -> None:
    """The panel reads the worker's models as it read the ones loaded in process: the same lines,
    the damaged adapter left out with the same reason, the ViT's labels; no weights cross."""
    models, _ = in_process
    assert statuses(through_worker) == statuses(models)
    garbage = through_worker.vlm.named("garbage")
    assert garbage is not None and not garbage.in_use
    assert garbage.reason.startswith("adapter not used: its weights hold NaN or infinite values")
    assert model_fns.class_labels(through_worker.vit.loaded) == ("OK", "BENDNG", "NUKENG")
    assert isinstance(through_worker.vlm.loaded, model_fns.RemoteModel)
    assert through_worker.vlm.has_adapter and through_worker.worker


def test_the_worker_runs_at_a_lower_priority(worker) -> None:
    parent = os.getpriority(os.PRIO_PROCESS, 0)
    assert os.getpriority(os.PRIO_PROCESS, worker.pid) == min(19, parent + 10)


def test_a_model_error_comes_back_as_itself(worker, through_worker, composites) -> None:
    with pytest.raises(RuntimeError, match="adapter 'garbage' is not loaded"):
        model_fns.answer_with_vlm(composites[0], adapter="garbage", max_new_tokens=4)
    with pytest.raises(ValueError, match="no model function of the worker"):
        worker.call("load_models")


def test_a_killed_worker_fails_its_call_in_one_line_and_is_restarted(
    worker, through_worker, in_process, composites
) -> None:
    from qeu_space.ui.handlers import _short_error

    _, expected = in_process
    first, restarts = worker.pid, worker.restarts
    outcome: list = []

    def long_call() -> None:
        try:
            outcome.append(
                model_fns.answers_with_vlm(
                    composites * 20, adapter="latched", max_new_tokens=MAX_NEW_TOKENS
                )
            )
        except Exception as err:  # noqa: BLE001 - the test looks at it
            outcome.append(err)

    caller = threading.Thread(target=long_call)
    caller.start()
    deadline = time.monotonic() + 60
    while not worker._pending and time.monotonic() < deadline:  # sent, not answered yet
        time.sleep(0.01)
    assert worker._pending, "the call never reached the worker"
    os.kill(first, signal.SIGKILL)
    caller.join(timeout=60)
    assert not caller.is_alive(), "the call hangs after the worker died"
    (err,) = outcome
    assert isinstance(err, WorkerDied), err
    line = _short_error(err)
    assert line == str(err) and "\n" not in line
    assert line == (
        "the model worker stopped (killed by signal 9) during this call; it is being "
        "restarted: try again"
    )
    # the next call waits for the fresh worker and gets the same answer as before
    again = model_fns.answers_with_vlm(composites, adapter=None, max_new_tokens=MAX_NEW_TOKENS)
    assert again == expected["vlm", None]
    assert worker.restarts == restarts + 1 and worker.pid not in (None, first)


def test_a_closed_worker_refuses_calls_and_is_gone(tiny, composites) -> None:
    worker = ModelWorker.start(settings_for(tiny, QEU_BASE_MODEL="", QEU_OD_MODEL=""), CPU)
    pid = worker.pid
    worker.close()
    assert worker.pid is None and not _alive(pid)
    with pytest.raises(WorkerDied, match="the model worker is stopped"):
        worker.call("classify_with_vit", composites[0])


def test_a_worker_closed_while_it_loads_is_stopped(tiny) -> None:
    worker = ModelWorker.start(settings_for(tiny), CPU, wait=False)
    pid = worker._loading.pid
    worker.close()
    with pytest.raises(WorkerDied, match="stopped while loading the models"):
        worker.wait()
    assert wait_gone(pid) and worker.pid is None


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for its reaper does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


WEB_PROCESS = """
import json, sys, time
from qeu_space.modeling.devices import DeviceInfo
from qeu_space.ui.settings import AppSettings
from qeu_space.ui.worker import ModelWorker

worker = ModelWorker.start(AppSettings.from_env(json.loads(sys.argv[1])), DeviceInfo(
    "cpu", "cpu", "CPU"))
lines = [slot.status() for slot in (worker.models.vlm, worker.models.vit, worker.models.od)]
print(json.dumps({"pid": worker.pid, "status": lines}), flush=True)
time.sleep(600)
"""


def test_a_worker_whose_web_process_dies_leaves_and_says_what_failed_to_load(tiny) -> None:
    """kill -9 of the web process (no atexit runs) still ends the worker; a base that is not
    there reads as it does in process."""
    env = {**tiny, "QEU_BASE_MODEL": "/nonexistent/base", "QEU_OD_MODEL": "", "QEU_DEVICE": "cpu"}
    web = subprocess.Popen(
        [sys.executable, "-c", WEB_PROCESS, json.dumps(env)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        said = json.loads(web.stdout.readline())
    finally:
        web.kill()
        web.wait(timeout=30)
    loaded_here = model_fns.load_models(AppSettings.from_env(env), CPU)
    model_fns.use_models(model_fns.Models())
    assert said["status"] == statuses(loaded_here)
    assert said["status"][0] == "chat VLM: model not available: base (see README)"
    assert wait_gone(said["pid"]), "the worker outlived its web process"


def wait_gone(pid: int, timeout: float = 30.0) -> bool:
    """Whether process ``pid`` has ended within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    return not _alive(pid)
