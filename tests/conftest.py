"""Shared pytest fixtures. Service fixtures (broker, RTSP server, Prometheus) live in tests/services/."""

from __future__ import annotations

from pathlib import Path

import pytest

from contracts.graph import MANIFEST_NAME

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = REPO / "models" / "vbw-motion-small"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def default_model_dir() -> Path:
    if not (DEFAULT_MODEL / MANIFEST_NAME).is_file():
        pytest.skip(f"shipped model not built yet: {DEFAULT_MODEL}")
    return DEFAULT_MODEL
