"""Done-when 5: the summary page rendered by a real browser (Debian's headless Chromium) shows the
timeline and the thumbnails.

`vbw summarize` runs on the fixture's events; Chromium screenshots cam1's page; then, in the
screenshot:
- every timeline bar is drawn in its label's colour where the page's SVG places it (closed bars
  solid, the open one striped with white), the bars of one zone on that zone's row;
- every snapshot shows as a 160-px-wide thumbnail of its solid colour, below the timeline;
- the two segments without a readable snapshot show a placeholder instead.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections import deque
from pathlib import Path

import av
import numpy as np
import pytest
from summary_events import MAGENTA, SNAP_H, SNAP_W, TEAL, YELLOW, EventFixture

from vbw.cli import main as vbw
from vbw.summary.timeline import Geometry, label_colors

PATIENCE = float(os.environ.get("VBW_TEST_PATIENCE", "3"))
WINDOW = (1280, 1400)
PLACEHOLDER = (0xEC, 0xEE, 0xF1)  # .nothumb background
WHITE = (255, 255, 255)


def chromium() -> str:
    exe = shutil.which("chromium")
    if exe is None:
        pytest.fail("Debian's chromium is not installed: run scripts/setup.sh dev (apt-get install chromium)")
    return exe


def screenshot(page: Path, out: Path, profile: Path) -> np.ndarray:
    """The page as Chromium draws it, RGB [H, W, 3] at one pixel per CSS pixel."""
    cmd = [
        chromium(),
        "--headless",
        "--no-sandbox",  # tests run as root
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        # Without these Chromium keeps trying the network, which a test machine may refuse.
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--hide-scrollbars",
        "--force-device-scale-factor=1",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
        f"--screenshot={out}",
        page.as_uri(),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120 * PATIENCE)
    assert done.returncode == 0 and out.is_file(), done.stderr[-3000:]
    with av.open(str(out)) as c:
        return next(c.decode(video=0)).to_ndarray(format="rgb24")


def near(img: np.ndarray, rgb: tuple[int, int, int], tol: int = 12) -> np.ndarray:
    return np.all(np.abs(img.astype(int) - np.array(rgb)) <= tol, axis=-1)


def components(mask: np.ndarray) -> list[tuple[int, int, int, int]]:
    """Bounding boxes (x0, y0, x1, y1; exclusive ends) of the 4-connected regions of a mask."""
    seen = np.zeros_like(mask)
    boxes = []
    for y, x in zip(*np.nonzero(mask), strict=True):
        if seen[y, x]:
            continue
        seen[y, x] = True
        q, x0, y0, x1, y1 = deque([(y, x)]), x, y, x, y
        while q:
            cy, cx = q.popleft()
            x0, y0, x1, y1 = min(x0, cx), min(y0, cy), max(x1, cx), max(y1, cy)
            for ny, nx in ((cy + 1, cx), (cy - 1, cx), (cy, cx + 1), (cy, cx - 1)):
                if 0 <= ny < mask.shape[0] and 0 <= nx < mask.shape[1] and mask[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    q.append((ny, nx))
        boxes.append((int(x0), int(y0), int(x1) + 1, int(y1) + 1))
    return boxes


def hex_rgb(color: str) -> tuple[int, int, int]:
    return tuple(int(color[i : i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]


def bars(page_html: str) -> list[dict]:
    """The bars the page's SVG draws: position, size and fill (a colour, or url(#open-N))."""
    out = []
    for m in re.finditer(r'<rect class="bar" x="([\d.]+)" y="([\d.]+)" width="([\d.]+)" height="([\d.]+)"'
                         r' rx="2" fill="([^"]+)"[^>]*><title>([^<]*)</title>', page_html):  # fmt: skip
        x, y, w, h = (float(v) for v in m.groups()[:4])
        out.append({"x": x, "y": y, "w": w, "h": h, "fill": m.group(5), "title": m.group(6)})
    return out


