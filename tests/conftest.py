"""Shared pytest fixtures."""

from __future__ import annotations

pytest_plugins = ["tests.hub_standin"]
