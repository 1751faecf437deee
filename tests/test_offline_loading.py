"""Loading the embedded models touches no network, whatever the adapter names as its base."""

from __future__ import annotations

import socket
import warnings

from qeu_space.modeling.loading import load_model, trained_for


def test_embedded_base_and_adapter_load_without_reaching_the_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError(f"network reached: {args}")

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    assert "/" in trained_for("models/inspection-vlm-lora")  # a Hub id, not a local path
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = load_model(
            "models/inspection-vlm-base", "models/inspection-vlm-lora", device="cpu"
        )
    assert loaded.adapter
    reached = [str(w.message) for w in caught if "remote" in str(w.message).lower()]
    assert not reached, reached
