"""Segment events from windows, at least once: the inference side of docs/events.md. Pure.

`EventStage` runs in the inference thread, on each window as it leaves the per-stream order
gate (windows in start order), and on the gate's stream breaks. Per stream it keeps a
`worker.segmenter.StreamSegmenter` and turns its segment events into `vbw.event/v1` messages.
What it hands on is an `EventBatch` per window or break that made events, or whose segment
state must be saved, to be published by `worker.delivery.DeliveryLedger.publish_events`.

Crash safety for sources that replay (Kafka; their windows carry source refs):

- A stream's segment state is saved as a `Checkpoint` (the segmenter's JSON and the position of
  its last window) to a `StateStore` (a compacted changelog topic), only after every event up to
  it was acked by every event sink (the ledger sees to that).
- A window that changed the state or made events ("dirty") holds its frames once more, until a
  checkpoint at or after it is acked, so the consumer's commit point cannot pass it before. A
  window that found the stream idle and left it idle holds nothing extra: replaying it or not
  changes nothing.
- A checkpoint is due when a batch has events, when the stream went back to idle, and after
  `checkpoint_every` dirty windows (bounding what a restart re-reads while a segment is open).
- While a stream is not idle, one frame of its last checkpointed window (the *anchor*) stays held
  until a later checkpoint is acked. A break comes after the frames of every window before it,
  so the commit point cannot pass a break the saved state does not have, even when the break
  still waits for the stream's next frame (a reset at the edge; frames off the grid are skipped
  without a hold) or the worker stops before that frame: a replay reads the break again.
- On the first window of a stream after a start or a revoke, the stage restores the stream's
  latest checkpoint; windows at or before its position are replays of applied windows: skipped.

Sources that do not replay (files, cameras) get events only: no checkpoints, no extra holds.

Zero-shot labels changed by a config reload (`set_labels`, worker.inference_stage.set_prompts):
each window carries the names of its scores. A stream's first window under other names ends
the stream's open segments (`end_reason: break`, as any break of the stream) and its segmenter
starts over with the rules of the new names (`last` kept, so replays are still recognised).
New sentences under the same names change nothing here: the segments go on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from contracts.types import TP, DeliveryCallback, SourceRef
from worker.event_messages import (
    SCORE_DIGITS,
    EventMessage,
    EventModelRef,
    event_id,
    segment_id,
    split_stream,
)
from worker.events_config import EventsConfig
from worker.frames import Window
from worker.metrics import Metrics
from worker.segmenter import Rule, SegmentEvent, StreamSegmenter, WindowView
from worker.sinks.base import WindowResult

log = logging.getLogger("vbw.events")

CHECKPOINT_VERSION = 1


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A stream's segment state after the window at `position` (start_seq, closes since)."""

    stream_id: str
    frames: TP  # where the stream's frames come from (topic, partition)
    position: tuple[int, int]
    state: dict[str, Any]

    def to_doc(self) -> dict[str, Any]:
        return {
            "v": CHECKPOINT_VERSION,
            "stream_id": self.stream_id,
            "frames": list(self.frames),
            "position": list(self.position),
            "state": self.state,
        }

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> Checkpoint:
        if doc.get("v") != CHECKPOINT_VERSION:
            raise ValueError(f"checkpoint version {doc.get('v')!r}, expected {CHECKPOINT_VERSION}")
        topic, partition = doc["frames"]
        seq, closes = doc["position"]
        return cls(str(doc["stream_id"]), (str(topic), int(partition)), (int(seq), int(closes)), doc["state"])


@dataclass(slots=True)
class EventBatch:
    """What one window or break of one stream produced: publish `events` to every event sink;
    once all are acked (and every earlier batch of the stream's), write `checkpoint`; once that
    is acked, release `cover` (one hold of each ref)."""

    stream_id: str
    events: list[EventMessage] = field(default_factory=list)
    checkpoint: Checkpoint | None = None
    cover: list[SourceRef] = field(default_factory=list)


class StateStore(Protocol):
    """Where checkpoints live (worker.kafka.changelog.ChangelogStore; MemoryStateStore in tests)."""

    def restore(self, stream_id: str, frames: TP, fresh: bool) -> Checkpoint | None:
        """The stream's latest checkpoint (inference thread). `fresh`: read the store again, the
        stream's partition has just been assigned; otherwise what was read then may serve."""
        ...

    def write(self, checkpoint: Checkpoint, done: DeliveryCallback) -> None:
        """Save one checkpoint (sink thread); `done` once, when acked or failed for good."""
        ...


