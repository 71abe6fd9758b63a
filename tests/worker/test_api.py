"""The stream API against a running `vbw run` (a real subprocess), with a real HTTP client (httpx).

- Writes without the token, or with a wrong one, get 401; a bad body gets 400 listing every
  problem; the OpenAPI document is served and is a valid OpenAPI 3 document; the token never
  reaches the log.
- /docs (Swagger UI) and /redoc (ReDoc) load nothing from outside the worker (an air-gapped
  cluster reaches no CDN): every file they reference is served by it, and headless Chromium,
  its DNS answering no other host, draws every operation of the OpenAPI document on both.
- A camera (the GStreamer RTSP server) added at runtime produces windows within 5 s (x
  VBW_TEST_PATIENCE) of the request; removed, its last windows are all published by the time
  DELETE answers, and the other streams show no gap (window indexes consecutive, every window
  complete, the seq step constant).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from services.procs import free_port
from services.rtsp_server import RtspServer
from stream_api_helpers import FPS, STRIDE, assert_no_gap, file_source, rtsp_source
from worker_helpers import PATIENCE, WorkerProc, read_jsonl, wait_until

pytestmark = [pytest.mark.e2e]

TOKEN = "t0ken-that-must-not-be-logged"


class ApiWorker:
    def __init__(self, proc: WorkerProc, api_port: int):
        self.proc = proc
        self.url = f"http://127.0.0.1:{api_port}"
        self.client = httpx.Client(base_url=self.url, timeout=30.0 * PATIENCE)
        self.auth = {"Authorization": f"Bearer {TOKEN}"}

    def wait_api(self) -> None:
        def up() -> bool:
            try:
                return self.client.get("/streams").status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(up, 30, "the stream API", [self.proc])


@pytest.fixture()
def api_worker(
    tmp_path: Path, worker_proc: Callable[..., WorkerProc], default_model_dir: Path
) -> Iterator[Callable[..., ApiWorker]]:
    clients: list[httpx.Client] = []

    def make(sources: list[dict[str, Any]], out: Path, **extra: Any) -> ApiWorker:
        token_file = tmp_path / "token"
        token_file.write_text(TOKEN + "\n")  # a Secret's value often ends in a newline
        port = free_port()
        cfg = {
            "sources": sources,
            "sampling": {"fps": FPS},
            "windows": {"stride": STRIDE, "partial": "pad"},
            "engine": {"model_dir": str(default_model_dir)},
            "sinks": [{"type": "jsonl", "path": str(out)}],
            "api": {"enabled": True, "host": "127.0.0.1", "port": port, "token_file": str(token_file)},
            **extra,
        }
        w = worker_proc(cfg, jsonl=out)
        w.wait_ready()
        aw = ApiWorker(w, port)
        aw.wait_api()
        clients.append(aw.client)
        return aw

    yield make
    for c in clients:
        c.close()


def test_writes_need_the_token_bad_bodies_get_every_problem_openapi_valid(
    tmp_path: Path, long_clip: Path, api_worker: Callable[..., ApiWorker]
) -> None:
    from openapi_spec_validator import validate

    out = tmp_path / "out.jsonl"
    aw = api_worker([file_source("a", long_clip)], out)
    c = aw.client

    spec = c.get("/openapi.json")
    assert spec.status_code == 200
    doc = spec.json()
    validate(doc)  # raises on an invalid OpenAPI document
    assert {"/streams", "/streams/{source_id}", "/config/reload"} <= set(doc["paths"])
    assert {"get", "post"} <= set(doc["paths"]["/streams"])
    assert {"get", "put", "delete"} <= set(doc["paths"]["/streams/{source_id}"])

    listed = c.get("/streams").json()["sources"]
    assert [s["id"] for s in listed] == ["a"]
    assert set(listed[0]) >= {"state", "kind", "last_error", "streams", "uptime_s"}
    assert set(listed[0]["streams"][0]) >= {
        "last_frame_age_s",
        "frames_in_per_s",
        "frames_analysed_per_s",
        "windows",
        "frames_dropped",
        "reconnects",
    }
    assert c.get("/streams/a").json()["kind"] == "file"
    assert c.get("/streams/nope").status_code == 404

    good = file_source("b", long_clip)
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        assert c.post("/streams", json=good, headers=headers).status_code == 401
        assert c.put("/streams/a", json=file_source("a", long_clip), headers=headers).status_code == 401
        assert c.delete("/streams/a", headers=headers).status_code == 401
        assert c.post("/config/reload", headers=headers).status_code == 401
    r = c.post("/streams", json=good)
    assert r.status_code == 401 and r.headers["WWW-Authenticate"] == "Bearer"

    bad = {"type": "rtsp", "id": "no spaces", "url": "http://cam", "transport": "sctp", "colour": 1}
    r = c.post("/streams", json=bad, headers=aw.auth)
    assert r.status_code == 400, r.text
    problems = {p["path"]: p["message"] for p in r.json()["problems"]}
    assert set(problems) == {"id", "url", "transport", "colour"}, problems
    assert problems["colour"] == "unknown key"
    r = c.post("/streams", content=b"{not json", headers={**aw.auth, "Content-Type": "application/json"})
    assert r.status_code == 400
    r = c.post("/streams", json={"type": "webcam", "id": "x"}, headers=aw.auth)
    assert r.status_code == 400 and "unknown type" in r.text

    r = c.post("/streams", json=good, headers=aw.auth)
    assert r.status_code == 201, r.text
    assert r.headers["Location"] == "/streams/b"
    assert c.post("/streams", json=good, headers=aw.auth).status_code == 409
    r = c.put("/streams/b", json=file_source("a", long_clip), headers=aw.auth)
    assert r.status_code == 400 and r.json()["problems"][0]["path"] == "id"
    assert c.put("/streams/zz", json=file_source("zz", long_clip), headers=aw.auth).status_code == 404
    r = c.put("/streams/b", json={**good, "sampling": {"fps": 4}}, headers=aw.auth)
    assert r.status_code == 200 and r.json()["config"]["sampling"]["fps"] == 4
    # The same entry again changes nothing: no drain, no restart (its uptime goes on).
    r2 = c.put("/streams/b", json={**good, "sampling": {"fps": 4}}, headers=aw.auth)
    assert r2.status_code == 200 and r2.json()["uptime_s"] >= r.json()["uptime_s"]
    assert c.delete("/streams/b", headers=aw.auth).status_code == 204
    assert c.get("/streams/b").status_code == 404
    assert c.delete("/streams/b", headers=aw.auth).status_code == 404
    assert [s["id"] for s in c.get("/streams").json()["sources"]] == ["a"]

    # Secrets stay out of the log and the API: the token, and a camera URL's password.
    secret_url = "rtsp://admin:hunter2@127.0.0.1:9/cam"
    assert c.post("/streams", json=rtsp_source("cam", secret_url), headers=aw.auth).status_code == 201
    # A camera that refuses: its state and last error say so, the URL's secret stays out.
    wait_until(lambda: c.get("/streams/cam").json()["last_error"] is not None, 30, "cam's error", [aw.proc])
    cam = c.get("/streams/cam").json()
    print(f"refusing camera: state {cam['state']}, last_error {cam['last_error']!r}")
    assert cam["state"] == "connecting" and not cam["streams"][0]["up"]
    assert "hunter2" not in c.get("/streams/cam").text
    assert c.delete("/streams/cam", headers=aw.auth).status_code == 204
    aw.proc.sigterm(timeout=30)
    log = aw.proc.stderr() + aw.proc.stdout_path.read_text(errors="replace")
    assert TOKEN not in log and "hunter2" not in log


def test_camera_added_at_runtime_gives_windows_fast_and_drains_on_delete(
    tmp_path: Path,
    rtsp_ok: None,
    long_clip: Path,
    labelled_clips: dict[str, Path],
    api_worker: Callable[..., ApiWorker],
) -> None:
    out = tmp_path / "out.jsonl"
    aw = api_worker([file_source("f1", long_clip), file_source("f2", long_clip)], out)
    c = aw.client
    wait_until(
        lambda: {d["stream_id"] for d in read_jsonl(out)} >= {"f1", "f2"},
        30,
        "the file streams' windows",
        [aw.proc],
    )
    with RtspServer({"cam": labelled_clips["move_left"]}, log_path=tmp_path / "rtsp.log") as srv:
        t0 = time.monotonic()
        r = c.post("/streams", json=rtsp_source("cam", srv.url("cam")), headers=aw.auth)
        assert r.status_code == 201, r.text
        # The figure the issue asks for: within 5 s of the request (stretched by the patience factor).
        wait_until(
            lambda: any(d["stream_id"] == "cam" for d in read_jsonl(out)), 5, "cam's first window", [aw.proc]
        )
        first_s = time.monotonic() - t0
        print(f"added camera: first window {first_s:.2f} s after the POST")
        wait_until(
            lambda: sum(d["stream_id"] == "cam" for d in read_jsonl(out)) >= 6,
            30,
            "6 windows of cam",
            [aw.proc],
        )
        status = c.get("/streams/cam").json()
        assert status["state"] == "running" and status["streams"][0]["windows"] >= 1
        # Two frames into the next window (the 6th was just cut), so the drain usually has a tail to pad.
        f0 = status["streams"][0]["frames_in"]
        wait_until(
            lambda: c.get("/streams/cam").json()["streams"][0]["frames_in"] >= f0 + 2,
            10,
            "2 more frames",
            [aw.proc],
        )
        r = c.delete("/streams/cam", headers=aw.auth)
        assert r.status_code == 204
        after_delete = [d for d in read_jsonl(out) if d["stream_id"] == "cam"]
    # Its windows in flight were finished and published before the 204: as many in the file as
    # the worker counted for it when it let the stream go (a tail cut short is padded when frames
    # were left outside every window; by chance none may be).
    m = re.search(r"source cam \(.*\) removed in [0-9.]+s, (\d+) windows published\n", aw.proc.stderr())
    assert m, aw.proc.stderr()[-2000:]
    assert int(m.group(1)) == len(after_delete)
    tail = [(d["index"], d["complete"], d["end_seq"] - d["start_seq"] + 1) for d in after_delete[-2:]]
    print(
        f"removed camera: {len(after_delete)} windows published, the last two (index, complete, frames): {tail}"
    )
    idx = sorted(d["index"] for d in after_delete)
    assert idx == list(range(idx[0], idx[0] + len(idx)))
    assert all(d["complete"] for d in after_delete[:-1])
    assert c.get("/streams/cam").status_code == 404
    assert 'stream="cam"' not in aw.proc.metrics()
    rc, _ = aw.proc.sigterm(timeout=30)
    assert rc == 0, aw.proc.stderr()[-3000:]
    docs = read_jsonl(out)
    # Nothing of cam came after the 204 (the worker ran on and drained everything at its exit).
    assert sum(d["stream_id"] == "cam" for d in docs) == len(after_delete)
    # The file streams ran through the add and the drain without a gap (their shutdown tail aside).
    for sid in ("f1", "f2"):
        assert_no_gap([d for d in docs if d["complete"] or d["stream_id"] != sid], sid)
        partial = [d for d in docs if d["stream_id"] == sid and not d["complete"]]
        assert all(
            p["index"] > max(d["index"] for d in docs if d["stream_id"] == sid and d["complete"])
            for p in partial
        ), f"{sid}: a partial window before the shutdown"


class _Refs(HTMLParser):
    """Every URL a page refers to in its markup: src, href and ReDoc's spec-url."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [v for k, v in attrs if k in ("src", "href", "spec-url") and v]


