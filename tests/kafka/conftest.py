"""Kafka test fixtures: a real Tansu broker per test (it starts in milliseconds) and client helpers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from services.tansu import Tansu


@pytest.fixture()
def broker(tmp_path: Path) -> Iterator[Tansu]:
    with Tansu(log_path=tmp_path / "tansu.log") as b:
        yield b
