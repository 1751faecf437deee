"""The Hub upload path (qeu_space.hub.upload) over real HTTP against the local stand-in."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import traceback
from pathlib import Path

import datasets
import numpy as np
import pytest
from huggingface_hub import constants
from PIL import Image
from safetensors.numpy import load_file, save_file

from qeu_space.hub.upload import (
    HubPushError,
    MissingTokenError,
    check_repo_id,
    push_folder,
    resolve_endpoint,
    resolve_token,
)
from tests import hub_standin as standin
from tests.hub_standin import HubStandin

hub_standin = standin.hub_standin  # the stand-in fixture, requested by name below

REPO_ROOT = Path(__file__).resolve().parents[1]

CARD = """---
license: apache-2.0
task_categories:
- image-text-to-text
configs:
- config_name: qa
  data_files:
  - split: train
    path: qa/train-*.parquet
  - split: test
    path: qa/test-*.parquet
---
# Tiny connector Q/A set (test)
"""


def _files(folder: Path) -> dict[str, bytes]:
    return {
        path.relative_to(folder).as_posix(): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def _image(seed: int) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, size=(12, 16, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def _dataset_folder(folder: Path) -> datasets.DatasetDict:
    features = datasets.Features(
        {
            "id": datasets.Value("string"),
            "image": datasets.Image(),
            "answer": datasets.Value("string"),
        }
    )
    splits = {}
    for split, seeds in (("train", [1, 2, 3]), ("test", [4, 5])):
        rows = {
            "id": [f"{split}-{seed}" for seed in seeds],
            "image": [_image(seed) for seed in seeds],
            "answer": [f"Defective. 1 defect: C{seed} missing pin." for seed in seeds],
        }
        splits[split] = datasets.Dataset.from_dict(rows, features=features)
        (folder / "qa").mkdir(parents=True, exist_ok=True)
        splits[split].to_parquet(str(folder / "qa" / f"{split}-00000-of-00001.parquet"))
    (folder / "README.md").write_text(CARD, encoding="utf-8")
    return datasets.DatasetDict(splits)


def _adapter_folder(folder: Path) -> None:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    tensors = {
        "base_model.model.q_proj.lora_A.weight": rng.standard_normal((4, 64), dtype=np.float32),
        "base_model.model.q_proj.lora_B.weight": rng.standard_normal((64, 4), dtype=np.float32),
    }
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    config = {"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["q_proj"]}
    (folder / "adapter_config.json").write_text(json.dumps(config), encoding="utf-8")
    (folder / "README.md").write_text("---\nbase_model: tiny/base\n---\n# adapter\n")


def test_dataset_push_loads_back(hub_standin: HubStandin, tmp_path: Path) -> None:
    built = _dataset_folder(tmp_path / "ds")
    url = push_folder(
        tmp_path / "ds", "qeu/connectors", repo_type="dataset", token=hub_standin.token
    )

    assert url.startswith(f"{hub_standin.endpoint}/datasets/qeu/connectors/commit/")
    routes = hub_standin.routes()
    for route in ("create_repo", "validate_yaml", "preupload", "lfs_batch", "lfs_upload", "commit"):
        assert route in routes
    assert routes.index("create_repo") < routes.index("preupload") < routes.index("commit")
    assert hub_standin.lfs_paths("qeu/connectors", "dataset") == {
        "qa/train-00000-of-00001.parquet",
        "qa/test-00000-of-00001.parquet",
    }
    assert hub_standin.commits("qeu/connectors", "dataset") == ["Upload ds with qeu_space"]

    stored = hub_standin.repo_path("qeu/connectors", "dataset")
    loaded = datasets.load_dataset(str(stored), "qa", cache_dir=str(tmp_path / "cache"))
    assert set(loaded) == {"train", "test"}
    for split, original in built.items():
        assert loaded[split].features == original.features
        assert loaded[split]["id"] == original["id"]
        assert loaded[split]["answer"] == original["answer"]
        for got, want in zip(loaded[split]["image"], original["image"], strict=True):
            np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_model_push_goes_through_lfs_byte_identical(
    hub_standin: HubStandin, tmp_path: Path
) -> None:
    folder = tmp_path / "adapter"
    _adapter_folder(folder)
    push_folder(folder, "qeu/florence2-od-lora", repo_type="model", token=hub_standin.token)

    stored = hub_standin.repo_path("qeu/florence2-od-lora", "model")
    assert _files(stored) == _files(folder)
    assert hub_standin.lfs_paths("qeu/florence2-od-lora") == {"adapter_model.safetensors"}
    assert load_file(str(stored / "adapter_model.safetensors")).keys() == {
        "base_model.model.q_proj.lora_A.weight",
        "base_model.model.q_proj.lora_B.weight",
    }
    routes = hub_standin.routes()
    assert routes.count("lfs_upload") == 1 and routes.count("lfs_verify") == 1
    # The token goes to every Hub route, never to the pre-signed upload URL.
    for request in hub_standin.requests:
        assert request.bearer == (request.route != "lfs_upload"), request
        assert request.status == 200, request


def test_second_identical_push_commits_nothing(hub_standin: HubStandin, tmp_path: Path) -> None:
    folder = tmp_path / "adapter"
    _adapter_folder(folder)
    first = push_folder(folder, "qeu/adapter", repo_type="model", token=hub_standin.token)
    n_requests = len(hub_standin.requests)
    second = push_folder(folder, "qeu/adapter", repo_type="model", token=hub_standin.token)

    assert second == first
    later = [request.route for request in hub_standin.requests[n_requests:]]
    assert "commit" not in later and "lfs_upload" not in later and "repo_info" in later
    assert hub_standin.commits("qeu/adapter") == ["Upload adapter with qeu_space"]


@pytest.fixture
def token_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No token anywhere; the login cache lives in ``tmp_path/hf-home/token`` (initially absent)."""
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE", "HF_TOKEN_PATH"):
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "hf-home"
    home.mkdir()
    monkeypatch.setenv("HF_HOME", str(home))
    # huggingface_hub derives these paths from HF_HOME once, at import.
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(home / "token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(home / "stored_tokens"))
    return home


@pytest.mark.parametrize(
    ("explicit", "env", "cached", "expected"),
    [
        ("hf_explicit", "hf_env", "hf_cached", "hf_explicit"),
        (None, "hf_env", "hf_cached", "hf_env"),
        (None, None, "hf_cached", "hf_cached"),
        ("  hf_explicit\n", None, None, "hf_explicit"),
        ("", "hf_env", None, "hf_env"),
    ],
)
def test_resolve_token_precedence(
    token_sources: Path,
    monkeypatch: pytest.MonkeyPatch,
    explicit: str | None,
    env: str | None,
    cached: str | None,
    expected: str,
) -> None:
    if env is not None:
        monkeypatch.setenv("HF_TOKEN", env)
    if cached is not None:
        (token_sources / "token").write_text(cached)
    assert resolve_token(explicit) == expected


def test_missing_token_is_one_clear_line(token_sources: Path) -> None:
    with pytest.raises(MissingTokenError) as caught:
        resolve_token()
    message = str(caught.value)
    assert "\n" not in message
    assert (
        "HF_TOKEN" in message and "hf auth login" in message and "nothing was uploaded" in message
    )


@pytest.mark.parametrize(("cached", "expected_rc"), [(True, 0), (False, 3)])
def test_login_cache_found_through_hf_home(tmp_path: Path, cached: bool, expected_rc: int) -> None:
    """A fresh interpreter with only ``HF_HOME`` set finds (or misses) the login cache."""
    home = tmp_path / "home"
    home.mkdir()
    secret = "hf_cached_in_home_dir"
    if cached:
        (home / "token").write_text(secret)
    script = (
        "import sys\n"
        "from qeu_space.hub.upload import MissingTokenError, resolve_token\n"
        "try:\n"
        f"    sys.exit(0 if resolve_token() == {secret!r} else 1)\n"
        "except MissingTokenError as err:\n"
        "    print(err)\n"
        "    sys.exit(3)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING_FACE"))}
    env.update(HF_HOME=str(home), PYTHONPATH=str(REPO_ROOT))
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == expected_rc, done.stderr
    assert secret not in done.stdout + done.stderr


