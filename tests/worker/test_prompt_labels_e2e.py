"""Zero-shot labels end to end: `vbw run` on a file source labels windows by the config's prompts,
and editing the prompts changes the published labels without retraining: after a restart, and
in a running worker by a config reload (SIGHUP), each stream switching at one window boundary.

Needs a model with a text encoder: the shipped one, or VBW_TEXT_MODEL_DIR to try another."""

from __future__ import annotations

import itertools
import os
import signal
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from worker_helpers import WorkerProc, metric_value, read_jsonl

from engines.manifest import load_manifest

LEFT, RIGHT, STILL = "something moves to the left", "something moves to the right", "nothing moves"


@pytest.fixture(scope="module")
def text_model_dir() -> Path:
    path = Path(os.environ.get("VBW_TEXT_MODEL_DIR", "models/vbw-motion-small")).resolve()
    if not (path / "model.json").is_file() or load_manifest(path, verify=False).text is None:
        pytest.skip(f"{path}: no model with a text encoder")
    return path


def _top_labels(
    worker_proc: Callable[..., WorkerProc], tmp: Path, model: Path, clip: Path, prompts: dict[str, str]
) -> Counter:
    out = tmp / f"out-{len(list(tmp.glob('out-*')))}.jsonl"
    w = worker_proc(
        {
            "sources": [{"type": "file", "id": "cam", "path": str(clip)}],
            "engine": {"model_dir": str(model), "labels": {"prompts": prompts}},
            "sinks": [{"type": "jsonl", "path": str(out)}],
        },
        jsonl=out,
    )
    w.wait_ready(timeout=120)
    # 16 s at 5 fps = 80 frames; T=16, stride 8 -> 9 windows
    w.wait_for(lambda: len(w.windows()) >= 9, 120, "the clip's windows")
    rc, _ = w.sigterm(timeout=60)
    assert rc == 0, w.stderr()
    docs = w.windows()
    for d in docs:
        assert {ls["label"] for ls in d["labels"]} <= set(prompts), d["labels"]
        assert abs(sum(ls["score"] for ls in d["labels"]) - 1.0) < 1e-3 or len(d["labels"]) < len(prompts)
    return Counter(d["labels"][0]["label"] for d in docs)


def test_editing_prompts_changes_published_labels(
    worker_proc: Callable[..., WorkerProc],
    tmp_path: Path,
    text_model_dir: Path,
    all_label_clips: dict[str, Path],
) -> None:
    clip = all_label_clips["move_left"]
    first = _top_labels(
        worker_proc, tmp_path, text_model_dir, clip, {"left": LEFT, "right": RIGHT, "still": STILL}
    )
    assert first.most_common(1)[0][0] == "left", first
    # The same names, the sentences swapped: the labels follow the sentences.
    second = _top_labels(
        worker_proc, tmp_path, text_model_dir, clip, {"left": RIGHT, "right": LEFT, "still": STILL}
    )
    assert second.most_common(1)[0][0] == "right", second
    renamed = _top_labels(worker_proc, tmp_path, text_model_dir, clip, {"westward": LEFT, "other": STILL})
    assert renamed.most_common(1)[0][0] == "westward", renamed


def test_prompts_on_a_model_without_text_fail_at_start(
    worker_proc: Callable[..., WorkerProc],
    tmp_path: Path,
    all_label_clips: dict[str, Path],
    tiny_model_dir: Path,
) -> None:
    from build_engine.export import export_model
    from videobert.model import VideoBERT, load_checkpoint, save_checkpoint

    # A vision-only copy of the tiny model.
    model = load_checkpoint(str(tiny_model_dir / "checkpoint.pt"))
    text_keys = ("text_encoder.", "window_encoder.head_align.")
    state = {k: v for k, v in model.state_dict().items() if not k.startswith(text_keys)}
    model.cfg.text = None
    plain = VideoBERT(model.cfg)
    plain.load_state_dict(state)
    save_checkpoint(plain, str(tmp_path / "vision.pt"))
    export_model(tmp_path / "vision.pt", tmp_path / "m", calib_clips=4, check_clips=8, precisions=("fp32",))
    w = worker_proc(
        {
            "sources": [{"type": "file", "id": "cam", "path": str(all_label_clips["grow"])}],
            "engine": {"model_dir": str(tmp_path / "m"), "labels": {"prompts": {"a": "something grows"}}},
            "sinks": [{"type": "stdout"}],
        }
    )
    assert w.proc is not None
    assert w.proc.wait(timeout=120) != 0
    assert "engine.labels.prompts needs a model with a text encoder" in w.stderr()


def _rewrite(w: WorkerProc, labels: dict | None) -> None:
    """The config file with other engine.labels, replaced whole (as a ConfigMap update lands),
    then SIGHUP."""
    cfg = yaml.safe_load(w.config_path.read_text())
    cfg["engine"]["labels"] = labels
    tmp = w.config_path.with_suffix(".new")
    tmp.write_text(yaml.safe_dump(cfg, sort_keys=False))  # the prompts' order is the labels'
    tmp.replace(w.config_path)
    assert w.proc is not None
    w.proc.send_signal(signal.SIGHUP)


