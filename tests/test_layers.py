"""The packages import one way (pyproject.toml [tool.importlinter]), checked by import-linter itself.

A second test proves the check can fail: it copies the packages into a scratch tree, adds a
forbidden import (the runtime importing training code) and expects lint-imports to refuse it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("vbw", "worker", "build_engine", "engines", "videobert", "media", "contracts")
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint(root: Path) -> subprocess.CompletedProcess[str]:
    # PYTHONPATH first: lint-imports must read the tree in `root`, not the installed (editable) one.
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(root / "pyproject.toml"), "--no-cache"],
        cwd=root,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_layers_contract_is_kept() -> None:
    res = _lint(REPO)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Contracts: 2 kept, 0 broken." in res.stdout


def test_a_forbidden_import_breaks_the_contract(tmp_path: Path) -> None:
    for pkg in PACKAGES:
        shutil.copytree(REPO / pkg, tmp_path / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    windows = tmp_path / "worker" / "windows.py"
    windows.write_text(windows.read_text() + "\nfrom build_engine import train  # noqa: E402, F401\n")
    res = _lint(tmp_path)
    assert res.returncode != 0
    assert "one-way layers BROKEN" in res.stdout
    assert "worker.windows -> build_engine.train" in res.stdout
