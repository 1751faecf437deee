"""Every console script answers every wrong argument with one line and exit code 2, fast.

One table per script (``[project.scripts]`` in ``pyproject.toml``, run as ``python -m ...``):
each row is a wrong command line. Each must exit 2 with exactly one line on stderr, no
traceback, and answer before any model or data is loaded (well within the bound below; the
bound is generous because the test machine is shared: a check after loading takes seconds more).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / "models"
#: Seconds a wrong argument may take to be answered (interpreter start included).
BOUND = 5.0

#: ``python -m`` module of each console script.
MODULES = {
    "qeu-dataset": "dataset_tools",
    "qeu-train": "qeu_space.train",
    "qeu-evaluate": "qeu_space.evaluate",
    "qeu-adapters": "qeu_space.adapters",
    "qeu-inspection-vlm": "qeu_space.inspection_vlm",
    "qeu-vision-pretrain": "qeu_space.vision_pretrain",
    "qeu-soartc": "qeu_space.soartc",
    "qeu-processor": "qeu_space.hub.processor",
    "qeu-card-check": "qeu_space.hub.metadata",
}

BUILD = ["build", "--config", "qa", "--num", "4", "--out", "{tmp}/out"]
TRAIN = ["--task", "qa", "--base", str(MODELS / "inspection-vlm-base"), "--dataset", "{tmp}",
         "--out", "{tmp}/run"]  # fmt: skip
EVAL = ["--task", "od", "--base", str(MODELS / "inspection-od-base"), "--dataset", "{tmp}",
        "--report", "{tmp}/r.json"]  # fmt: skip
PRETRAIN = ["--base", str(MODELS / "inspection-vlm-base"), "--dataset", "{tmp}", "--out",
            "{tmp}/v"]  # fmt: skip
SOARTC = ["{tmp}/good.png", "{tmp}/good.png"]

#: script -> (wrong command line, a phrase its one line must hold)
CASES: dict[str, list[tuple[list[str], str]]] = {
    "qeu-dataset": [
        ([], "required: command"),
        (["nope"], "invalid choice"),
        (["build", "--config", "xx", "--num", "4", "--out", "{tmp}/o"], "invalid choice"),
        ([*BUILD[:4], "0", *BUILD[5:]], "--num: must be at least 1"),
        ([*BUILD[:4], "-5", *BUILD[5:]], "--num: must be at least 1"),
        ([*BUILD[:4], "many", *BUILD[5:]], "'many' is not a whole number"),
        ([*BUILD, "--num-proc", "0"], "--num-proc: must be at least 1"),
        ([*BUILD, "--png-level", "4"], "--png-level: must be from 0 to 3"),
        ([*BUILD, "--size", "10"], "--size: must be at least"),
        ([*BUILD, "--eval-fraction", "2"], "--eval-fraction: must be in"),
        ([*BUILD, "--eval-fraction", "0"], "--eval-fraction: must be in"),
        ([*BUILD, "--unlabelled-fraction", "-1"], "--unlabelled-fraction: must be in"),
        ([*BUILD, "--housings", "standard", "--unseen-housing", "standard"], "must not be among"),
        ([*BUILD, "--kinds", "crooked"], "invalid choice"),
        ([*BUILD[:-1], "{tmp}/afile"], "is a file"),
        ([*BUILD[:-1], "{tmp}/full"], "is not empty"),
        ([*BUILD, "--push-to", "not a repo"], "repo"),
        (["from-feedback", "--db", "{tmp}/none.sqlite3", "--out", "{tmp}/f"], "does not exist"),
        (["from-feedback", "--out", "{tmp}/afile"], "is a file"),
    ],
    "qeu-train": [
        ([], "required"),
        (["--task", "xx", *TRAIN[2:]], "invalid choice"),
        ([*TRAIN[:3], "/nonexistent/base", *TRAIN[4:]], "/nonexistent/base does not exist"),
        ([*TRAIN[:5], "/nonexistent/data", *TRAIN[6:]], "/nonexistent/data does not exist"),
        ([*TRAIN, "--max-steps", "0"], "--max-steps: must be at least 1"),
        ([*TRAIN, "--max-steps", "-1"], "--max-steps: must be at least 1"),
        ([*TRAIN, "--epochs", "0"], "--epochs: must be greater than 0"),
        ([*TRAIN, "--rank", "0"], "--rank: must be at least 1"),
        ([*TRAIN, "--alpha", "0"], "--alpha: must be at least 1"),
        ([*TRAIN, "--dropout", "1"], "--dropout: must be in"),
        ([*TRAIN, "--learning-rate", "0"], "--learning-rate/--lr: must be greater than 0"),
        ([*TRAIN, "--lr", "nan"], "must be a finite number"),
        ([*TRAIN, "--batch-size", "0"], "--batch-size: must be at least 1"),
        ([*TRAIN, "--eval-batch-size", "0"], "--eval-batch-size: must be at least 1"),
        ([*TRAIN, "--grad-accum", "0"], "--grad-accum: must be at least 1"),
        ([*TRAIN, "--warmup-ratio", "1.5"], "--warmup-ratio: must be in"),
        ([*TRAIN, "--weight-decay", "-1"], "--weight-decay: must be at least 0"),
        ([*TRAIN, "--dataloader-workers", "-1"], "--dataloader-workers: must be at least 0"),
        ([*TRAIN, "--eval-steps", "0"], "--eval-steps: must be at least 1"),
        ([*TRAIN, "--eval-samples", "-1"], "--eval-samples: must be at least 0"),
        ([*TRAIN, "--max-new-tokens", "0"], "--max-new-tokens: must be at least 1"),
        ([*TRAIN, "--resume-from-checkpoint", "{tmp}/nothing"], "does not exist"),
        ([*TRAIN[:-1], "{tmp}/afile"], "is a file"),
        ([*TRAIN, "--push-to", "not a repo"], "repo"),
    ],
    "qeu-evaluate": [
        ([], "required"),
        ([*EVAL[:3], "/nonexistent/base", *EVAL[4:]], "/nonexistent/base does not exist"),
        ([*EVAL[:5], "/nonexistent/data", *EVAL[6:]], "/nonexistent/data does not exist"),
        ([*EVAL, "--adapter", "/nonexistent/adapter"], "/nonexistent/adapter does not exist"),
        ([*EVAL[:-1], "{tmp}/r.txt"], "--report must name a .json file"),
        ([*EVAL[:-1], "{tmp}/full.json"], "is a folder"),
        ([*EVAL, "--limit", "0"], "--limit: must be at least 1"),
        ([*EVAL, "--batch-size", "0"], "--batch-size: must be at least 1"),
        ([*EVAL, "--max-new-tokens", "-3"], "--max-new-tokens: must be at least 1"),
        ([*EVAL, "--device", "cuda:7"], "--device"),
        ([*EVAL, "--device", "toaster"], "--device"),
    ],
    "qeu-adapters": [
        ([], "required"),
        (["inspect", "/nonexistent/adapter"], "/nonexistent/adapter does not exist"),
        (["inspect", "{tmp}/afile"], "is a file"),
        (["inspect", str(MODELS / "inspection-od-lora"), "--plot", "{tmp}/full"], "is a folder"),
        (["push", str(MODELS / "inspection-od-lora")], "required: --push-to"),
        (["push", "/nonexistent/adapter", "--push-to", "me/x"], "does not exist"),
        (
            [
                "push",
                str(MODELS / "inspection-od-lora"),
                "--push-to",
                "me/x",
                "--metrics",
                "{tmp}/none.json",
            ],
            "does not exist",
        ),  # fmt: skip
        (["push", str(MODELS / "inspection-od-lora"), "--push-to", "not a repo"], "repo"),
    ],
    "qeu-inspection-vlm": [
        ([], "required: --out"),
        (["--out", "{tmp}/afile"], "is a file"),
        (["--out", "{tmp}/full"], "is not empty"),
        (["--out", "{tmp}/v", "--seed", "x"], "not a whole number"),
        (["--out", "{tmp}/v", "--seed", "-1"], "--seed: must be at least 0"),
    ],
    "qeu-vision-pretrain": [
        ([], "required"),
        ([*PRETRAIN, "--max-steps", "-1"], "--max-steps: must be at least 1"),
        ([*PRETRAIN, "--steps", "0"], "--steps: must be at least 1"),
        ([*PRETRAIN, "--batch-size", "0"], "--batch-size: must be at least 1"),
        ([*PRETRAIN, "--learning-rate", "0"], "--learning-rate: must be greater than 0"),
        (["--base", "/nonexistent/base", *PRETRAIN[2:]], "/nonexistent/base does not exist"),
        ([*PRETRAIN[:2], "--dataset", "/nonexistent/d", *PRETRAIN[4:]], "does not exist"),
        ([*PRETRAIN[:-1], "{tmp}/full"], "is not empty"),
    ],
    "qeu-soartc": [
        ([], "required"),
        (["{tmp}/none.png", "{tmp}/good.png"], "{tmp}/none.png does not exist"),
        (["{tmp}/good.png", "{tmp}"], "is a folder"),
        ([*SOARTC, "--window", "0"], "--window: must be at least"),
        ([*SOARTC, "--stride", "0"], "--stride: must be at least 1"),
        ([*SOARTC, "--top", "0"], "--top: must be"),
        ([*SOARTC, "--top", "28"], "--top: must be"),
        ([*SOARTC, "--vmax", "inf"], "--vmax: must be a finite number"),
        ([*SOARTC, "--references", "{tmp}/none.png"], "does not exist"),
        ([*SOARTC, "--out", "{tmp}/full"], "is a folder"),
        (["{tmp}/afile", "{tmp}/good.png"], "cannot read"),
        ([*SOARTC, "--descriptor", "x"], "invalid choice"),
    ],
    "qeu-processor": [
        ([], "required"),
        (["check", "/nonexistent"], "/nonexistent does not exist"),
        (["check", "{tmp}/afile"], "is a file"),
        (["install", "/nonexistent"], "/nonexistent does not exist"),
        (["install", "{tmp}/full"], "no config.json"),
        (["install", str(MODELS / "inspection-od-lora"), "--base", "/nonexistent"], "not exist"),
        (["usage", "/nonexistent", "--id", "o/x"], "/nonexistent does not exist"),
        (["usage", str(MODELS / "inspection-od-lora"), "--id", "o/x"], "--base-id"),
        (["usage", str(MODELS / "vit-inspector")], "required: --id"),
    ],
    "qeu-card-check": [
        ([], "required"),
        (["/nonexistent.md"], "/nonexistent.md does not exist"),
        (["{tmp}"], "is a folder"),
    ],
}


def test_names_repeated_for_speed_match_their_source() -> None:
    """The CLIs repeat a few names so that they answer before the heavy modules load."""
    from dataset_tools import __main__ as dataset_cli
    from dataset_tools import render, sampling
    from qeu_space import evaluate as evaluate_cli
    from qeu_space.evaluation import evaluate

    assert evaluate_cli.TASKS == evaluate.TASKS
    assert dataset_cli.CONFIGS == sampling.CONFIGS
    assert dataset_cli.TRAIN_POSITION_CHOICES == sampling.TRAIN_POSITION_CHOICES
    assert dataset_cli.VARIANT_NAMES == tuple(sampling.VARIANT_NAMES)
    assert dataset_cli.HOUSINGS == render.HOUSINGS
    assert dataset_cli.SEEN_HOUSINGS == render.SEEN_HOUSINGS
    assert dataset_cli.UNSEEN_HOUSING == render.UNSEEN_HOUSING


def test_every_console_script_has_a_table() -> None:
    text = (REPO / "pyproject.toml").read_text()
    block = text.split("[project.scripts]")[1].split("\n[")[0]
    scripts = dict(re.findall(r'^([\w-]+) = "([\w.:]+)"', block, re.M))
    assert set(scripts) == set(MODULES) == set(CASES)
    for name, module in MODULES.items():
        target = scripts[name].split(":")[0]
        assert target in (module, f"{module}.__main__"), (name, target)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A file, a non-empty folder and a good connector image the rows point at."""
    from PIL import Image

    tmp = tmp_path_factory.mktemp("cli")
    (tmp / "afile").write_text("not a folder, not an image\n")
    (tmp / "full").mkdir()
    (tmp / "full" / "x.txt").write_text("x")
    (tmp / "full.json").mkdir()
    Image.new("RGB", (448, 204), (200, 200, 200)).save(tmp / "good.png")
    return tmp


ROWS = [(script, argv, phrase) for script, rows in CASES.items() for argv, phrase in rows]


@pytest.mark.parametrize(("script", "argv", "phrase"), ROWS, ids=[
    f"{s}:{' '.join(a)[-60:] or '(none)'}" for s, a, _ in ROWS])  # fmt: skip
def test_wrong_argument_is_one_line_exit_2_before_any_work(
    script: str, argv: list[str], phrase: str, scratch: Path
) -> None:
    argv = [a.replace("{tmp}", str(scratch)) for a in argv]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", MODULES[script], *argv],
        cwd=REPO,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    seconds = time.perf_counter() - started
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert len(lines) == 1, done.stderr
    assert phrase.replace("{tmp}", str(scratch)) in lines[0], lines[0]
    assert seconds < BOUND, f"{seconds:.1f} s: {lines[0]}"