class MemoryStateStore:
    """A StateStore in a dict, acking at once: tests, and the model of the changelog's contract."""

    def __init__(self) -> None:
        self.saved: dict[str, Checkpoint] = {}
        self.writes = 0

    def restore(self, stream_id: str, frames: TP, fresh: bool) -> Checkpoint | None:
        return self.saved.get(stream_id)

    def write(self, checkpoint: Checkpoint, done: DeliveryCallback) -> None:
        self.writes += 1
        old = self.saved.get(checkpoint.stream_id)
        if old is None or checkpoint.position >= old.position:  # the latest position wins
            self.saved[checkpoint.stream_id] = checkpoint
        done(None)


def resolve_rules(cfg: EventsConfig, model_labels: Sequence[str]) -> dict[str, Rule]:
    """Labels of interest (model order) -> their rules. ValueError names unknown labels."""
    out = {}
    for label in cfg.labels_of_interest(list(model_labels)):
        r = cfg.rule_for(label)
        out[label] = Rule(
            r.on_threshold,
            r.off_threshold,
            r.start_windows,
            r.end_windows,
            r.min_duration_s,
            r.update_every_s,
        )
    return out


def window_view(w: Window, scores: Mapping[str, float], stride: int) -> WindowView:
    """A window as the segmenter sees it: times of its centre (its capture_time is its newest
    frame's; the pts span says how far back its first frame is), and how far a segment starting
    or ending with it reaches beyond: to its first frame less half a stride, to its last frame
    plus a frame and half a stride (worker.segmenter; the frame period from the window itself)."""
    span = max(0.0, w.end_pts - w.start_pts)
    period = span / (w.frames - 1) if w.frames > 1 else 0.0
    half_stride = stride * period / 2.0
    return WindowView(
        window_id=w.window_id,
        start_seq=w.start_seq,
        end_seq=w.end_seq,
        time=w.capture_time - span / 2.0,
        pts=w.start_pts + span / 2.0,
        scores=scores,
        payload=w,
        lead=span / 2.0 + half_stride,
        tail=span / 2.0 + period + half_stride,
    )


@dataclass(slots=True)
class _Stream:
    seg: StreamSegmenter
    frames: TP | None = None  # set for streams whose windows carry source refs
    cover: list[SourceRef] = field(default_factory=list)  # refs of dirty windows since the last checkpoint
    dirty: int = 0  # dirty windows since the last checkpoint
    last_first: SourceRef | None = None  # first frame of the last window applied
    anchor: SourceRef | None = None  # held while the stream is not idle (module doc)
    labels: tuple[str, ...] = ()  # names of the scores its segmenter reads
    index: dict[str, int] = field(default_factory=dict)  # label of interest -> score index


