"""Secrets stay out of logs, and the feedback dataset is published with a card and no server paths.

huggingface_hub 2.4 logs every HTTP request through ``httpx2`` at INFO, and the Space logs at
INFO: a push against the stand-in (fake token, pre-signed LFS upload URL) is scanned for the
token, the signature and any request line. The scan is shown to work by the same push without
:func:`quiet_http_logs`, whose log holds the signed URL.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from huggingface_hub import DatasetCard

from qeu_space.hub.feedback_card import (
    feedback_card,
    public_name,
    publishable_record,
    push_feedback_card,
)
from qeu_space.hub.metadata import front_matter, hub_problems
from qeu_space.hub.upload import HTTP_LOGGERS, HubPushError, push_folder, quiet_http_logs
from tests.hub_standin import HubStandin

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def restored_levels() -> Iterator[None]:
    levels = {name: logging.getLogger(name).level for name in HTTP_LOGGERS}
    yield
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


def _push_with_lfs(hub: HubStandin, tmp_path: Path, token: str) -> None:
    folder = tmp_path / "model"
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(os.urandom(4096))  # LFS: a signed upload URL
    (folder / "README.md").write_text("---\nlicense: apache-2.0\n---\n# m\n")
    push_folder(folder, "me/logged", repo_type="model", token=token)


def _leaks(text: str, token: str) -> list[str]:
    return [
        what
        for what, found in (
            ("token", token in text),
            ("signed URL", "signature=" in text),
            ("request line", "HTTP Request" in text),
            ("URL with a query", re.search(r"https?://\S+\?\S+", text) is not None),
        )
        if found
    ]


def test_a_push_logs_no_url_and_no_token_at_info(
    hub_standin: HubStandin, tmp_path: Path, caplog: pytest.LogCaptureFixture, restored_levels
) -> None:
    caplog.set_level(logging.INFO)  # the Space's level
    for name in HTTP_LOGGERS:  # as before quiet_http_logs (importing app.py, say, calls it)
        logging.getLogger(name).setLevel(logging.NOTSET)
    _push_with_lfs(hub_standin, tmp_path / "a", hub_standin.token)
    assert "signature=" in caplog.text  # without the fix: the signed URL is in the log

    caplog.clear()
    quiet_http_logs()
    _push_with_lfs(hub_standin, tmp_path / "b", hub_standin.token)
    with pytest.raises(HubPushError):  # a refused token: the failure path logs nothing either
        _push_with_lfs(hub_standin, tmp_path / "c", "hf_fake_token_0123456789abcdef")
    assert "lfs_upload" in hub_standin.routes()
    assert "pushed 2 files to model repo me/logged" in caplog.text
    assert _leaks(caplog.text, hub_standin.token) == []
    assert _leaks(caplog.text, "hf_fake_token_0123456789abcdef") == []


def test_the_space_quiets_the_http_loggers_after_configuring_logging() -> None:
    source = (REPO / "app.py").read_text(encoding="utf-8")
    configured = source.index("logging.basicConfig(")
    assert source.index("quiet_http_logs()", configured) > configured


# --------------------------------------------------------------------------- feedback dataset


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        (
            {"file_name": "/srv/app/feedback/r1/images/ab.png", "source": "gallery"},
            {"file_name": "images/ab.png", "source": "gallery"},
        ),
        ({"file_name": "images/ab.png"}, {"file_name": "images/ab.png"}),
        ({"file_name": "C:\\srv\\fb\\r1\\images\\ab.png"}, {"file_name": "images/ab.png"}),
        ({"source": "/tmp/gradio/1f2e/upload.png"}, {"source": "upload.png"}),
        (
            {"base_model": "/home/user/app/models/inspection-vlm-base", "adapter": "me/lora"},
            {"base_model": "models/inspection-vlm-base", "adapter": "me/lora"},
        ),
        ({"base_model": "/opt/ckpt/run-7", "adapter": ""}, {"base_model": "run-7", "adapter": ""}),
        (
            {"comment": "C7 looks /odd/", "correct": True},
            {"comment": "C7 looks /odd/", "correct": True},
        ),
    ],
)
def test_publishable_record_has_no_server_path(record: dict, expected: dict) -> None:
    assert publishable_record(record) == expected


def test_public_name_keeps_hub_ids() -> None:
    assert (
        public_name("HuggingFaceTB/SmolVLM-256M-Instruct") == "HuggingFaceTB/SmolVLM-256M-Instruct"
    )
    assert public_name(None) is None


def test_feedback_card_reads_as_the_hub_reads_it() -> None:
    text = feedback_card(
        "me/qeu-feedback",
        models=["/srv/app/models/inspection-vlm-base", "me/lora"],
        space="me/qeu-space",
    )
    meta = front_matter(text)
    assert hub_problems(meta, repo_type="dataset") == []
    assert meta["license"] == "cc-by-4.0"
    assert meta["configs"][0]["data_files"] == [{"split": "train", "path": "data/**"}]
    assert "`models/inspection-vlm-base`" in text and "/srv/app" not in text
    assert DatasetCard(text).data.pretty_name == "QEU Inspection Space feedback"


def test_feedback_card_push_lands_at_the_repo_root(
    hub_standin: HubStandin, caplog: pytest.LogCaptureFixture, restored_levels
) -> None:
    from huggingface_hub import HfApi

    caplog.set_level(logging.INFO)
    quiet_http_logs()
    api = HfApi(endpoint=hub_standin.endpoint, token=hub_standin.token)
    api.create_repo("me/qeu-feedback", repo_type="dataset", private=True)
    push_feedback_card("me/qeu-feedback", token=hub_standin.token, models=["me/lora"])
    card = hub_standin.repo_path("me/qeu-feedback", "dataset") / "README.md"
    assert card.is_file() and "me/lora" in card.read_text()
    assert "validate_yaml" in hub_standin.routes()
    assert _leaks(caplog.text, hub_standin.token) == []
    with pytest.raises(HubPushError, match="HTTP 401") as err:
        push_feedback_card("me/qeu-feedback", token="hf_fake_token_0123456789abcdef")
    assert "hf_fake" not in str(err.value)
