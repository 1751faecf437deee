"""Loading the embedded models touches no network, whatever the adapter names as its base."""

from __future__ import annotations

import socket
import warnings

import pytest

from qeu_space.modeling.loading import load_model, trained_for


@pytest.mark.parametrize(
    ("base", "adapter", "family"),
    [
        ("models/inspection-vlm-base", "models/inspection-vlm-lora", "chat_vlm"),
        ("models/inspection-od-base", "models/inspection-od-lora", "florence2"),
    ],
)
def test_embedded_base_and_adapter_load_without_reaching_the_network(
    monkeypatch, base: str, adapter: str, family: str
):
    def refuse(*args, **kwargs):
        raise AssertionError(f"network reached: {args}")

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    assert "/" in trained_for(adapter)  # a Hub id, not a local path
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = load_model(base, adapter, device="cpu")
    assert loaded.adapter and loaded.family == family
    reached = [str(w.message) for w in caught if "remote" in str(w.message).lower()]
    assert not reached, reached
