"""Fixtures for the deployment tests: rendered Kustomize overlays, the Dockerfiles, the worker CLI.

Nothing here needs a cluster or a Docker engine: overlays are rendered with `kubectl kustomize`
(Debian's kubectl, installed by scripts/setup.sh) and checked offline.
"""

from __future__ import annotations

import functools
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s"
DOCKER = DEPLOY / "docker"
OVERLAYS = sorted(p.name for p in (K8S / "overlays").iterdir() if (p / "kustomization.yaml").is_file())
DOCKERFILES = sorted(p for p in DOCKER.glob("Dockerfile.*") if p.suffix != ".dockerignore")

# The command the images run and the tests run: `vbw run -c FILE`.
WORKER_COMMAND = ("vbw", "run", "-c")


def vbw_exe() -> str:
    """The `vbw` console script of the interpreter running the tests."""
    exe = Path(sys.executable).with_name("vbw")
    if not exe.is_file():
        pytest.fail(f"no vbw console script next to {sys.executable}: run scripts/setup.sh dev")
    return str(exe)


@functools.cache
def render(overlay: str) -> tuple[dict[str, Any], ...]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail("kubectl is not installed: scripts/setup.sh dev installs Debian's kubectl")
    out = subprocess.run(
        [kubectl, "kustomize", str(K8S / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if out.returncode != 0:
        pytest.fail(f"kubectl kustomize overlays/{overlay} failed:\n{out.stderr}")
    return tuple(d for d in yaml.safe_load_all(out.stdout) if d)


def workloads(docs: tuple[dict[str, Any], ...]) -> list[dict[str, Any]]:
    """vbw's own Deployments and StatefulSets (not third-party ones such as kafka-exporter)."""
    return [
        d
        for d in docs
        if d["kind"] in ("Deployment", "StatefulSet")
        and d["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/name") == "vbw"
    ]


def one(docs: tuple[dict[str, Any], ...], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


@functools.cache
def dockerfile_final_stage(path: Path) -> dict[str, Any]:
    """ENTRYPOINT, CMD, USER, HEALTHCHECK, VOLUME, WORKDIR, COPY lines of the last stage.

    Dockerfile syntax is simple enough for this: logical lines (backslash continuations joined),
    split into stages at FROM. Exec-form (JSON) ENTRYPOINT/CMD only, which the images use.
    """
    text = re.sub(r"\\\n", " ", path.read_text())
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    stages: list[list[str]] = []
    for ln in lines:
        if ln.upper().startswith("FROM "):
            stages.append([])
        if stages:
            stages[-1].append(ln)
    out: dict[str, Any] = {"from": stages[-1][0].split()[1], "copy": [], "stages": stages}
    for ln in stages[-1]:
        word, _, rest = ln.partition(" ")
        word = word.upper()
        if word in ("ENTRYPOINT", "CMD"):
            out[word.lower()] = json.loads(rest)
        elif word in ("USER", "WORKDIR", "HEALTHCHECK", "VOLUME"):
            out[word.lower()] = rest.strip()
        elif word == "COPY":
            out["copy"].append(rest.strip())
    return out


class Deploy:
    """The helpers above, handed to tests as the `deploy` fixture (conftest is not importable)."""

    repo = REPO
    k8s = K8S
    docker = DOCKER
    overlays = OVERLAYS
    dockerfiles = DOCKERFILES
    worker_command = WORKER_COMMAND
    render = staticmethod(render)
    workloads = staticmethod(workloads)
    one = staticmethod(one)
    dockerfile_final_stage = staticmethod(dockerfile_final_stage)
    vbw_exe = staticmethod(vbw_exe)


@pytest.fixture(scope="session")
def deploy() -> type[Deploy]:
    return Deploy


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "overlay" in metafunc.fixturenames:
        metafunc.parametrize("overlay", OVERLAYS)
    if "dockerfile" in metafunc.fixturenames:
        metafunc.parametrize("dockerfile", DOCKERFILES, ids=[p.name for p in DOCKERFILES])
