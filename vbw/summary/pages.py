"""The summary's HTML: one page per camera (timeline, then a card per segment with its snapshot
and times) and an index page linking them. Plain HTML and CSS with the SVG inline, no script,
and nothing from the network: snapshots are relative files or data URIs (snapshots.py)."""

from __future__ import annotations

import hashlib
import html
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from vbw.summary.clock import CAPTURE, Clock
from vbw.summary.segments import Fold, Segment, by_camera
from vbw.summary.snapshots import SnapshotLinker
from vbw.summary.timeline import label_colors, timeline_svg

INDEX = "index.html"
CSS = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 20px; color: #1d232b; background: #ffffff; }
h1 { font-size: 22px; margin: 4px 0; }
a { color: #1a5fb4; }
.meta { color: #5c6570; margin: 2px 0 10px; }
.legend { list-style: none; padding: 0; margin: 8px 0; display: flex; flex-wrap: wrap; gap: 14px; }
.chip { display: inline-block; width: 12px; height: 12px; border-radius: 2px; vertical-align: -1px;
        margin-right: 5px; }
.timeline-box { border: 1px solid #d0d4da; border-radius: 4px; padding: 6px 0; margin: 10px 0 18px;
                width: max-content; }
.timeline text { font: 12px system-ui, sans-serif; fill: #1d232b; }
.timeline .tick { fill: #5c6570; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(380px, 1fr)); gap: 12px; }
.card { display: flex; gap: 12px; border: 1px solid #d0d4da; border-radius: 4px; padding: 8px; }
.card:target { outline: 2px solid #1a5fb4; }
.thumb { width: 160px; height: auto; flex: none; align-self: flex-start; border-radius: 2px; }
.nothumb { width: 160px; height: 90px; flex: none; display: flex; align-items: center;
           justify-content: center; text-align: center; background: #eceef1; color: #5c6570;
           font-size: 12px; border-radius: 2px; }
.what { font-weight: 600; margin-bottom: 4px; }
dl { display: grid; grid-template-columns: auto 1fr; gap: 1px 10px; margin: 0; font-size: 13px; }
dt { color: #5c6570; }
dd { margin: 0; }
.open { color: #b5470b; font-weight: 600; }
table { border-collapse: collapse; }
th, td { text-align: left; padding: 4px 12px 4px 0; border-bottom: 1px solid #e3e6ea; }
"""


@dataclass(frozen=True)
class Context:
    """What every page of one summary shares."""

    colors: dict[str, str]  # label -> colour, the same on every page
    linker: SnapshotLinker
    source: str  # where the events came from, as the pages say it
    clock: Clock


def page_file(camera: str, taken: set[str]) -> str:
    """A file name for the camera's page: readable, unique, never the index."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", camera).strip("._") or "stream"
    name = f"stream-{slug}.html"
    if slug != camera or name in taken:
        name = f"stream-{slug}-{hashlib.sha256(camera.encode()).hexdigest()[:8]}.html"
    taken.add(name)
    return name


def duration(seconds: float) -> str:
    s = round(seconds)
    if seconds < 60:
        return f"{seconds:.1f} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def _doc(title: str, body: list[str]) -> str:
    return "\n".join(
        [
            "<!doctype html>",
            '<html lang="en"><head><meta charset="utf-8">',
            f"<title>{html.escape(title)}</title>",
            f"<style>{CSS}</style></head><body>",
            *body,
            "</body></html>",
            "",
        ]
    )


def _legend(segments: Sequence[Segment], colors: dict[str, str]) -> str:
    counts = Counter(s.label for s in segments)
    items = [
        f'<li><span class="chip" style="background:{colors[label]}"></span>{html.escape(label)} ({n})</li>'
        for label, n in sorted(counts.items())
    ]
    return '<ul class="legend">' + "".join(items) + "</ul>"


def _card(s: Segment, anchor: str, ctx: Context) -> str:
    linker, clock = ctx.linker, ctx.clock
    src = linker.src(s.snapshot)
    what = f"{html.escape(s.label)} in {html.escape(s.zone)}"
    if src:
        thumb = (
            f'<img class="thumb" src="{html.escape(src)}" alt="snapshot: {what} at {clock.full(s.start)}">'
        )
    else:
        why = "no snapshot" if not s.snapshot else "snapshot missing"
        title = (
            ""
            if not s.snapshot
            else f' title="{html.escape(s.snapshot + ": " + linker.missing[s.snapshot])}"'
        )
        thumb = f'<div class="nothumb"{title}>{why}</div>'
    end_at = clock.end(s.start, s.end)
    if s.closed:
        end = f"<dd>{end_at}</dd>"
        length = duration(s.duration)
    else:
        end = f'<dd><span class="open">open</span> (last event {end_at})</dd>'
        length = f"at least {duration(s.duration)}"
    return (
        f'<article class="card" id="{anchor}">{thumb}<div>'
        f'<div class="what"><span class="chip" style="background:{ctx.colors[s.label]}"></span>{what}</div>'
        f"<dl><dt>start</dt><dd>{clock.full(s.start)}</dd><dt>end</dt>{end}"
        f"<dt>duration</dt><dd>{length}</dd>"
        f"<dt>score</dt><dd>peak {s.peak_score:.2f}, mean {s.mean_score:.2f}</dd>"
        f"<dt>windows</dt><dd>{s.windows}</dd></dl></div></article>"
    )


def camera_page(camera: str, segments: Sequence[Segment], ctx: Context) -> str:
    clock = ctx.clock
    horizon = max(s.end for s in segments)
    anchors = [f"seg-{i}" for i in range(len(segments))]
    n_open = sum(not s.closed for s in segments)
    body = [
        f'<p><a href="{INDEX}">&larr; all streams</a></p>',
        f"<h1>{html.escape(camera)}</h1>",
        f'<p class="meta">{len(segments)} segments ({n_open} open), '
        f"{clock.full(min(s.start for s in segments))} to {clock.full(horizon)} ({clock.note}), "
        f"from {html.escape(ctx.source)}</p>",
        _legend(segments, ctx.colors),
        f'<div class="timeline-box">{timeline_svg(segments, ctx.colors, anchors, horizon, clock)}</div>',
        '<section class="cards">',
        *(_card(s, a, ctx) for s, a in zip(segments, anchors, strict=True)),
        "</section>",
    ]
    return _doc(f"vbw summary: {camera}", body)


def index_page(pages: dict[str, tuple[str, list[Segment]]], fold: Fold, ctx: Context) -> str:
    colors, clock = ctx.colors, ctx.clock
    rows = []
    for camera, (name, segs) in pages.items():
        labels = ", ".join(
            f'<span class="chip" style="background:{colors[lb]}"></span>{html.escape(lb)} {n}'
            for lb, n in sorted(Counter(s.label for s in segs).items())
        )
        rows.append(
            f'<tr><td><a href="{html.escape(name)}">{html.escape(camera)}</a></td><td>{len(segs)}</td>'
            f"<td>{sum(not s.closed for s in segs)}</td><td>{labels}</td>"
            f"<td>{clock.full(min(s.start for s in segs))}</td><td>{clock.full(max(s.end for s in segs))}</td></tr>"
        )
    notes = f"{sum(len(s) for _, s in pages.values())} segments from {html.escape(ctx.source)}"
    if fold.repeats:
        notes += f"; {fold.repeats} repeated messages dropped (at-least-once delivery)"
    body = [
        "<h1>vbw summary</h1>",
        f'<p class="meta">{notes}; {clock.note}.</p>',
        "<table><tr><th>stream</th><th>segments</th><th>open</th><th>labels</th>"
        "<th>first start</th><th>last event</th></tr>",
        *rows,
        "</table>",
    ]
    if not pages:
        body.append("<p>No events.</p>")
    return _doc("vbw summary", body)


@dataclass
class Written:
    index: Path
    pages: dict[str, Path]  # camera -> its page
    segments: int
    open: int


def write_summary(
    fold: Fold, out_dir: Path, linker: SnapshotLinker, source: str, clock: Clock = CAPTURE
) -> Written:
    """The index and one page per camera into `out_dir`; `clock` must be the one `fold` used."""
    out_dir.mkdir(parents=True, exist_ok=True)
    ctx = Context(label_colors([s.label for s in fold.segments]), linker, source, clock)
    taken = {INDEX}
    pages: dict[str, tuple[str, list[Segment]]] = {}
    for camera, segs in by_camera(fold.segments).items():
        pages[camera] = (page_file(camera, taken), segs)
    for camera, (name, segs) in pages.items():
        (out_dir / name).write_text(camera_page(camera, segs, ctx), encoding="utf-8")
    index = out_dir / INDEX
    index.write_text(index_page(pages, fold, ctx), encoding="utf-8")
    return Written(
        index=index,
        pages={c: out_dir / n for c, (n, _) in pages.items()},
        segments=len(fold.segments),
        open=sum(not s.closed for s in fold.segments),
    )
