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


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random tiny model (T=8, 32x32): for the delivery machinery, not for accuracy.

    KAFKA_TESTS_TINY_MODEL=DIR reuses one exported earlier (saves the export while developing)."""
    import os

    from tiny_model import tiny_model_dir as _tiny_model_dir

    if os.environ.get("KAFKA_TESTS_TINY_MODEL"):
        return Path(os.environ["KAFKA_TESTS_TINY_MODEL"])

    return _tiny_model_dir(tmp_path_factory.getbasetemp())
