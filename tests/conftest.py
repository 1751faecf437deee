"""Shared pytest fixtures."""

from __future__ import annotations

import os

# Benchmark modules the tests import set NUMBA_NUM_THREADS=1 at import (so their timings are one
# core's); numba refuses a thread count that changes after its pool has started, so the whole
# test session uses the same count from the start.
os.environ.setdefault("NUMBA_NUM_THREADS", "1")

pytest_plugins = ["tests.hub_standin"]