def test_a_reload_changes_the_published_labels_without_a_restart(
    worker_proc: Callable[..., WorkerProc],
    tmp_path: Path,
    text_model_dir: Path,
    labelled_clips: dict[str, Path],
) -> None:
    """Prompts -> renamed prompts -> the classifier head, by two reloads of a running worker:
    every stream's windows switch label set once per reload, at one window boundary, every
    window once and in order, the same process throughout; old names' segments end there."""
    out, events = tmp_path / "windows.jsonl", tmp_path / "events.jsonl"
    first = {"left": LEFT, "right": RIGHT, "still": STILL}
    second = {"westward": LEFT, "eastward": RIGHT, "idle": STILL}
    classifier = set(load_manifest(text_model_dir, verify=False).labels)
    phases = [set(first), set(second), classifier]
    stride = 4
    w = worker_proc(
        {
            "sources": [
                {"type": "file", "id": f"cam{i}", "path": str(p), "loop": True}
                for i, p in enumerate(labelled_clips.values())
            ],
            "sinks": [
                {"type": "jsonl", "path": str(out)},
                {"type": "jsonl", "path": str(events), "payload": "events", "name": "events"},
            ],
            "windows": {"stride": stride, "partial": "pad"},
            "engine": {"model_dir": str(text_model_dir), "threads": 1, "labels": {"prompts": first}},
            "api": {"watch_config": False},  # SIGHUP only: one reload per edit
        },
        jsonl=out,
    )
    w.wait_ready(timeout=120)
    assert w.proc is not None
    pid = w.proc.pid

    def phase(d: dict) -> int:
        names = {ls["label"] for ls in d["labels"]}
        (k,) = [i for i, p in enumerate(phases) if names <= p]
        return k

    def every_stream_has(k: int, n: int) -> bool:
        per: dict[str, int] = defaultdict(int)
        for d in w.windows():
            per[d["stream_id"]] += phase(d) == k
        return len(per) == len(labelled_clips) and all(v >= n for v in per.values())

    def segment_open(names: set[str]) -> bool:  # a segment of these names started (cam0 moves left)
        return any(e["type"] == "start" and e["label"] in names for e in read_jsonl(events))

    w.wait_for(lambda: every_stream_has(0, 3), 120, "windows under the first prompts on every stream")
    w.wait_for(lambda: segment_open(phases[0]), 120, "a segment of the first prompts")
    _rewrite(w, {"prompts": second})
    w.wait_for(lambda: every_stream_has(1, 3), 120, "windows under the renamed prompts on every stream")
    w.wait_for(lambda: segment_open(phases[1]), 120, "a segment of the renamed prompts")
    _rewrite(w, None)
    w.wait_for(lambda: every_stream_has(2, 3), 120, "windows under the classifier's labels on every stream")
    metrics = w.metrics()
    assert metric_value(metrics, "vbw_config_reload_total", result="applied") == 2
    assert metric_value(metrics, "vbw_model_swaps_total", result="relabelled") == 2
    assert metric_value(metrics, "vbw_model_swaps_total", result="switched") == 0
    assert w.proc.poll() is None and w.proc.pid == pid  # no restart
    rc, _ = w.sigterm(timeout=60)
    assert rc == 0, w.stderr()[-3000:]
    log = w.stderr()
    assert log.count("loaded in") == 1  # the model was loaded once: no restart, no reload of it
    assert "labels changed: left, right, still -> westward, eastward, idle" in log

    by_stream: dict[str, list[dict]] = defaultdict(list)
    for d in w.windows():
        by_stream[d["stream_id"]].append(d)
    segs: dict[str, list[dict]] = defaultdict(list)
    for e in read_jsonl(events):
        segs[e["stream_id"]].append(e)
    ended_at_switch = 0
    for sid, ws in by_stream.items():
        assert [d["index"] for d in ws] == list(range(len(ws))), sid  # every window once, in order
        ks = [phase(d) for d in ws]
        assert ks == sorted(ks) and set(ks) == {0, 1, 2}, (sid, ks)  # one boundary per reload
        for a, b in itertools.pairwise(ws):  # no gap: the next window a stride on, or after a loop's reset
            if a["complete"]:
                assert b["start_seq"] in (a["start_seq"] + stride, a["end_seq"] + 1), (a, b)
            else:
                assert b["start_seq"] == a["end_seq"] + 1, (a, b)
        # segment events: none of a label set reaches past its last window or before its first
        for k, names in enumerate(phases):
            mine = [d for d in ws if phase(d) == k]
            for e in (
                e
                for e in segs[sid]
                if e["label"] in names
                and e["label"] not in set().union(*(p for i, p in enumerate(phases) if i != k))
            ):
                assert mine[0]["start_seq"] <= e["start_seq"] and e["end_seq"] <= mine[-1]["end_seq"], (k, e)
        # the segments open at the first reload ended there, at a break
        last_first = [d for d in ws if phase(d) == 0][-1]
        at_switch = [e for e in segs[sid] if e["type"] == "end" and e["end_seq"] == last_first["end_seq"]]
        ended_at_switch += len(at_switch)
        assert all(e["end_reason"] == "break" and e["label"] in first for e in at_switch), at_switch
    assert ended_at_switch >= 1  # a segment was open at some stream's boundary, and ended there
