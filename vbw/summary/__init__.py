"""`vbw summarize`: vbw.event/v1 events -> one HTML page per camera and an index page.

- `inputs`: events from JSONL files or a Kafka topic (read to its end), each with where it came from;
- `segments`: events -> segments (start/update/end folded, repeats dropped, open segments kept);
- `snapshots`: snapshot references -> files next to the pages (or data URIs);
- `clock`: the times drawn: wall-clock capture times (UTC) or the stream's pts;
- `timeline`: the inline SVG timeline of one camera's segments, one row per zone;
- `pages`: the HTML pages themselves (no JavaScript, nothing fetched from the network).
"""