def page_refs(html: str) -> list[str]:
    parser = _Refs()
    parser.feed(html)
    return parser.urls


def test_docs_pages_load_nothing_from_outside(
    tmp_path: Path, long_clip: Path, api_worker: Callable[..., ApiWorker]
) -> None:
    aw = api_worker([file_source("a", long_clip)], tmp_path / "out.jsonl")
    c = aw.client
    assets: set[str] = set()
    for page in ("/docs", "/redoc"):
        r = c.get(page)  # open, like the other reads
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html"), (page, r.text)
        refs = page_refs(r.text)
        assert any(u.endswith(".js") for u in refs), (page, refs)
        for u in refs:
            parts = urlsplit(u)
            assert not parts.scheme and not parts.netloc and u.startswith("/"), (page, u)
        assert "://" not in r.text, page  # nor in its inline script (Swagger UI's `url:`)
        assert "/openapi.json" in refs or "url: '/openapi.json'" in r.text, page
        assets |= {u for u in refs if u != "/openapi.json"}
    print("docs assets:", sorted(assets))
    for u in sorted(assets):
        r = c.get(u)
        kind = r.headers.get("content-type", "")
        assert r.status_code == 200 and r.content, (u, r.status_code)
        assert kind.startswith(("text/javascript", "application/javascript", "text/css", "image/")), (u, kind)
    # Not in the OpenAPI document, not behind the token, and the write routes still are.
    assert not {"/docs", "/redoc"} & set(c.get("/openapi.json").json()["paths"])
    assert c.post("/streams", json=file_source("b", long_clip)).status_code == 401


