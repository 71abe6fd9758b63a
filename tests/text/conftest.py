"""Text-side fixtures: the tiny model (with a text encoder) from tests/tiny_model.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from tiny_model import tiny_model_dir as _tiny_model_dir


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _tiny_model_dir(tmp_path_factory.getbasetemp())
