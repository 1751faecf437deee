"""The package installs: pins agree with the requirements, the CLIs are console scripts, the
embedded models travel as package data, and ``pip install .`` works from any folder.

The install test is the real thing on a budget: a venv that sees the system's packages
(``--system-site-packages``, so no dependency is downloaded), the project installed into it with
``--no-deps`` from a copy of the tree, then run from an unrelated folder. It builds with what
``[build-system] requires`` names, whatever the interpreter running the tests has: offline
(``--no-build-isolation --no-index``) where that interpreter already satisfies it, else in pip's
isolated build environment, which fetches it from the package index as a real ``pip install .``
does (a base interpreter's setuptools 65 rejects the ``license`` string of ``pyproject.toml``).
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from setuptools import find_packages

from qeu_space.modeling.catalog import MODELS_DIR_ENV, embedded_model, models_dir

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))


def _requirements(name: str) -> list[str]:
    lines = (REPO / name).read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith(("#", "-r"))]


def test_dependencies_are_the_requirements_pins() -> None:
    project = PYPROJECT["project"]
    assert project["dependencies"] == _requirements("requirements.txt")
    assert project["optional-dependencies"]["dev"] == _requirements("requirements-dev.txt")
    assert project["optional-dependencies"]["video"] == _requirements("requirements-video.txt")
    assert PYPROJECT["build-system"]["build-backend"] == "setuptools.build_meta"


def test_package_list_is_every_package_and_the_embedded_models() -> None:
    found = find_packages(str(REPO), include=["qeu_space*", "dataset_tools*"])
    listed = PYPROJECT["tool"]["setuptools"]["packages"]
    assert sorted(listed) == sorted([*found, "qeu_space.embedded_models"]), (
        "a package was added or removed: update [tool.setuptools] packages in pyproject.toml"
    )
    assert PYPROJECT["tool"]["setuptools"]["package-dir"] == {"qeu_space.embedded_models": "models"}


@pytest.mark.parametrize("script", sorted(PYPROJECT["project"]["scripts"]))
def test_console_scripts_point_at_a_main(script: str) -> None:
    module, _, function = PYPROJECT["project"]["scripts"][script].partition(":")
    assert callable(getattr(importlib.import_module(module), function))


def test_models_dir_finds_the_checkout_or_the_variable(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv(MODELS_DIR_ENV, raising=False)
    assert models_dir() == REPO / "models"
    assert embedded_model("vit-inspector") == REPO / "models" / "vit-inspector"
    monkeypatch.setenv(MODELS_DIR_ENV, str(tmp_path))
    assert embedded_model("inspection-vlm-lora") == tmp_path / "inspection-vlm-lora"
    monkeypatch.setenv(MODELS_DIR_ENV, str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match=MODELS_DIR_ENV):
        models_dir()
    with pytest.raises(ValueError, match="unknown embedded model"):
        embedded_model("gpt-2")


_IGNORED = shutil.ignore_patterns(
    ".git", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", ".ruff_cache",
    ".hypothesis", ".venv", "data", "runs", "out", "tmp",
)  # fmt: skip

CHECK = """
import json, os, sys
import qeu_space
from qeu_space.modeling.catalog import EMBEDDED_MODELS, models_dir
here = models_dir()
print(json.dumps({
    "package": qeu_space.__file__,
    "models": str(here),
    "complete": all(
        (here / n / "config.json").is_file() or (here / n / "adapter_config.json").is_file()
        for n in EMBEDDED_MODELS
    ),
    "processor": (here / "vit-inspector" / "processing_qeu.py").is_file(),
}))
"""


def build_requirements_met() -> bool:
    """Whether this interpreter already has every ``[build-system] requires`` package."""
    from importlib.metadata import PackageNotFoundError, version

    from packaging.requirements import Requirement

    for text in PYPROJECT["build-system"]["requires"]:
        requirement = Requirement(text)
        try:
            installed = version(requirement.name)
        except PackageNotFoundError:
            return False
        if not requirement.specifier.contains(installed, prereleases=True):
            return False
    return True


def install_flags() -> list[str]:
    """``pip install`` flags for the copy: offline when the build requirements are here."""
    if build_requirements_met():
        return ["--no-build-isolation", "--no-index"]
    return []  # pip builds in isolation with the build requirements from the index


def test_build_requirements_are_checked_not_assumed(monkeypatch) -> None:
    import importlib.metadata

    assert install_flags() in (["--no-build-isolation", "--no-index"], [])
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "65.5.0")  # an old base
    assert not build_requirements_met() and install_flags() == []


@pytest.mark.slow
def test_pip_install_works_from_any_folder(tmp_path: Path) -> None:
    source = tmp_path / "src"
    shutil.copytree(REPO, source, ignore=_IGNORED)
    venv = tmp_path / "venv"
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", "--system-site-packages", str(venv)],
        check=True,
        timeout=120,
    )
    python = venv / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", MODELS_DIR_ENV)}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--no-deps", *install_flags(), "--no-cache-dir",
         "-q", str(source)],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr[-3000:]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    def run(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            argv, cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300
        )

    done = run(str(python), "-c", CHECK)
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout)
    site = str(venv)
    assert found["package"].startswith(site)  # the installed copy, not the checkout
    assert found["models"].startswith(site) and found["complete"] and found["processor"]
    for script in PYPROJECT["project"]["scripts"]:
        done = run(str(venv / "bin" / script), "--help")
        assert done.returncode == 0 and "usage:" in done.stdout, (script, done.stderr[-2000:])
    done = run(str(python), "-m", "qeu_space.soartc", "--help")
    assert done.returncode == 0 and "usage:" in done.stdout
    (source / "models").rename(source / "moved")  # the checkout's models are not what it reads
    done = run(str(python), "-c", CHECK)
    assert json.loads(done.stdout)["models"].startswith(site)