def chromium() -> str:
    exe = shutil.which("chromium")
    if exe is None:
        pytest.fail("Debian's chromium is not installed: run scripts/setup.sh dev (apt-get install chromium)")
    return exe


def rendered_dom(url: str, profile: Path) -> str:
    """The page's DOM once its scripts ran, in headless Chromium that can resolve no host but
    127.0.0.1: a file from a CDN would fail to load, as in an air-gapped cluster."""
    cmd = [
        chromium(),
        "--headless",
        "--no-sandbox",  # tests run as root
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        f"--user-data-dir={profile}",
        # Virtual time waits for the page's fetches (the OpenAPI document) before it runs out.
        "--virtual-time-budget=15000",
        "--dump-dom",
        url,
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120 * PATIENCE)
    assert done.returncode == 0 and done.stdout.strip(), done.stderr[-3000:]
    return done.stdout


def test_docs_pages_render_every_operation_in_chromium(
    tmp_path: Path, long_clip: Path, api_worker: Callable[..., ApiWorker]
) -> None:
    aw = api_worker([file_source("a", long_clip)], tmp_path / "out.jsonl")
    doc = aw.client.get("/openapi.json").json()
    title = doc["info"]["title"]
    operations = {(m.upper(), path) for path, ops in doc["paths"].items() for m in ops}
    assert ("GET", "/streams") in operations and len(operations) >= 6, operations

    dom = rendered_dom(f"{aw.url}/docs", tmp_path / "chromium-docs")
    (tmp_path / "docs.html").write_text(dom)  # for a person looking at a failure
    assert "Unable to render this definition" not in dom
    assert title in dom and "OAS 3.1" in dom, dom[-3000:]
    drawn = set(re.findall(r'opblock-summary-method">(\w+)<.*?data-path="([^"]+)"', dom))
    print(f"/docs in Chromium: {len(drawn)} operations drawn")
    assert drawn == operations, (drawn, operations)

    dom = rendered_dom(f"{aw.url}/redoc", tmp_path / "chromium-redoc")
    (tmp_path / "redoc.html").write_text(dom)
    assert "Something went wrong" not in dom, dom[-3000:]
    assert title in dom, dom[-3000:]
    ids = {op["operationId"] for ops in doc["paths"].values() for op in ops.values()}
    missing = {i for i in ids if f"operation/{i}" not in dom}
    print(f"/redoc in Chromium: {len(ids) - len(missing)} of {len(ids)} operations drawn")
    assert not missing, missing