def test_push_without_any_token_sends_nothing(
    hub_standin: HubStandin, token_sources: Path, tmp_path: Path
) -> None:
    _adapter_folder(tmp_path / "adapter")
    with pytest.raises(MissingTokenError):
        push_folder(tmp_path / "adapter", "qeu/adapter", repo_type="model")
    assert hub_standin.requests == []


@pytest.mark.parametrize(
    ("case", "step", "status"),
    [
        ("wrong token", "create repo (POST /api/repos/create)", "HTTP 401"),
        ("bad card yaml", "README metadata check (POST /api/validate-yaml)", "HTTP 400"),
    ],
)
def test_http_error_names_the_route_and_hides_the_token(
    hub_standin: HubStandin,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
    case: str,
    step: str,
    status: str,
) -> None:
    folder = tmp_path / "adapter"
    _adapter_folder(folder)
    token = hub_standin.token
    if case == "wrong token":
        token = "hf_wrong_" + "s3cr3t" * 4
    else:
        (folder / "README.md").write_text("---\nbase_model: [unclosed\n---\n")
    caplog.set_level(logging.DEBUG)

    with pytest.raises(HubPushError) as caught:
        push_folder(folder, "qeu/adapter", repo_type="model", token=token)

    error = caught.value
    message = str(error)
    assert step in message and status in message and "\n" not in message
    assert error.__cause__ is None and error.__context__ is None
    seen = [message, repr(error), "".join(traceback.format_exception(error)), caplog.text]
    seen += list(capsys.readouterr())
    for text in seen:
        assert token not in text
    if case == "wrong token":
        assert "HF_TOKEN" in message
        assert [r.status for r in hub_standin.requests if r.route == "create_repo"] == [401]
        assert all(request.bearer for request in hub_standin.requests)
    assert not hub_standin.repo_path("qeu/adapter").exists() or not _files(
        hub_standin.repo_path("qeu/adapter")
    )