@pytest.mark.e2e
def test_summary_page_in_chromium(event_fixture: EventFixture, tmp_path: Path) -> None:
    out = tmp_path / "summary"
    rc = vbw(
        [
            "summarize",
            str(event_fixture.events),
            "--snapshots",
            str(event_fixture.snapshots),
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    page = out / "stream-cam1.html"
    text = page.read_text()
    img = screenshot(page, tmp_path / "cam1.png", tmp_path / "chromium-profile")
    shutil.copyfile(tmp_path / "cam1.png", out / "cam1.png")  # for a person looking at a failure

    colors = {k: hex_rgb(v) for k, v in label_colors(["move_left", "grow", "rotate_cw"]).items()}
    drawn = bars(text)
    assert len(drawn) == 5, drawn  # cam1: A, B, C, D (second lane of yard), E (open)

    # Where the SVG sits on the screen: the longest bar (C, rotate_cw, 170 of 300 s) is the only
    # long horizontal run of its colour (legend and card chips are 12 px).
    green = near(img, colors["rotate_cw"])
    runs = [(y, xs) for y in range(img.shape[0]) if (xs := np.nonzero(green[y])[0]).size > 100]
    assert runs, "no timeline bar of rotate_cw's colour on the screen"
    c_bar = next(b for b in drawn if b["title"].startswith("rotate_cw"))
    dx = int(runs[0][1].min()) - round(c_bar["x"])
    dy = runs[0][0] - round(c_bar["y"])
    geom = Geometry()
    assert 0 <= dx < WINDOW[0] - geom.width + 1 and dy > 0, (dx, dy)

    for b in drawn:
        label = b["title"].split(" in ")[0]
        x0, y0 = round(b["x"]) + dx + 2, round(b["y"]) + dy + 2
        inner = img[y0 : y0 + int(b["h"]) - 4, x0 : x0 + max(1, int(b["w"]) - 4)]
        colored = near(inner, colors[label]).mean()
        if b["fill"].startswith("url("):  # the open segment: stripes of its colour and white
            assert "open" in b["title"]
            assert 0.3 < colored < 0.85 and near(inner, WHITE, 30).mean() > 0.15, (b, colored)
            # ...running to the end of the time axis
            assert abs(b["x"] + b["w"] - (geom.width - geom.right)) < 1, b
        else:
            assert colored > 0.9, (b, colored)

    # Rows: door's bars on one row above yard's two lanes.
    rows = {b["title"].split(" in ")[1].split(":")[0]: [] for b in drawn}
    for b in drawn:
        rows[b["title"].split(" in ")[1].split(":")[0]].append(b["y"])
    assert len(set(rows["door"])) == 1 and len(set(rows["yard"])) == 2, rows
    assert max(rows["door"]) < min(rows["yard"]), rows
    timeline_bottom = max(b["y"] + b["h"] for b in drawn) + dy

    # Thumbnails: one per readable snapshot, 160 px wide at the JPEG's aspect, below the timeline.
    for name, rgb in (("A", MAGENTA), ("C", YELLOW), ("E (file:// URI)", TEAL)):
        boxes = [b for b in components(near(img, rgb, 16)) if (b[2] - b[0]) * (b[3] - b[1]) > 400]
        assert len(boxes) == 1, (name, boxes)
        x0, y0, x1, y1 = boxes[0]
        assert abs((x1 - x0) - 160) <= 2 and abs((y1 - y0) - 160 * SNAP_H / SNAP_W) <= 2, (name, boxes)
        assert y0 > timeline_bottom, (name, boxes, timeline_bottom)
    # Placeholders for B (file missing) and D (no snapshot).
    holders = [b for b in components(near(img, PLACEHOLDER, 3)) if b[2] - b[0] >= 150 and b[3] - b[1] >= 80]
    assert len(holders) == 2, holders
    assert "snapshot missing" in text and "no snapshot" in text
