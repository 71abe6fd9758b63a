"""Config reload: the source diff and what needs a restart (pure), the file fingerprint through a
Kubernetes-style ConfigMap symlink swap, the rate meter; then a running `vbw run` whose mounted
config is swapped (one source changed, one removed, one added: the untouched stream has no gap),
swapped to an invalid file (nothing changes, every problem logged, the metric counts it), and
reloaded by SIGHUP.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from services.procs import free_port
from stream_api_helpers import FPS, STRIDE, assert_no_gap, file_source
from worker_helpers import WorkerProc, metric_value, read_jsonl, wait_until

from worker.config import parse_config
from worker.reload import diff_sources, fingerprint, needs_restart
from worker.stream_registry import RateMeter


def cfg(sources: list[dict[str, Any]], **extra: Any) -> Any:
    return parse_config({"sources": sources, **extra})


# -- pure -----------------------------------------------------------------------------------
_ids = st.sampled_from(["a", "b", "c", "d", "e"])
_entries = st.dictionaries(_ids, st.sampled_from(["x.mp4", "y.mp4"]), min_size=1)


@given(_entries, _entries)
def test_diff_sources_partitions_by_id(old: dict[str, str], new: dict[str, str]) -> None:
    o = cfg([{"type": "file", "id": i, "path": p} for i, p in old.items()]).sources
    n = cfg([{"type": "file", "id": i, "path": p} for i, p in new.items()]).sources
    d = diff_sources(list(o), list(n))
    assert {s.id for s in d.added} == set(new) - set(old)
    assert set(d.removed) == set(old) - set(new)
    assert {s.id for s in d.changed} == {i for i in set(old) & set(new) if old[i] != new[i]}
    assert set(d.unchanged) == {i for i in set(old) & set(new) if old[i] == new[i]}
    assert d.empty() == (old == new)


def test_a_changed_secret_url_is_a_change() -> None:
    a = cfg([{"type": "rtsp", "id": "c", "url": "rtsp://u:one@h/s"}]).sources
    b = cfg([{"type": "rtsp", "id": "c", "url": "rtsp://u:two@h/s"}]).sources
    assert [s.id for s in diff_sources(list(a), list(b)).changed] == ["c"]


def test_only_sources_reload_other_sections_need_a_restart() -> None:
    src = [{"type": "file", "id": "a", "path": "x.mp4"}]
    old = cfg(src)
    same = needs_restart(old, cfg([*src, {"type": "file", "id": "b", "path": "y.mp4"}]), diff_sources([], []))
    assert same == []
    blocked = needs_restart(old, cfg(src, engine={"top_k": 2}, windows={"stride": 2}), diff_sources([], []))
    assert [p.path for p in blocked] == ["windows", "engine"]
    kafka = cfg(
        [*src, {"type": "kafka", "id": "k", "topics": ["frames"], "group_id": "g"}],
        kafka={"bootstrap_servers": ["127.0.0.1:9092"]},
    )
    d = diff_sources(list(old.sources), list(kafka.sources))
    assert [p.path for p in needs_restart(old, kafka, d) if p.path.startswith("sources")] == ["sources.k"]


def configmap_dir(root: Path, text: str, version: int) -> None:
    """What the kubelet does to a ConfigMap volume: write a new timestamped dir, then swap the
    `..data` symlink to it atomically; `config.yaml` is a symlink through `..data`."""
    ts = root / f"..2026_12_01_00_00_0{version}.000000000"
    ts.mkdir()
    (ts / "config.yaml").write_text(text)
    tmp = root / "..data_tmp"
    tmp.symlink_to(ts.name)
    tmp.replace(root / "..data")  # rename(2) over the old link: atomic
    if not (root / "config.yaml").is_symlink():
        (root / "config.yaml").symlink_to("..data/config.yaml")


def test_fingerprint_sees_a_configmap_symlink_swap_and_an_edit(tmp_path: Path) -> None:
    configmap_dir(tmp_path, "sources: []\n", 1)
    path = tmp_path / "config.yaml"
    first = fingerprint(path)
    assert first is not None and first == fingerprint(path)
    configmap_dir(tmp_path, "sources: []\n", 2)  # same content, new target
    second = fingerprint(path)
    assert second is not None and second.target != first.target and second.digest == first.digest
    Path(second.target).write_text("sources: [x]\n")  # an in-place edit
    third = fingerprint(path)
    assert third is not None and third.digest != second.digest
    assert fingerprint(tmp_path / "missing.yaml") is None


def test_rate_meter_reads_a_recent_rate() -> None:
    m = RateMeter(0.0)
    assert m.rate(1.0, 10) == pytest.approx(10.0)
    for t in range(2, 60):
        m.rate(float(t), 10 + (t - 1) * 5)  # 5 per second from t=1 on
    assert m.rate(60.0, 10 + 59 * 5) == pytest.approx(5.0)
    assert m.rate(60.0, 10 + 59 * 5) >= 0


# -- a running worker -----------------------------------------------------------------------
def test_configmap_swap_reloads_sources_invalid_rejected_sighup(
    tmp_path: Path, long_clip: Path, default_model_dir: Path, worker_proc: Callable[..., WorkerProc]
) -> None:
    out = tmp_path / "out.jsonl"
    mount = tmp_path / "mount"
    mount.mkdir()
    api_port = free_port()

    def doc(sources: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "sources": sources,
            "sampling": {"fps": FPS},
            "windows": {"stride": STRIDE, "partial": "pad"},
            "engine": {"model_dir": str(default_model_dir)},
            "sinks": [{"type": "jsonl", "path": str(out)}],
            "api": {"enabled": True, "host": "127.0.0.1", "port": api_port, "watch_interval_s": 0.3},
        }

    w = WorkerProc(tmp_path, doc([]))  # its metrics port; the config file is the mount's
    metrics = {"host": "127.0.0.1", "port": w.port}
    first = doc(
        [file_source("keep", long_clip), file_source("change", long_clip), file_source("gone", long_clip)]
    )
    configmap_dir(mount, yaml.safe_dump({**first, "metrics": metrics}), 1)
    w.config_path = mount / "config.yaml"
    w.jsonl = out
    w.start()
    try:
        w.wait_ready()
        client = httpx.Client(base_url=f"http://127.0.0.1:{api_port}", timeout=30)

        def reloads(result: str) -> float:
            return metric_value(w.metrics(), "vbw_config_reload_total", result=result)

        def ids() -> list[str]:
            return sorted(s["id"] for s in client.get("/streams").json()["sources"])

        wait_until(
            lambda: {d["stream_id"] for d in read_jsonl(out)} >= {"keep", "change", "gone"},
            30,
            "3 streams",
            [w],
        )
        assert reloads("applied") == 0 and reloads("rejected") == 0
        # One source changed (fps), one removed, one added: the ConfigMap's symlink swap.
        second = doc(
            [
                file_source("keep", long_clip),
                {**file_source("change", long_clip), "sampling": {"fps": 5}},
                file_source("new", long_clip),
            ]
        )
        configmap_dir(mount, yaml.safe_dump({**second, "metrics": metrics}), 2)
        wait_until(lambda: reloads("applied") == 1, 20, "the swap applied", [w])
        assert ids() == ["change", "keep", "new"]
        assert client.get("/streams/change").json()["config"]["sampling"]["fps"] == 5
        wait_until(lambda: any(d["stream_id"] == "new" for d in read_jsonl(out)), 30, "windows of new", [w])
        gone_windows = sum(d["stream_id"] == "gone" for d in read_jsonl(out))

        # An invalid file: rejected whole, every problem logged, nothing changes.
        bad = {
            **second,
            "sources": [{"type": "file", "id": "keep"}, {"type": "rtsp", "id": "x", "url": "ftp://h"}],
        }
        configmap_dir(mount, yaml.safe_dump({**bad, "metrics": metrics}), 3)
        wait_until(lambda: reloads("rejected") == 1, 20, "the invalid file rejected", [w])
        log = w.stderr()
        assert "sources.0.path: Field required" in log and "sources.1.url: must be an rtsp://" in log
        assert ids() == ["change", "keep", "new"] and reloads("applied") == 1

        # A change that needs a restart (another sink) is rejected too, and says so.
        configmap_dir(mount, yaml.safe_dump({**second, "metrics": metrics, "sinks": [{"type": "stdout"}]}), 4)
        wait_until(lambda: reloads("rejected") == 2, 20, "the sinks change rejected", [w])
        assert "sinks: changed; this section needs a restart" in w.stderr()

        # SIGHUP: the file back to a valid one without `new` (the watcher may see it first; either
        # way it applies exactly once).
        text = yaml.safe_dump({**doc([file_source("keep", long_clip)]), "metrics": metrics})
        target = Path(os.path.realpath(mount / "config.yaml"))
        target.write_text(text)
        assert w.proc is not None
        w.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: reloads("applied") == 2, 20, "the SIGHUP reload", [w])
        assert ids() == ["keep"]
        client.close()
        rc, _ = w.sigterm(timeout=30)
        assert rc == 0, w.stderr()[-3000:]
    finally:
        w.stop()
    docs = read_jsonl(out)
    n = assert_no_gap([d for d in docs if d["complete"] or d["stream_id"] != "keep"], "keep")
    assert n >= 5  # it ran through every reload above
    last_complete = max(d["index"] for d in docs if d["stream_id"] == "keep" and d["complete"])
    assert all(d["index"] > last_complete for d in docs if d["stream_id"] == "keep" and not d["complete"])
    assert sum(d["stream_id"] == "gone" for d in docs) == gone_windows  # nothing of it after its drain