def test_unreachable_endpoint_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    _adapter_folder(tmp_path / "adapter")
    with pytest.raises(HubPushError, match=r"create repo|cannot reach the Hub") as caught:
        push_folder(
            tmp_path / "adapter",
            "qeu/adapter",
            repo_type="model",
            token="hf_unreachable_secret",
            endpoint=f"http://127.0.0.1:{port}",
        )
    assert "cannot reach the Hub" in str(caught.value)
    assert "hf_unreachable_secret" not in str(caught.value)


def test_offline_mode_is_a_clear_error(
    hub_standin: HubStandin, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    _adapter_folder(tmp_path / "adapter")
    with pytest.raises(HubPushError, match="HF_HUB_OFFLINE is set; unset it to push"):
        push_folder(tmp_path / "adapter", "qeu/adapter", repo_type="model", token=hub_standin.token)
    assert hub_standin.requests == []


def test_xet_uploads_need_the_switch_the_fixture_sets(
    hub_standin: HubStandin, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With hf_xet on, huggingface_hub sends LFS files to Xet storage, which the stand-in lacks."""
    pytest.importorskip("hf_xet")
    assert os.environ["HF_HUB_DISABLE_XET"] == "1"
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", False)
    _adapter_folder(tmp_path / "adapter")
    with pytest.raises(HubPushError, match="cannot reach the Hub storage"):
        push_folder(tmp_path / "adapter", "qeu/adapter", repo_type="model", token=hub_standin.token)
    assert "xet_write_token" in hub_standin.routes()
    assert "lfs_batch" not in hub_standin.routes()


@pytest.mark.parametrize(
    "repo_id",
    ["", "no-owner", "a/b/c", "has space/name", "-lead/name", "owner/trail.", "owner/" + "x" * 97],
)
def test_invalid_repo_id_refused_before_any_request(
    hub_standin: HubStandin, tmp_path: Path, repo_id: str
) -> None:
    _adapter_folder(tmp_path / "adapter")
    with pytest.raises(ValueError, match="invalid Hub repo id"):
        push_folder(tmp_path / "adapter", repo_id, repo_type="model", token=hub_standin.token)
    with pytest.raises(ValueError, match="invalid Hub repo id"):
        check_repo_id(repo_id)
    assert hub_standin.requests == []


@pytest.mark.parametrize(
    ("make", "repo_type", "match"),
    [
        ("adapter", "space", "repo_type must be one of"),
        ("nothing", "model", "does not exist or is not a directory"),
        ("file", "model", "does not exist or is not a directory"),
        ("empty", "dataset", "holds no files"),
    ],
)
def test_bad_folder_or_type_refused_before_any_request(
    hub_standin: HubStandin, tmp_path: Path, make: str, repo_type: str, match: str
) -> None:
    target = tmp_path / "target"
    if make == "adapter":
        _adapter_folder(target)
    elif make == "file":
        target.write_text("not a folder")
    elif make == "empty":
        target.mkdir()
    with pytest.raises(ValueError, match=match):
        push_folder(target, "qeu/adapter", repo_type=repo_type, token=hub_standin.token)  # type: ignore[arg-type]
    assert hub_standin.requests == []


def test_endpoint_argument_beats_hf_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_ENDPOINT", "http://env.example/")
    assert resolve_endpoint() == "http://env.example"
    assert resolve_endpoint("http://arg.example/") == "http://arg.example"
    monkeypatch.delenv("HF_ENDPOINT")
    assert resolve_endpoint() is None
