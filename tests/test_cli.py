"""Every command line behaves alike: fast ``--help``, one name per idea (former spellings still
work, with a note), one-line errors with exit code 2 before any work, progress with a total."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from qeu_space import cli

ROOT = Path(__file__).resolve().parents[1]
CLIS = {  # module: a complete argv (an unknown option is then the only mistake)
    "dataset_tools": ["build", "--config", "qa", "--num", "1", "--out", "o"],
    "qeu_space.train": ["--task", "qa", "--base", "b", "--dataset", "d", "--out", "o"],
    "qeu_space.evaluate": ["--task", "qa", "--base", "b", "--dataset", "d", "--report", "r.json"],
    "qeu_space.adapters": ["push", str(ROOT), "--push-to", "me/x"],  # inputs must exist
    "qeu_space.inspection_vlm": ["--out", "o"],
    "qeu_space.inspection_od": ["--out", "o"],
    "qeu_space.vision_pretrain": ["--base", "b", "--dataset", "d", "--out", "o"],
    "qeu_space.soartc": [str(ROOT / "README.md"), str(ROOT / "README.md")],
}
HELP = [
    ("dataset_tools", ["build", "--help"]),
    ("dataset_tools", ["from-feedback", "--help"]),
    ("qeu_space.train", ["--help"]),
    ("qeu_space.evaluate", ["--help"]),
    ("qeu_space.adapters", ["push", "--help"]),
    ("qeu_space.inspection_vlm", ["--help"]),
    ("qeu_space.inspection_od", ["--help"]),
    ("qeu_space.vision_pretrain", ["--help"]),
    ("qeu_space.soartc", ["--help"]),
]
_PROBE = """
import runpy, sys
sys.argv = [{module!r}, *{argv!r}]
try:
    runpy.run_module({module!r}, run_name="__main__", alter_sys=True)
except SystemExit as done:
    assert done.code in (0, None), done.code
