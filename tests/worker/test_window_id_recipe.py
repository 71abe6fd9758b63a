"""What the README promises operators, checked on a real `vbw run`:

- relative paths in a config (file source, model_dir, JSONL sink) resolve against the working
  directory, not the config file's directory;
- the README's "Window ids" recipe, run as written, recomputes every published `window_id`,
  partial windows included;
- every published document is valid against the committed schema, date-time format included.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import jsonschema

from worker.messages import WINDOW_NAMESPACE

REPO = Path(__file__).resolve().parents[2]


def readme_recipe():
    """The README's window-id function, executed exactly as a consumer would copy it."""
    text = (REPO / "README.md").read_text()
    m = re.search(
        r"<!-- window-id-recipe:start.*?```python\n(.*?)```\s*<!-- window-id-recipe:end -->", text, re.S
    )
    assert m, "README.md lacks the window-id-recipe block"
    scope: dict = {}
    exec(compile(m.group(1), "README.md:window-id-recipe", "exec"), scope)
    return scope["window_id"], scope["VBW_WINDOWS"]


def test_readme_namespace_is_the_codes():
    _, namespace = readme_recipe()
    assert namespace == WINDOW_NAMESPACE


def test_relative_paths_follow_the_working_directory_and_published_ids_follow_the_recipe(tmp_path):
    conf, run = tmp_path / "conf", tmp_path / "run"
    conf.mkdir()
    run.mkdir()
    (run / "clip.mp4").symlink_to(REPO / "samples" / "demo.mp4")
    (run / "models").symlink_to(REPO / "models")
    (conf / "c.yaml").write_text(
        "sources: [{type: file, id: gate, path: clip.mp4}]\n"
        "sampling: {fps: 5}\n"
        "windows: {stride: 4, partial: pad}\n"  # the video's tail: a padded, partial window
        "engine: {model_dir: models/vbw-motion-small, backend: onnxruntime, threads: 1}\n"
        "sinks: [{type: jsonl, path: out/windows.jsonl}]\n"
        "metrics: {enabled: false}\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("VBW_")}
    r = subprocess.run(
        [sys.executable, "-m", "vbw.cli", "run", "-c", "../conf/c.yaml"],
        cwd=run,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert not (conf / "out").exists(), "a relative sink path must not follow the config file"
    lines = (run / "out" / "windows.jsonl").read_text(encoding="utf-8").rstrip("\n").split("\n")
    docs = [json.loads(line) for line in lines]
    assert len(docs) >= 10
    assert any(not d["complete"] for d in docs), "expected the padded tail window"

    recipe, _ = readme_recipe()
    validator = jsonschema.Draft202012Validator(
        json.loads((REPO / "schemas" / "vbw.window.v1.json").read_text()),
        format_checker=jsonschema.FormatChecker(),
    )
    for d in docs:
        assert recipe(d) == d["window_id"], d
        assert uuid.UUID(d["window_id"]).version == 5
        validator.validate(d)
