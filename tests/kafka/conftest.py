"""Kafka test fixtures: a real Tansu broker per test (it starts in milliseconds) and client helpers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from services.tansu import Tansu

# Tansu holds JoinGroup open for about half the session timeout: keep it short in tests.
FAST_GROUP = {"session_timeout_ms": 2000, "heartbeat_interval_ms": 500}


@pytest.fixture()
def broker(tmp_path: Path) -> Iterator[Tansu]:
    with Tansu(log_path=tmp_path / "tansu.log") as b:
        yield b
