"""100 add/remove cycles through the stream API leave the worker's thread count and RSS back at
their baseline (issue 12, done-when 6): a source's thread, its decoder, its window state and its
metric series all go with its DELETE.

Tolerances: threads within CHURN_THREAD_TOLERANCE of the baseline (each cycle's source thread is
joined before the 204; the API's request thread pool starts threads on demand and ends idle ones
after a while, +-2 seen here; a leak would show as +100); RSS within CHURN_RSS_TOLERANCE_MB of the baseline taken after a warm-up (allocator arenas and
FFmpeg's per-open caches settle in the first cycles). The figures are printed (BENCHMARKS.md,
"Stream API churn", quotes them from this test's output).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from services.procs import free_port
from stream_api_helpers import FPS, STRIDE, file_source
from worker_helpers import WorkerProc, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CYCLES = 100
WARMUP = 5
CHURN_RSS_TOLERANCE_MB = 20.0
CHURN_THREAD_TOLERANCE = 2


def proc_status(pid: int) -> tuple[int, float]:
    """(threads, RSS in MB) of a process, from /proc."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line
    )
    return int(fields["Threads"]), int(fields["VmRSS"].split()[0]) / 1024


def test_add_remove_cycles_leave_threads_and_rss_at_baseline(
    tmp_path: Path, long_clip: Path, default_model_dir: Path, worker_proc: Callable[..., WorkerProc]
) -> None:
    token = tmp_path / "token"
    token.write_text("churn-token")
    port = free_port()
    w = worker_proc(
        {
            "sources": [file_source("steady", long_clip)],
            "sampling": {"fps": FPS},
            "windows": {"stride": STRIDE},
            "engine": {"model_dir": str(default_model_dir)},
            "sinks": [{"type": "jsonl", "path": str(tmp_path / "out.jsonl")}],
            "api": {"enabled": True, "host": "127.0.0.1", "port": port, "token_file": str(token)},
        }
    )
    w.wait_ready()
    assert w.proc is not None
    pid = w.proc.pid
    auth = {"Authorization": "Bearer churn-token"}
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as c:
        wait_until(lambda: c.get("/streams").status_code == 200, 30, "the API", [w])

        def cycle(i: int) -> None:
            sid = f"churn-{i}"
            assert c.post("/streams", json=file_source(sid, long_clip), headers=auth).status_code == 201
            wait_until(
                lambda: c.get(f"/streams/{sid}").json()["streams"][0]["frames_in"] >= 1,
                30,
                f"{sid} frames",
                [w],
            )
            assert c.delete(f"/streams/{sid}", headers=auth).status_code == 204

        for i in range(WARMUP):
            cycle(i)
        threads0, rss0 = proc_status(pid)
        peak_threads = threads0
        for i in range(WARMUP, WARMUP + CYCLES):
            cycle(i)
            peak_threads = max(peak_threads, proc_status(pid)[0])
        threads1, rss1 = proc_status(pid)
        assert [s["id"] for s in c.get("/streams").json()["sources"]] == ["steady"]
    print(
        f"{CYCLES} add/remove cycles: threads {threads0} -> {threads1} (peak {peak_threads}), "
        f"RSS {rss0:.1f} -> {rss1:.1f} MB ({rss1 - rss0:+.1f} MB)"
    )
    assert 'stream="churn-' not in w.metrics()  # every removed stream's series went
    assert threads1 <= threads0 + CHURN_THREAD_TOLERANCE
    assert rss1 - rss0 < CHURN_RSS_TOLERANCE_MB