class EventStage:
    def __init__(
        self,
        rules: Mapping[str, Rule],
        model_labels: Sequence[str],
        *,
        size: int,
        stride: int,
        max_gap: int,
        model: EventModelRef,
        metrics: Metrics,
        store: StateStore | None = None,
        snapshot: Callable[[str, Window], str | None] | None = None,
        checkpoint_every: int = 8,
        resolve: Callable[[Sequence[str]], Mapping[str, Rule]] | None = None,
    ) -> None:
        self.rules = dict(rules)
        self.labels = tuple(model_labels)
        # the rules of each set of label names seen (`resolve` makes them for new ones)
        self._rules_of: dict[tuple[str, ...], dict[str, Rule]] = {self.labels: self.rules}
        self._resolve = resolve
        self.size, self.stride, self.max_gap = size, stride, max_gap
        self.model = model
        self.metrics = metrics
        self.store = store
        self._snapshot = snapshot
        self.checkpoint_every = checkpoint_every
        self._streams: dict[str, _Stream] = {}
        self._seen: set[TP] = set()  # partitions restored since they were (re)assigned
        self.skipped = 0  # replayed windows already in a restored state

    def set_labels(self, labels: Sequence[str]) -> None:
        """Windows cut from now on name their scores `labels` (a change of the zero-shot labels).
        ValueError (nothing changes) when the events config names a label they lack. Each
        stream switches at its first window under the new names (module doc)."""
        names = tuple(labels)
        self.rules = self._rules_for(names)
        self.labels = names

    # -- per window, per break ----------------------------------------------------------------
    def window(self, result: WindowResult) -> tuple[EventBatch | None, list[SourceRef]]:
        """A window leaving the order gate -> (what to publish, refs to hold once more)."""
        w = result.window
        frames = (w.source_refs[0][0], w.source_refs[0][1]) if w.source_refs else None
        names = tuple(result.labels) if result.labels is not None else self.labels
        st = self._stream(w.stream_id, frames, names)
        was_idle = st.seg.idle
        ended: list[SegmentEvent] = []
        replay = st.seg.last is not None and w.start_seq <= st.seg.last.start_seq
        if st.labels != names and not replay:
            ended = self._relabel(w.stream_id, st, names)
        scores = (
            {label: float(result.scores[i]) for label, i in st.index.items()} if st.labels == names else {}
        )
        view = window_view(w, scores, self.stride)
        if st.seg.applied(view):
            self.skipped += 1
            if st.anchor is None and not st.seg.idle and self.store is not None and w.source_refs:
                # a replay of a restored state that is not idle: anchor it before its next checkpoint
                st.anchor = w.source_refs[0]
                return None, [st.anchor]
            return None, []
        events = ended + st.seg.apply(view)
        messages = self._messages(w.stream_id, events)
        if st.frames is None or self.store is None:  # nothing replays this stream
            return (EventBatch(w.stream_id, messages) if messages else None), []
        st.last_first = w.source_refs[0] if w.source_refs else None
        if not messages and was_idle and st.seg.idle:
            return None, []  # clean: a replay from any idle state does the same (nothing)
        st.cover.extend(w.source_refs)
        st.dirty += 1
        if messages or st.seg.idle or st.dirty >= self.checkpoint_every:
            return self._checkpointed(w.stream_id, st, messages), list(w.source_refs)
        return None, list(w.source_refs)

    def close(
        self, stream_id: str, before: SourceRef | None = None, before_seq: int | None = None
    ) -> tuple[EventBatch | None, list[SourceRef]]:
        """The stream broke (reset, end of stream, engine error, shutdown): open segments end.
        -> (what to publish, refs to hold once more).

        For a stream that replays, `before` is the frame the break came before (its ref and
        `before_seq`): a break before a window already applied (the restored state is past it)
        is a replay, skipped; otherwise that frame is held until the break's checkpoint is
        acked, so a replay cannot start after a break the saved state does not have."""
        if before is None:
            st = self._streams.get(stream_id)
        else:
            st = self._stream(stream_id, (before[0], before[1]))
        if st is None or st.seg.idle:
            return None, []
        last = st.seg.last
        if before_seq is not None and last is not None and last.start_seq >= before_seq:
            self.skipped += 1
            return None, []
        messages = self._messages(stream_id, st.seg.close())
        if st.frames is None or self.store is None:
            return (EventBatch(stream_id, messages) if messages else None), []
        holds = [before] if before is not None else []
        st.cover.extend(holds)
        return self._checkpointed(stream_id, st, messages), holds

    def drop(self, stream_id: str) -> list[SourceRef]:
        """Forget the stream without events (Kafka revoke, or a Kafka source's shutdown): its next
        owner, or the next run, restores the last checkpoint and replays. Returns the extra holds
        to let go of."""
        st = self._streams.pop(stream_id, None)
        if st is None:
            return []
        for label in st.seg.open_labels():
            self.metrics.segments_open.labels(self.metrics.stream(stream_id), label).dec()
        if st.frames is not None:
            self._seen.discard(st.frames)
        return st.cover + ([st.anchor] if st.anchor is not None else [])

    def suspend(self, stream_id: str) -> EventBatch | None:
        """A replaying source's shutdown: no end events (the next run restores and goes on), but
        the state as it is now is saved, so the last commit can pass the windows it covers, up to
        the anchor of a stream that is not idle: it stays held (a break after it, read but not yet
        applied, is read again by the next run)."""
        st = self._streams.get(stream_id)
        batch = None
        if st is not None and st.frames is not None and self.store is not None and st.cover:
            batch = self._checkpointed(stream_id, st, [])
        self.drop(stream_id)  # its anchor is not let go: the process ends
        return batch

    def streams(self) -> list[str]:
        return list(self._streams)

    # -- internals --------------------------------------------------------------------------------
    def _rules_for(self, names: tuple[str, ...]) -> dict[str, Rule]:
        rules = self._rules_of.get(names)
        if rules is None:
            if self._resolve is None:
                raise ValueError(f"events: no rules for the labels {', '.join(names)}")
            rules = self._rules_of[names] = dict(self._resolve(names))
        return rules

    def _segmenter(self, stream_id: str, rules: Mapping[str, Rule]) -> StreamSegmenter:
        snap = self._snapshot
        for label in rules:
            self.metrics.register_events(stream_id, label)
        return StreamSegmenter(
            rules,
            size=self.size,
            stride=self.stride,
            max_gap=self.max_gap,
            snapshot=(lambda v, sid=stream_id: snap(sid, v.payload)) if snap is not None else None,
        )

    def _relabel(self, stream_id: str, st: _Stream, names: tuple[str, ...]) -> list[SegmentEvent]:
        """The stream's first window under other label names: its open segments end (break), its
        segmenter starts over with the new names' rules, keeping its position."""
        old = st.seg
        ended = old.close()
        st.seg = self._segmenter(stream_id, self._rules_for(names))
        st.seg.last, st.seg.closes = old.last, old.closes
        st.labels, st.index = names, {label: names.index(label) for label in st.seg.rules}
        log.info(
            "stream %s: labels now %s; %d open segment(s) ended (break)",
            stream_id,
            ", ".join(names),
            len(ended),
        )
        return ended

    def _stream(self, stream_id: str, frames: TP | None, names: tuple[str, ...] | None = None) -> _Stream:
        """The stream's state; new on its first window (or break) since a start or a revoke,
        restored from the store for a stream that replays."""
        st = self._streams.get(stream_id)
        if st is not None:
            return st
        names = self.labels if names is None else names
        seg = self._segmenter(stream_id, self._rules_for(names))
        index = {label: names.index(label) for label in seg.rules}
        st = self._streams[stream_id] = _Stream(seg, labels=names, index=index)
        if frames is not None and self.store is not None:
            st.frames = frames
            fresh = frames not in self._seen
            self._seen.add(frames)
            ck = self.store.restore(stream_id, frames, fresh)
            if ck is not None:
                seg.load(ck.state)
                for label in seg.open_labels():
                    self.metrics.segments_open.labels(self.metrics.stream(stream_id), label).inc()
                log.info(
                    "stream %s: segment state restored at seq %d (open: %s)",
                    stream_id,
                    ck.position[0],
                    ", ".join(seg.open_labels()) or "none",
                )
        return st

    def _checkpointed(self, stream_id: str, st: _Stream, messages: list[EventMessage]) -> EventBatch:
        """A checkpoint of the state as it is now; its batch releases the holds it covers, and
        moves the anchor (module doc) to this state's last window, or lets it go if idle."""
        assert st.frames is not None
        ck = Checkpoint(stream_id, st.frames, st.seg.position(), st.seg.to_dict())
        cover = st.cover
        anchor = None if st.seg.idle else st.last_first
        if anchor != st.anchor:
            if anchor is not None and anchor in cover:
                cover.remove(anchor)  # its cover hold stays, as the anchor's, until a later checkpoint
                if st.anchor is not None:
                    cover.append(st.anchor)
                st.anchor = anchor
            elif anchor is None and st.seg.idle and st.anchor is not None:
                cover.append(st.anchor)
                st.anchor = None
            # else: the state's last window is not covered here; the old anchor, before it, stays
        batch = EventBatch(stream_id, messages, ck, cover)
        st.cover, st.dirty = [], 0
        return batch

    def _messages(self, stream_id: str, events: list[SegmentEvent]) -> list[EventMessage]:
        out = []
        m = self.metrics
        label_stream = m.stream(stream_id)
        for e in events:
            try:
                out.append(event_message(stream_id, e, self.model))
            except ValueError as err:  # not a valid vbw.event/v1 (cannot happen from valid windows)
                log.error(
                    "stream %s: %s %s event not valid, not published: %s", stream_id, e.label, e.type, err
                )
                continue
            m.events.labels(label_stream, e.label, e.type).inc()
            if e.type == "start":
                m.segments_open.labels(label_stream, e.label).inc()
            elif e.type == "end":
                m.segments_open.labels(label_stream, e.label).dec()
        return out


def event_message(stream_id: str, e: SegmentEvent, model: EventModelRef) -> EventMessage:
    seg = segment_id(stream_id, e.label, e.first.window_id)
    source, zone = split_stream(stream_id)
    return EventMessage(
        event_id=event_id(seg, e.type, e.update),
        segment_id=seg,
        type=e.type,
        stream_id=stream_id,
        source_id=source,
        zone=zone,
        label=e.label,
        start_time=e.first.time - e.first.lead,
        end_time=e.last.time + e.last.tail,
        start_pts=e.first.pts - e.first.lead,
        end_pts=e.last.pts + e.last.tail,
        start_seq=e.first.start_seq,
        end_seq=e.last.end_seq,
        start_window_id=e.first.window_id,
        windows=e.count,
        peak_score=round(e.peak, SCORE_DIGITS),
        mean_score=round(e.mean, SCORE_DIGITS),
        peak_time=e.peak_at.time,
        peak_window_id=e.peak_at.window_id,
        update=e.update,
        end_reason=e.reason,  # type: ignore[arg-type]
        snapshot=e.snapshot,
        model=model,
    )
