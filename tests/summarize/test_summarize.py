"""`vbw summarize` without a browser: events -> segments, snapshot links, the timeline's geometry,
JSONL and Kafka inputs, the command's exit codes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from summary_events import T0, EventFixture, Seg, build_event_fixture, event_doc, messages

from vbw.cli import main as vbw
from vbw.summary.clock import Clock
from vbw.summary.inputs import InputError, read_jsonl
from vbw.summary.segments import WHOLE_FRAME, BadEvent, fold, parse_event
from vbw.summary.snapshots import SnapshotLinker
from vbw.summary.timeline import Geometry, assign_lanes, label_colors, tick_step, ticks, timeline_svg

SEGS = [
    Seg("A", "cam1/door", "door", "move_left", 0, 60, True, "a.jpg", None),
    Seg("B", "cam1/yard", "yard", "grow", 10, 20, True, None, None),
    Seg("E", "cam1/door", "door", "move_left", 240, 300, False, "e.jpg", None),
    Seg("F", "cam2", None, "grow", 10, 50, True, None, None),
]


def events(docs: list[dict]) -> list:
    return [parse_event(d, f"line {i}") for i, d in enumerate(docs)]


def test_fold_start_update_end_repeats_and_open_segments() -> None:
    docs = [d for s in SEGS for d in messages(s)]
    folded = fold(events(docs + docs[:3]))  # every message of A twice
    assert folded.repeats == 3 and folded.conflicts == []
    got = {
        (s.camera, s.zone, s.label, s.start - T0, s.end - T0, s.closed, s.windows) for s in folded.segments
    }
    assert got == {
        ("cam1", "door", "move_left", 0, 60, True, 20),
        ("cam1", "yard", "grow", 10, 20, True, 20),
        ("cam1", "door", "move_left", 240, 300, False, 10),  # open: its last update's time
        ("cam2", WHOLE_FRAME, "grow", 10, 50, True, 20),
    }
    a = folded.segments[0]
    assert a.snapshot == "a.jpg" and sorted(a.event_ids) == a.event_ids and len(a.event_ids) == 3


def test_fold_start_only_and_differing_repeats() -> None:
    start = event_doc(SEGS[0], "start", 3, 2, None)
    [seg] = fold(events([start])).segments
    assert not seg.closed and seg.end - T0 == 3 and seg.windows == 2 and seg.snapshot is None
    changed = {**start, "peak_score": 0.1}
    folded = fold(events([start, changed]))
    assert folded.repeats == 1 and folded.conflicts == [start["event_id"]]
    assert folded.segments[0].peak_score == 0.9  # the first one read is kept


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_fold_is_independent_of_order_and_repeats(data: st.DataObject) -> None:
    docs = [d for s in SEGS for d in messages(s)]
    want = fold(events(docs)).segments
    repeated = data.draw(st.lists(st.sampled_from(docs), max_size=8))
    shuffled = data.draw(st.permutations(docs + repeated))
    assert fold(events(shuffled)).segments == want


def test_parse_event() -> None:
    doc = event_doc(SEGS[0], "start", 3, 2, None)
    assert parse_event(doc, "x") is not None
    assert parse_event({"schema": "vbw.window/v1"}, "x") is None  # another schema: not an event
    for broken, why in [
        ({k: v for k, v in doc.items() if k != "label"}, "label: Field required"),
        ({**doc, "type": "begin"}, "type: Input should be 'start', 'update' or 'end'"),
        ({**doc, "windows": 0}, "windows: Input should be greater than or equal to 1"),
        ({**doc, "start_time": "yesterday"}, "start_time: Input should be a valid number"),
        ([doc], "not a JSON object"),
    ]:
        with pytest.raises(BadEvent, match=re.escape(why)) as e:
            parse_event(broken, "events.jsonl:7")
        assert str(e.value).startswith("events.jsonl:7: ")


def test_snapshot_links(tmp_path: Path) -> None:
    store, out = tmp_path / "store", tmp_path / "out"
    (store / "cam1").mkdir(parents=True)
    (store / "cam1" / "a.jpg").write_bytes(b"\xff\xd8jpeg-a")
    other = tmp_path / "b.jpg"
    other.write_bytes(b"\xff\xd8jpeg-b")
    linker = SnapshotLinker(store, out)
    a = linker.src("cam1/a.jpg")
    assert a is not None and a.startswith("snapshots/") and (out / a).read_bytes() == b"\xff\xd8jpeg-a"
    assert linker.src("cam1/a.jpg") == a
    for ref in (other.as_uri(), str(other)):
        assert (out / str(linker.src(ref))).read_bytes() == b"\xff\xd8jpeg-b"
    assert linker.src(None) is None
    assert linker.src("cam1/gone.jpg") is None and "No such file" in linker.missing["cam1/gone.jpg"]
    assert linker.src("https://example.invalid/a.jpg") is None  # the page fetches nothing
    assert linker.missing["https://example.invalid/a.jpg"] == "not a local file"
    # Only JPEGs are copied, and a relative reference stays inside the store.
    (store / "cam1" / "notes.txt").write_text("secret")
    assert linker.src("cam1/notes.txt") is None and linker.missing["cam1/notes.txt"].endswith("not a JPEG")
    assert linker.src("../b.jpg") is None and "outside the snapshot directory" in linker.missing["../b.jpg"]
    inline = SnapshotLinker(store, out, inline=True).src("cam1/a.jpg")
    assert inline == "data:image/jpeg;base64,/9hqcGVnLWE="


def test_timeline_geometry() -> None:
    segs = fold(events([d for s in SEGS[:3] for d in messages(s)])).segments
    colors = label_colors([s.label for s in segs])
    assert colors == {"grow": "#1f77b4", "move_left": "#ff7f0e"}
    horizon = T0 + 300
    assert assign_lanes(segs, horizon) == [0, 0, 0]
    svg = timeline_svg(segs, colors, ["a", "b", "e"], horizon)
    g = Geometry()
    rects = re.findall(r'<a href="#(\w)"><rect class="bar" x="([\d.]+)" y="([\d.]+)" width="([\d.]+)"', svg)
    scale = (g.width - g.right - g.gutter) / 300
    for anchor, x, _, w in rects:
        seg = segs["abe".index(anchor)]
        end = seg.end if seg.closed else horizon
        assert float(x) == pytest.approx(g.gutter + (seg.start - T0) * scale, abs=0.06)
        assert float(w) == pytest.approx(max((end - seg.start) * scale, g.min_bar_w), abs=0.11)
    ys = {a: float(y) for a, _, y, _ in rects}
    assert ys["a"] == ys["e"] < ys["b"]  # door's row, then yard's
    assert 'fill="url(#open-1)"' in svg and "open (last event" in svg
    # Overlapping segments of one zone take separate lanes; a bar that ended frees its lane.
    overlap = fold(events([d for s in [SEGS[0], Seg("G", "cam1/door", "door", "grow", 30, 70, True, None, None)]
                           for d in messages(s)])).segments  # fmt: skip
    assert assign_lanes(overlap, horizon) == [0, 1]


def test_ticks() -> None:
    assert tick_step(300) == 60 and tick_step(5) == 1 and tick_step(3 * 86400) == 43200
    assert [t for _, t in ticks(T0 + 5, T0 + 130)] == ["00:00:30", "00:01:00", "00:01:30", "00:02:00"]
    assert [t for _, t in ticks(T0 + 5, T0 + 3000)] == ["00:10", "00:20", "00:30", "00:40", "00:50"]
    assert tick_step(100 * 86400) == 86400 * 13


def test_read_jsonl_directory(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "events.jsonl").write_text('{"x": 1}\n\nnot json\n')
    (tmp_path / "b.jsonl").write_text('{"y": 2}\n{"half": ')
    (tmp_path / "notes.txt").write_text("ignored")
    bad: list[str] = []
    got = list(read_jsonl(tmp_path, bad))
    assert [d for _, d in got] == [{"x": 1}, {"y": 2}]
    assert got[0][0] == f"{tmp_path / 'a' / 'events.jsonl'}:1"
    assert [b.split(": ")[0] for b in bad] == [
        f"{tmp_path / 'a' / 'events.jsonl'}:3",
        f"{tmp_path / 'b.jsonl'}:2",
    ]
    with pytest.raises(InputError, match="no such file"):
        list(read_jsonl(tmp_path / "missing", bad))


def test_command(event_fixture: EventFixture, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert vbw(["summarize", "--out", str(tmp_path / "x")]) == 2
    assert vbw(["summarize", str(tmp_path / "nothing.jsonl"), "--out", str(tmp_path / "x")]) == 1
    assert "nothing.jsonl: no such file" in capsys.readouterr().err
    with event_fixture.events.open("a") as f:
        f.write(json.dumps({"schema": "vbw.window/v1"}) + "\n" + "{broken\n")
    out = tmp_path / "summary"
    argv = [
        "summarize",
        str(event_fixture.events),
        "--snapshots",
        str(event_fixture.snapshots),
        "--out",
        str(out),
    ]
    assert vbw(argv) == 0
    cap = capsys.readouterr()
    assert "-> 6 segments (1 open) on 2 stream pages" in cap.out and "2 repeats" in cap.out
    assert "1 documents of other schemas skipped" in cap.out
    assert "1 lines or records skipped" in cap.err and "1 snapshots not found" in cap.err
    index = (out / "index.html").read_text()
    assert 'href="stream-cam1.html"' in index and 'href="stream-cam2.html"' in index
    cam1 = (out / "stream-cam1.html").read_text()
    assert "<script" not in cam1 and "http://" not in cam1.replace("http://www.w3.org/2000/svg", "")
    thumbs = re.findall(r'<img class="thumb" src="([^"]+)"', cam1)
    assert len(thumbs) == 3 and all((out / t).is_file() for t in thumbs)
    # --inline: one self-contained file per camera.
    assert vbw([*argv[:-1], str(tmp_path / "inline"), "--inline"]) == 0
    cam1 = (tmp_path / "inline" / "stream-cam1.html").read_text()
    assert len(re.findall(r'src="data:image/jpeg;base64,', cam1)) == 3
    assert not (tmp_path / "inline" / "snapshots").exists()


def test_no_events(tmp_path: Path) -> None:
    (tmp_path / "e.jsonl").write_text("")
    assert vbw(["summarize", str(tmp_path / "e.jsonl"), "--out", str(tmp_path / "out")]) == 0
    assert "No events." in (tmp_path / "out" / "index.html").read_text()


def test_unusual_camera_names(tmp_path: Path) -> None:
    docs = [event_doc(Seg(name, name, None, "grow", 0, 9, True, None, None), "end", 9, 3, None)
            for name in ("index", "cam 1", "cam_1", "<b>")]  # fmt: skip
    (tmp_path / "e.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    assert vbw(["summarize", str(tmp_path / "e.jsonl"), "--out", str(tmp_path / "out")]) == 0
    pages = sorted(p.name for p in (tmp_path / "out").glob("*.html"))
    assert len(pages) == 5 and "index.html" in pages
    index = (tmp_path / "out" / "index.html").read_text()
    assert "&lt;b&gt;" in index and "<b>" not in index


@pytest.mark.e2e
def test_kafka_topic_gives_the_same_pages(tmp_path: Path) -> None:
    """Events read from a Tansu topic of 3 partitions (keyed by stream, so partitions interleave)
    make the same pages as the JSONL file they came from."""
    from kafka import KafkaProducer
    from services.tansu import Tansu

    fx = build_event_fixture(tmp_path)
    lines = fx.events.read_text().splitlines()
    with Tansu(log_path=tmp_path / "tansu.log") as broker:
        broker.create_topics({"vbw.events": 3})
        producer = KafkaProducer(bootstrap_servers=[broker.bootstrap])
        for line in lines:
            producer.send("vbw.events", key=json.loads(line)["stream_id"].encode(), value=line.encode())
        producer.flush(timeout=60)
        producer.close()
        common = ["--snapshots", str(fx.snapshots)]
        kafka_args = [
            "summarize",
            "--topic",
            "vbw.events",
            "--bootstrap",
            broker.bootstrap,
            "--timeout",
            "120",
        ]
        assert vbw([*kafka_args, *common, "--out", str(tmp_path / "k")]) == 0
        assert vbw(["summarize", str(fx.events), *common, "--out", str(tmp_path / "j")]) == 0
        assert vbw(["summarize", "--topic", "no.such.topic", "--bootstrap", broker.bootstrap,
                    "--timeout", "3", "--out", str(tmp_path / "n")]) == 1  # fmt: skip
    for name in ("index.html", "stream-cam1.html", "stream-cam2.html"):
        k = (tmp_path / "k" / name).read_text().replace("Kafka topic vbw.events", "SOURCE")
        j = (tmp_path / "j" / name).read_text().replace(str(fx.events), "SOURCE")
        assert k == j, name


def test_clocks() -> None:
    capture, pts = Clock("capture"), Clock("pts")
    assert capture.full(T0 + 65.4) == "2025-12-01 00:01:05" and capture.end(T0, T0 + 65) == "00:01:05"
    assert capture.end(T0, T0 + 86400) == "2025-12-02 00:00:00"  # another day keeps its date
    assert pts.full(65.44) == "0:01:05.4" and pts.full(3725) == "1:02:05.0" and pts.end(0, 5) == "0:00:05.0"
    assert [t for _, t in ticks(5, 130, pts)] == ["0:00:30", "0:01:00", "0:01:30", "0:02:00"]
    assert [t for _, t in ticks(0, 3000, pts)][:2] == ["0:00", "0:10"]
    # A segment on the pts clock: seconds into the stream, whenever the file was analysed.
    [seg] = fold(events(messages(SEGS[0])), "pts").segments
    assert (seg.start, seg.end) == (0, 60)


def test_command_on_the_pts_clock(event_fixture: EventFixture, tmp_path: Path) -> None:
    out = tmp_path / "summary"
    assert vbw(["summarize", str(event_fixture.events), "--clock", "pts", "--out", str(out)]) == 0
    cam1 = (out / "stream-cam1.html").read_text()
    assert "times are pts, h:mm:ss into the stream" in cam1 and "<dd>0:04:00.0</dd>" in cam1
    assert "2025-12-01" not in cam1
