"""Deploying the Space: binaries in LFS / Xet form, front matter the Hub accepts, and the README's
upload (``upload_folder`` with its ignore patterns) against the Hub stand-in."""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path

import pytest
from huggingface_hub import HfApi

from qeu_space.hub.metadata import card_problems, front_matter
from qeu_space.modeling.catalog import EMBEDDED_MODELS
from tests.hub_standin import HubStandin

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text(encoding="utf-8")
#: The README's ignore patterns (hf upload --exclude / upload_folder ignore_patterns).
IGNORED = ["tests/*", "benchmarks/*", "data/*", "runs/*", "out/*", "build/*", "**/__pycache__/*"]
_LOCAL = (".git", "data", "runs", "out", "build", "__pycache__", ".pytest_cache", ".ruff_cache",
          ".hypothesis", ".venv", "tmp")  # fmt: skip


def _lfs_patterns() -> list[str]:
    lines = (REPO / ".gitattributes").read_text(encoding="utf-8").splitlines()
    return [
        line.split()[0]
        for line in lines
        if line.strip() and not line.startswith("#") and "filter=lfs" in line.split()
    ]


def _tree() -> list[Path]:
    return [
        p
        for p in REPO.rglob("*")
        if p.is_file()
        and not any(part in _LOCAL for part in p.relative_to(REPO).parts)
        and not p.name.endswith(".egg-info")
    ]


def test_every_binary_is_stored_in_lfs() -> None:
    patterns = _lfs_patterns()
    for suffix in ("safetensors", "png", "parquet", "jpg"):
        assert f"*.{suffix}" in patterns
    binaries = [p for p in _tree() if b"\0" in p.read_bytes()[:8000]]
    assert any(p.suffix == ".safetensors" for p in binaries)
    loose = [
        str(p.relative_to(REPO))
        for p in binaries
        if not any(fnmatch.fnmatch(p.name, pattern) for pattern in patterns)
    ]
    assert loose == [], "add their patterns to .gitattributes"


def test_front_matter_lists_the_models_and_dataset_the_space_uses() -> None:
    meta = front_matter(README)
    assert card_problems(README, kind="space") == []
    assert meta["sdk"] == "gradio" and meta["app_file"] == "app.py"
    assert sorted(m.split("/")[1] for m in meta["models"]) == sorted(EMBEDDED_MODELS)
    assert meta["datasets"] and all(d.count("/") == 1 for d in meta["datasets"])


def test_deploy_section_names_the_command_hardware_and_variables() -> None:
    section = README[README.index("## Deploying the Space") :]
    section = section[: section.index("\n## ", 5)]
    assert "hf upload" in section and "upload_folder" in section
    assert "ZeroGPU" in section and "CPU basic" in section
    table = README[README.index("### Environment variables") :]
    for variable in set(re.findall(r"\b(QEU_[A-Z_]+|HF_TOKEN)\b", section)):
        assert f"`{variable}`" in table, variable
    for pattern in IGNORED:
        assert f'"{pattern}"' in section


@pytest.mark.slow
def test_the_readme_upload_against_the_standin(hub_standin: HubStandin) -> None:
    api = HfApi(endpoint=hub_standin.endpoint, token=hub_standin.token)
    api.create_repo("me/qeu-space", repo_type="space", space_sdk="gradio")
    api.upload_folder(
        repo_id="me/qeu-space", repo_type="space", folder_path=REPO, ignore_patterns=IGNORED
    )
    space = hub_standin.repo_path("me/qeu-space", "space")
    for name in ("app.py", "requirements.txt", "README.md", ".gitattributes"):
        assert (space / name).is_file(), name
    assert (space / "models" / "vit-inspector" / "processing_qeu.py").is_file()
    assert not (space / "tests").exists() and not (space / "benchmarks").exists()
    lfs = hub_standin.lfs_paths("me/qeu-space", "space")
    assert "models/vit-inspector/model.safetensors" in lfs and "docs/app.png" in lfs