print("HEAVY", sorted(m for m in ("torch", "datasets", "transformers", "peft") if m in sys.modules))
"""


def _main(module: str):
    name = f"{module}.__main__" if module in ("dataset_tools", "qeu_space.soartc") else module
    return importlib.import_module(name).main


@pytest.mark.parametrize("module, argv", HELP)
def test_help_answers_without_loading_the_heavy_libraries(module, argv):
    # --help must take well under 2 s: torch, datasets and transformers load after parsing
    done = subprocess.run(
        [sys.executable, "-c", _PROBE.format(module=module, argv=argv)],
        capture_output=True, text=True, cwd=ROOT, timeout=120, check=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert "usage:" in done.stdout
    assert done.stdout.strip().splitlines()[-1] == "HEAVY []"


@pytest.mark.parametrize("module", CLIS)
def test_a_wrong_argument_is_one_line_and_exit_2(module, capsys):
    with pytest.raises(SystemExit) as exited:
        _main(module)([*CLIS[module], "--no-such-option"])
    assert exited.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "error:" in err and "--no-such-option" in err


@pytest.mark.parametrize(
    "module, argv, dest, value, new",
    [
        ("qeu_space.adapters", ["push", ".", "--to", "me/x"], "repo_id", "me/x", "--push-to"),
        ("qeu_space.evaluate", ["--task", "qa", "--base", "b", "--dataset", "d", "--report",
                                "r.json", "--no-progress"], "quiet", True, "--quiet"),
        ("qeu_space.vision_pretrain", ["--base", "b", "--dataset", "d", "--out", "o",
                                       "--steps", "7"], "max_steps", 7, "--max-steps"),
    ],
)  # fmt: skip
def test_former_spellings_still_work_and_name_the_new_one(module, argv, dest, value, new, capsys):
    args = importlib.import_module(module).build_parser().parse_args(argv)
    assert getattr(args, dest) == value
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"is deprecated; use {new}" in err


@pytest.mark.parametrize(
    "module, argv, dest, default",
    [
        ("qeu_space.adapters", ["push", ".", "--push-to", "me/x"], "repo_id", "me/x"),
        ("qeu_space.evaluate", ["--task", "qa", "--base", "b", "--dataset", "d", "--report",
                                "r.json"], "quiet", False),
        ("qeu_space.vision_pretrain", ["--base", "b", "--dataset", "d", "--out", "o"],
         "max_steps", 600),
        ("qeu_space.train", ["--task", "qa", "--base", "b", "--dataset", "d", "--out", "o"],
         "quiet", False),
    ],
)  # fmt: skip
def test_the_current_names_parse_quietly(module, argv, dest, default, capsys):
    assert getattr(importlib.import_module(module).build_parser().parse_args(argv), dest) == default
    assert capsys.readouterr().err == ""


def _one_line(capsys, *needles: str) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err
    return err


def _a_file(tmp_path: Path) -> Path:
    path = tmp_path / "a-file"
    path.write_text("keep me")
    return path


def test_push_without_a_repo_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as exited:
        _main("qeu_space.adapters")(["push", str(tmp_path)])
    assert exited.value.code == 2
    _one_line(capsys, "--push-to")


def test_an_unknown_base_is_one_line(tmp_path, capsys, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # no retries here
    argv = ["--task", "qa", "--base", "no-such-owner/no-such-model", "--dataset", str(tmp_path),
            "--out", str(tmp_path / "run")]  # fmt: skip
    assert _main("qeu_space.train")(argv) == 2
    _one_line(capsys, "'no-such-owner/no-such-model'", "neither a folder nor a Hub model")
    assert not (tmp_path / "run").exists()


def test_a_device_that_is_not_there_is_refused_before_loading(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    argv = ["--task", "qa", "--base", str(tmp_path), "--dataset", str(tmp_path),
            "--report", str(tmp_path / "r.json"), "--device", "cuda"]  # fmt: skip
    assert _main("qeu_space.evaluate")(argv) == 2
    _one_line(capsys, "--device cuda", "no CUDA device")
    assert not (tmp_path / "r.json").exists()


@pytest.mark.parametrize("where", ["inside-a-file", "a-folder", "proc"])
def test_an_unwritable_report_is_refused_before_any_work(tmp_path, capsys, where):
    report = {
        "inside-a-file": _a_file(tmp_path) / "r.json",
        "a-folder": tmp_path / "folder.json",
        "proc": Path("/proc/qeu-no-such/r.json"),
    }[where]
    if where == "a-folder":
        report.mkdir()
    if where == "proc" and not Path("/proc").is_dir():
        pytest.skip("no /proc here")
    # a base that is no model: had the work started, the error would name it instead
    argv = ["--task", "qa", "--base", str(tmp_path), "--dataset", str(tmp_path),
            "--report", str(report)]  # fmt: skip
    assert _main("qeu_space.evaluate")(argv) == 2
    _one_line(capsys, "--report")


@pytest.mark.parametrize("module", ["qeu_space.inspection_vlm", "qeu_space.inspection_od"])
def test_model_builders_refuse_a_file_and_a_non_empty_folder_unless_overwrite(
    module, tmp_path, capsys
):
    main = _main(module)
    blocker = _a_file(tmp_path)
    assert main(["--out", str(blocker)]) == 2
    _one_line(capsys, "is a file")
    assert blocker.read_text() == "keep me"
    folder = tmp_path / "vlm"
    folder.mkdir()
    (folder / "precious.txt").write_text("keep me")
    assert main(["--out", str(folder)]) == 2
    _one_line(capsys, "not empty", "--overwrite")
    assert (folder / "precious.txt").read_text() == "keep me"
    assert main(["--out", str(folder), "--overwrite"]) == 0
    assert (folder / "config.json").is_file() and not (folder / "precious.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "vlm"]  # nothing staged left


@pytest.mark.parametrize("module", ["qeu_space.vision_pretrain", "qeu_space.train"])
def test_training_outputs_are_checked_before_any_work(module, tmp_path, capsys):
    argv = ["--base", str(tmp_path), "--dataset", str(tmp_path),
            "--out", str(_a_file(tmp_path))]  # fmt: skip
    if module == "qeu_space.train":
        argv = ["--task", "qa", *argv]
    assert _main(module)(argv) == 2
    _one_line(capsys, "is a file")


def test_output_files_of_the_small_tools_are_checked_first(tmp_path, capsys):
    png = _a_file(tmp_path) / "norms.png"
    assert _main("qeu_space.adapters")(["inspect", str(tmp_path), "--plot", str(png)]) == 2
    _one_line(capsys, "--plot")
    with pytest.raises(SystemExit) as exited:  # before reading either image
        _main("qeu_space.soartc")([str(png.parent), str(png.parent), "--out", str(png)])
    assert exited.value.code == 2
    _one_line(capsys, "--out", "cannot write")


@pytest.mark.parametrize(
    "check, args, message",
    [
        (cli.check_output_file, ("x/y.json", "--report"), None),
        (cli.check_output_folder, ("x/new",), None),
        (cli.check_device, ("cpu",), None),
        (cli.check_device, ("gpu7",), "not a device"),
        (cli.check_device, ("meta",), "only cpu, cuda and mps"),
    ],
)
def test_checks(tmp_path, monkeypatch, check, args, message):
    monkeypatch.chdir(tmp_path)
    if message is None:
        check(*args)
    else:
        with pytest.raises(cli.CliError, match=message):
            check(*args)


def test_build_progress_shows_the_total(capsys):
    from dataset_tools.builders import BuildConfig, build_dataset

    build_dataset(BuildConfig("cls", num=6, seed=0, size=224), progress=True)
    assert "9/9" in capsys.readouterr().err  # 6 train + 3 x 1 held-out rows, with the total


def test_training_quiet_turns_the_bar_off():
    from qeu_space.training.config import TrainConfig
    from qeu_space.training.run import training_arguments

    loud = TrainConfig("qa", "b", "d", "o")
    quiet = TrainConfig("qa", "b", "d", "o", progress=False)
    assert not training_arguments(loud, best_metric="findings_f1").disable_tqdm
    assert training_arguments(quiet, best_metric="findings_f1").disable_tqdm


def test_soartc_many_progress_shows_the_total(capsys):
    from qeu_space.soartc import soartc_many

    rng = np.random.default_rng(0)
    pairs = [(rng.random((40, 60)), rng.random((40, 60))) for _ in range(3)]
    results = soartc_many(pairs, workers=2, progress=True, register=False)
    assert len(results) == 3 and "3/3" in capsys.readouterr().err


def test_the_soartc_cli_repeats_the_kernels_settings_exactly():
    from qeu_space.soartc import __main__ as soartc_cli
    from qeu_space.soartc import core, overlay

    assert soartc_cli.DESCRIPTORS == core.DESCRIPTORS
    assert soartc_cli.DEFAULT_DESCRIPTOR == core.DEFAULT_DESCRIPTOR
    assert soartc_cli.DEFAULT_VMAX == overlay.DEFAULT_VMAX
