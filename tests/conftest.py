"""Shared pytest fixtures."""

from __future__ import annotations

import os

# Benchmark modules the tests import set NUMBA_NUM_THREADS=1 at import (so their timings are one
# core's); numba refuses a thread count that changes after its pool has started, so the whole
# test session uses the same count from the start.
os.environ.setdefault("NUMBA_NUM_THREADS", "1")

# Tests import app.py, which builds the Space at import: its models stay in this process (the
# tests swap and patch them). Apps launched as processes (tests/browser/app_server.app_env drops
# every QEU_ variable) run their models in the model worker, as the Space does on a CPU;
# tests/test_model_worker.py starts workers of its own.
os.environ.setdefault("QEU_MODEL_WORKER", "0")

pytest_plugins = ["tests.hub_standin"]
