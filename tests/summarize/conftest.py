"""Fixtures of the summary tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from summary_events import EventFixture, build_event_fixture


@pytest.fixture
def event_fixture(tmp_path: Path) -> EventFixture:
    return build_event_fixture(tmp_path)
