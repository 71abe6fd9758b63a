"""The inference thread's work without the thread: frames and controls in, window results out.

Pure in the manner of the batcher: no threads, no queues, no sleeps; the clock is injected, so
it is tested by feeding items and moving the clock. The pipeline's inference thread is a loop
around `feed` (queue items in) and `close` (shutdown), which hands each `StageOutput` on.

    frames ──frame batcher──> encode_frames + encode_steps (features and token, once per frame)
           ──per-stream SlidingWindowAssembler──> windows
           ──window batcher (key: engine path)──> encode_token_windows | encode_windows
           ──per-stream order gate──> WindowResult (vbw.window/v1 message, scores, embedding)

A batch runs one engine path: complete windows from cached tokens, padded or short ones from
features. So a stream's older padded window can still wait in its batcher queue while a newer
complete one is done; the order gate holds results back until every older window of the same
stream has left (or was dropped), so each stream's windows leave in the order they were cut.

Frames with a `source_ref` take part in delivery bookkeeping: the output says which refs gained
a holder (a frame entering its window buffer, each window that used it) and which ones each
stream's window buffer let go of. The caller applies holds, then releases, then publishes.

A hot model swap (`begin_swap`, worker.model_swap) adds a model generation: windows carry
theirs through the window batcher (a batch runs one model), streams with frames buffered hand
over through a `Handover` (both frame encoders until no window can start before the swap), and
the old model leaves in `StageOutput.retired` once nothing needs it.

A change of the zero-shot labels (`set_prompts`, a config reload of `engine.labels`) is a
generation too, of the same model: windows already cut keep the labels they were cut under,
every window cut after it gets the new ones. Each stream's windows leave the gate in cut order,
so each stream switches at one window boundary; no window is lost, made twice or re-encoded,
and no stream's window state is touched (no gap).

With an `EventStage` (sinks with `payload: events`), each window leaving the gate also goes
through the stream's segmenter, and stream breaks (resets, engine errors, shutdown, revokes)
pass through the gate as markers, behind the stream's windows cut before them. The output then
carries `EventBatch`es (events, segment checkpoints) and the segmenter's extra holds.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

import numpy as np

from contracts.types import SourceRef
from engines.base import Engine
from worker.batcher import Batcher
from worker.config import BatchingConfig, WindowsConfig
from worker.event_messages import EventModelRef
from worker.events import EventBatch, EventStage
from worker.frames import Frame, KeyImage, Window
from worker.messages import LabelScore, ModelRef, WindowMessage
from worker.metrics import Metrics
from worker.model_swap import HANDOVER_TIMEOUT_S, Handover
from worker.prompt_labels import PromptLabels
from worker.sinks.base import WindowResult, reject
from worker.windows import FrameMeta, SlidingWindowAssembler, Step, predecessor_features

log = logging.getLogger("vbw.pipeline")  # the logger these lines always had


# -- control items, ordered with the frames (sources put them on the frame queue) ------------
@dataclass(frozen=True, slots=True)
class StreamReset:
    """Close the stream's window state after the frames before it (the partial policy applies)."""

    stream_id: str
    reason: str
    emit_partial: bool = True


@dataclass(frozen=True, slots=True)
class DropStreams:
    """Forget these streams' window state, emitting nothing (Kafka revoke)."""

    stream_ids: tuple[str, ...]
    reason: str


Control = StreamReset | DropStreams


@dataclass(frozen=True, slots=True)
class _Break:
    """A stream break on its way through the order gate, for the segmenter: `close` ends open
    segments; `drop` forgets them (revoke) and lets go of their extra holds; `suspend` forgets
    them and keeps the holds (a replaying source's shutdown: the next run restores and replays).

    A replaying stream's close waits for the stream's next frame and carries its ref and seq
    (`before`, `before_seq`), so a replay of a break the restored state is already past is
    recognised, and a replay cannot start past one it is not (worker.events.EventStage.close)."""

    stream_id: str
    kind: Literal["close", "drop", "suspend"]
    before: SourceRef | None = None
    before_seq: int | None = None


@dataclass(slots=True)
class StageOutput:
    """What one call produced. Apply `held`, then `released`, then publish `results` and `events`."""

    results: list[WindowResult] = field(default_factory=list)
    held: list[SourceRef] = field(default_factory=list)  # one hold per entry
    released: list[tuple[str, list[SourceRef]]] = field(default_factory=list)  # (stream, refs)
    events: list[EventBatch] = field(default_factory=list)  # segment events and checkpoints
    retired: list[Engine] = field(default_factory=list)  # models a swap no longer needs: close them


class StreamOrder:
    """Per-stream release gate: results leave in ticket order, whatever finished first."""

    def __init__(self) -> None:
        self._issued: dict[str, int] = {}  # next ticket per stream
        self._due: dict[str, int] = {}  # oldest ticket not yet out
        self._done: dict[str, dict[int, WindowResult | _Break | None]] = {}

    def __len__(self) -> int:
        """Tickets issued and not yet out."""
        return sum(self._issued[s] - self._due[s] for s in self._issued)

    def pending(self, stream_id: str) -> int:
        """Tickets of this stream issued and not yet out."""
        return self._issued.get(stream_id, 0) - self._due.get(stream_id, 0)

    def ticket(self, stream_id: str) -> int:
        t = self._issued.get(stream_id, 0)
        self._issued[stream_id] = t + 1
        self._due.setdefault(stream_id, 0)
        return t

    def settle(
        self, stream_id: str, ticket: int, result: WindowResult | _Break | None
    ) -> list[WindowResult | _Break]:
        """The window of `ticket` is done (None: dropped). Returns what may leave now, in order."""
        done = self._done.setdefault(stream_id, {})
        done[ticket] = result
        out: list[WindowResult | _Break] = []
        due = self._due[stream_id]
        while due in done:
            r = done.pop(due)
            if r is not None:
                out.append(r)
            due += 1
        if due == self._issued[stream_id]:  # nothing outstanding: forget the stream
            del self._issued[stream_id], self._due[stream_id], self._done[stream_id]
        else:
            self._due[stream_id] = due
        return out


class InferenceStage:
    def __init__(
        self,
        engine: Engine,
        windows: WindowsConfig,
        batching: BatchingConfig,
        *,
        metrics: Metrics,
        worker_id: str,
        top_k: int,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        events: EventStage | None = None,
        handover_timeout_s: float = HANDOVER_TIMEOUT_S,
        prompts: Mapping[str, str] | None = None,
    ):
        info = engine.metadata
        self.events = events
        self.metrics = metrics
        self.worker_id = worker_id
        self.window_size = windows.size or info.num_frames
        self._wcfg = windows
        self._top_k = top_k
        # Models by generation (a hot swap adds one; worker.model_swap): the current one, and
        # the previous one while streams are handed over or its windows wait in the batcher.
        self._gen = 0
        self._engines: dict[int, Engine] = {0: engine}
        self._model_refs: dict[int, ModelRef] = {0: _model_ref(engine)}
        self._labels: dict[int, tuple[str, ...]] = {0: tuple(info.labels)}
        # Zero-shot labels (engine.labels.prompts) per generation; None = the classifier head.
        self._prompts: dict[int, PromptLabels | None] = {0: None}
        self._in_batcher: dict[int, int] = {0: 0}  # windows waiting per generation
        if prompts:
            self.set_prompts(prompts)
        self._handovers: dict[str, Handover] = {}
        self._handover_timeout_s = handover_timeout_s
        self._clock = clock
        self._wall = wall_clock
        self.frame_max_batch = batching.frame_max_batch
        self._frames: Batcher[Frame] = Batcher(batching.frame_max_batch, batching.frame_max_delay_ms / 1000)
        self._windows: Batcher[tuple[int, int, Window]] = Batcher(  # (ticket, generation, window)
            min(batching.max_batch, info.max_batch), batching.max_delay_ms / 1000
        )
        self._assemblers: dict[str, SlidingWindowAssembler] = {}
        self._order = StreamOrder()
        self._replaying: set[str] = set()  # streams whose frames carry source refs
        self._breaks_due: set[str] = set()  # replaying streams with a close waiting for a frame
        # Per stream, the key image of the newest frame pushed: every window a push or a close
        # emits ends at that frame. One small image per stream; the frames' own go with them.
        self._keys: dict[str, KeyImage] = {}

    # -- public -------------------------------------------------------------------------------
    @property
    def engine(self) -> Engine:
        """The current model (new windows are cut for it)."""
        return self._engines[self._gen]

    @property
    def swapping(self) -> bool:
        """A previous generation is still needed: a model (streams being handed over, or its
        windows waiting), or labels (windows cut under them still waiting)."""
        return len(self._engines) > 1

    def engines(self) -> list[Engine]:
        """Every model the stage still uses (close them at shutdown)."""
        return list(self._engines.values())

    def begin_swap(self, engine: Engine, prompts: Mapping[str, str] | None = None) -> None:
        """Hand every stream over to `engine` at its next window boundary (worker.model_swap).
        The caller loaded, checked and warmed it; one swap at a time (see `swapping`).
        `prompts`: the new model's zero-shot labels (its engine config's), None = its classifier."""
        if self.swapping:
            raise RuntimeError("a model swap is still handing streams over")
        old, self._gen = self._gen, self._gen + 1
        self._engines[self._gen] = engine
        self._model_refs[self._gen] = _model_ref(engine)
        self._labels[self._gen] = tuple(engine.metadata.labels)
        self._prompts[self._gen] = None
        if prompts:  # encoded by the new model's text encoder
            try:
                pl = PromptLabels.encode(engine, prompts)
                self._prompts[self._gen], self._labels[self._gen] = pl, tuple(pl.labels)
            except Exception as e:
                log.error(
                    "model swap: the new model cannot encode the prompts (%s); its classifier labels apply", e
                )
        self._in_batcher[self._gen] = 0
        version, now = engine.metadata.version, self._clock()
        if self.events is not None:  # segment events from now on name the new model
            self.events.model = EventModelRef(name=engine.metadata.name, version=version)
        for sid, a in list(self._assemblers.items()):
            if Handover.needed(a):
                self._handovers[sid] = h = Handover(a, version, now)
                self._assemblers[sid] = h.new
            else:
                self._assemblers[sid] = a.fork(version)
        log.info(
            "model swap: %s -> %s %s; %d of %d streams hand over at their next window boundary",
            self._model_refs[old].version, engine.metadata.name, version,
            len(self._handovers), len(self._assemblers),
        )  # fmt: skip

    @property
    def labels(self) -> tuple[str, ...]:
        """The names of the scores of windows cut from now on (prompts' or the classifier's)."""
        return self._labels[self._gen]

    def set_prompts(self, prompts: Mapping[str, str] | None) -> bool:
        """Label windows cut from now on by these prompts (None or empty: by the classifier head).
        Windows already cut keep their labels: each stream switches at its next window boundary
        (module doc). Encodes the prompts with the current model here, so call it from the
        inference thread. Returns False when nothing changes; raises (and changes nothing) when
        the model cannot encode them (no text encoder: engines.base.TextUnavailable), or while a
        model swap is still handing streams over (`swapping`: one change at a time)."""
        if self.swapping:
            raise RuntimeError("a model swap is still handing streams over")
        gen, engine = self._gen, self._engines[self._gen]
        current = self._prompts[gen]
        if not prompts:
            if current is None:
                return False
            new, labels = None, tuple(engine.metadata.labels)
        else:
            if current is not None and current.same_prompts(prompts):
                return False
            new = PromptLabels.encode(engine, prompts)
            labels = tuple(new.labels)
        if self.events is not None:  # first: a label the events config names may be gone (ValueError)
            self.events.set_labels(labels)
        # Windows cut under the old labels still wait: a new generation, of the same model.
        if self._in_batcher[gen]:
            gen = self._gen = gen + 1
            self._engines[gen], self._model_refs[gen] = engine, self._model_refs[gen - 1]
            self._in_batcher[gen] = 0
        self._prompts[gen], self._labels[gen] = new, labels
        if new is None:
            log.info("labels: the classifier head's (%d)", len(labels))
        else:
            log.info(
                "labels: %d prompts (%s), temperature %.4f", len(labels), ", ".join(labels), new.temperature
            )
        return True

    def deadline(self) -> float | None:
        """Clock time at which a waiting batch is due (call `feed([])` then), None when idle."""
        ds = [d for d in (self._frames.deadline(), self._windows.deadline()) if d is not None]
        return min(ds) if ds else None

    def waiting(self) -> int:
        """Frames and windows waiting in the batchers."""
        return len(self._frames) + len(self._windows)

    def pending(self, stream_id: str) -> bool:
        """The stream still has windows inside (a batcher or the order gate), or a break due:
        a stream being drained is done once this turns false (worker.pipeline)."""
        return self._order.pending(stream_id) > 0 or stream_id in self._breaks_due

    def feed(self, items: Iterable[Frame | Control]) -> StageOutput:
        """Take frames and controls in queue order, run every batch that is due."""
        out = StageOutput()
        now = self._clock()
        for item in items:
            if isinstance(item, Frame):
                self._frames.add(item, now)
            elif isinstance(item, StreamReset | DropStreams):
                for batch in self._frames.flush():  # the frames before a control go first
                    self._encode_frames(batch, out)
                self._control(item, out)
            else:
                raise TypeError(f"not a frame or a control: {type(item).__name__}")
        for batch in self._frames.ready(now):
            self._encode_frames(batch, out)
        for batch in self._windows.ready(self._clock()):
            self._encode_windows(batch, out)
        self._end_handovers(out)
        return out

    def close(self, emit_partial: Callable[[str], bool] = lambda _sid: True) -> StageOutput:
        """Shutdown: encode what waits, close every stream (its partial window by the policy
        where `emit_partial(stream)`), run the last batches. Everything leaves."""
        out = StageOutput()
        for batch in self._frames.flush():
            self._encode_frames(batch, out)
        for sid in list(self._assemblers):
            emit = emit_partial(sid)
            step, gens = self._close_stream(sid, "shutdown", emit)
            if not emit:  # the source rebuilds these windows from uncommitted offsets: keep them held
                step.released.clear()
            self._apply_step(sid, step, out, gens)
            self._breaks_due.discard(sid)
            self._break(sid, "close" if emit else "suspend", out, now=True)
        for batch in self._windows.flush():
            self._encode_windows(batch, out)
        self._end_handovers(out)
        return out

    # -- frames -------------------------------------------------------------------------------
    def _assembler(self, stream_id: str) -> SlidingWindowAssembler:
        a = self._assemblers.get(stream_id)
        if a is None:
            w = self._wcfg
            a = SlidingWindowAssembler(
                stream_id,
                self.window_size,
                w.stride,
                max_gap=w.max_gap,
                partial=w.partial,
                min_partial_frames=w.min_partial_frames,
                model_version=self._model_refs[self._gen].version,
            )
            self._assemblers[stream_id] = a
        return a

    def _control(self, item: Control, out: StageOutput) -> None:
        if isinstance(item, StreamReset):
            if item.stream_id in self._assemblers:
                step, gens = self._close_stream(item.stream_id, item.reason, item.emit_partial)
                self._apply_step(item.stream_id, step, out, gens)
            self._keys.pop(item.stream_id, None)
            self._break(item.stream_id, "close", out)
        else:
            for sid in item.stream_ids:
                self._keys.pop(sid, None)
                self._replaying.discard(sid)
                self._breaks_due.discard(sid)
                h = self._handovers.pop(sid, None)
                a = self._assemblers.pop(sid, None)
                if a is not None:
                    self._apply_step(sid, h.drop() if h is not None else a.drop(), out)
                    log.info("stream %s: window state dropped (%s)", sid, item.reason)
                self._break(sid, "drop", out)

    def _encode_frames(self, batch: list[Frame], out: StageOutput) -> None:
        """Features and tokens of a batch of frames (both once per frame), into the windows."""
        t0 = time.perf_counter()
        try:
            images = np.stack([f.image for f in batch])
            feats, tokens = self._features(self.engine, batch, images, self._assemblers.get)
            # Streams being handed over: their frames also go through the old model, for the
            # old model's windows that hold them (worker.model_swap).
            dual = [i for i, f in enumerate(batch) if f.stream_id in self._handovers]
            old: dict[int, tuple[np.ndarray, np.ndarray]] = {}
            if dual:
                ho = self._handovers
                of, ot = self._features(
                    self._engines[self._gen - 1], [batch[i] for i in dual], images[dual],
                    lambda sid: ho[sid].old if sid in ho else None,
                )  # fmt: skip
                old = {i: (of[j], ot[j]) for j, i in enumerate(dual)}
        except Exception as e:
            log.error("encode_frames failed on %d frames: %s: %s", len(batch), type(e).__name__, e)
            for f in batch:
                self.metrics.frame_dropped(f.stream_id, "engine_error")
                # the stream's windows must not bridge the hole
                if f.stream_id in self._assemblers:
                    step, gens = self._close_stream(f.stream_id, "engine_error")
                    self._apply_step(f.stream_id, step, out, gens)
                    self._break(f.stream_id, "close", out)
            return
        self.metrics.stage_seconds("encode_frames", time.perf_counter() - t0)
        for i, (f, feat, token) in enumerate(zip(batch, feats, tokens, strict=True)):
            if f.source_ref is not None:
                out.held.append(f.source_ref)
                self._replaying.add(f.stream_id)
                if f.stream_id in self._breaks_due:  # the break waited for this frame
                    self._breaks_due.discard(f.stream_id)
                    self._ticket_break(_Break(f.stream_id, "close", f.source_ref, f.seq), out)
            # Frames from Kafka carry no key image: their model-size picture stands in.
            self._keys[f.stream_id] = f.key_image if f.key_image is not None else KeyImage(f.image)
            meta = FrameMeta(f.seq, f.pts, f.capture_time, f.source_ref)
            h = self._handovers.get(f.stream_id)
            if h is not None and i in old:
                step, gens = h.push(meta, old[i], (feat, token))
                self._apply_step(f.stream_id, step, out, [self._gen if n else self._gen - 1 for n in gens])
                if h.done:
                    del self._handovers[f.stream_id]
                continue
            self._apply_step(f.stream_id, self._assembler(f.stream_id).push(meta, feat, token), out)

    def _features(
        self,
        engine: Engine,
        frames: list[Frame],
        images: np.ndarray,
        assembler_of: Callable[[str], SlidingWindowAssembler | None],
    ) -> tuple[np.ndarray, np.ndarray]:
        """One model's features and tokens of a batch of frames, predecessors from `assembler_of`."""
        feats = engine.encode_frames(images)
        prev = predecessor_features(
            [f.stream_id for f in frames], [f.seq for f in frames], feats, assembler_of
        )
        return feats, engine.encode_steps(feats, prev)

    def _close_stream(self, stream_id: str, reason: str, emit_partial: bool = True) -> tuple[Step, list[int]]:
        """Close the stream's window state; the windows' model generations beside them."""
        h = self._handovers.pop(stream_id, None)
        if h is None:
            step = self._assemblers[stream_id].close(reason, emit_partial)
            return step, [self._gen] * len(step.windows)
        step, is_new = h.close(reason, emit_partial)
        return step, [self._gen if n else self._gen - 1 for n in is_new]

    def _end_handovers(self, out: StageOutput) -> None:
        """Close the window state of streams that held the old model too long with no frame
        (HANDOVER_TIMEOUT_S), and let the old model go once nothing needs it."""
        if not self.swapping:
            return
        now = self._clock()
        for sid, h in list(self._handovers.items()):
            if now - h.since >= self._handover_timeout_s:
                log.info(
                    "stream %s: no frame for %.0fs during a model swap; window state closed",
                    sid,
                    now - h.since,
                )
                self._control(StreamReset(sid, "model_swap"), out)
        for gen in [g for g in self._engines if g != self._gen]:
            if self._in_batcher[gen] == 0 and not self._handovers:
                engine = self._engines.pop(gen)
                ref, new = self._model_refs.pop(gen), self._model_refs[self._gen]
                del self._labels[gen], self._in_batcher[gen]
                self._prompts.pop(gen, None)
                if any(e is engine for e in self._engines.values()):  # a label change: same model
                    log.info("labels: every window cut under the previous labels has left")
                    continue
                out.retired.append(engine)
                log.info(
                    "model swap: every stream is on %s %s; %s released", new.name, new.version, ref.version
                )

    def _apply_step(
        self, stream_id: str, step: Step, out: StageOutput, gens: list[int] | None = None
    ) -> None:
        now = self._clock()
        for w, gen in zip(step.windows, gens or [self._gen] * len(step.windows), strict=True):
            w.key_image = self._keys.get(stream_id)
            out.held.extend(w.source_refs)
            # One model and one engine path per batch: cached tokens (complete windows) or features (padded).
            rows = w.features.shape[0] if w.features is not None else 0
            self._in_batcher[gen] += 1
            self._windows.add(
                (self._order.ticket(stream_id), gen, w), now, key=(gen, rows, w.tokens is not None)
            )
        for what, reason in step.events:
            if what == "partial_dropped":
                self.metrics.windows_dropped.labels(reason).inc()
            elif what in ("partial_padded", "partial_emitted"):
                self.metrics.windows_partial.labels(what.removeprefix("partial_"), reason).inc()
            elif what == "out_of_order":
                self.metrics.frame_dropped(stream_id, "out_of_order")
        if step.released:
            out.released.append((stream_id, list(step.released)))

    # -- windows ------------------------------------------------------------------------------
    def _encode_windows(self, batch: list[tuple[int, int, Window]], out: StageOutput) -> None:
        gen = batch[0][1]  # the batcher's key keeps one model per batch
        self._in_batcher[gen] -= len(batch)
        t0 = time.perf_counter()
        try:
            scores, emb = self._window_outputs(self._engines[gen], [w for _, _, w in batch])
        except Exception as e:
            # Their frames stay held: at-least-once sources re-read them after a restart.
            log.error("encode_windows failed on %d windows: %s: %s", len(batch), type(e).__name__, e)
            self.metrics.windows_dropped.labels("engine_error").inc(len(batch))
            for ticket, _, w in batch:
                self._leave(self._order.settle(w.stream_id, ticket, None), out)
            return
        prompt_labels = self._prompts.get(gen)
        if prompt_labels is not None:
            scores = prompt_labels.scores(emb)
        self.metrics.stage_seconds("encode_windows", time.perf_counter() - t0)
        self.metrics.batch_size.observe(len(batch))
        wall = self._wall()
        produced = datetime.fromtimestamp(wall, UTC)
        for (ticket, _, w), s, e in zip(batch, scores, emb, strict=True):
            result: WindowResult | None
            try:
                result = WindowResult(
                    message=self._message(gen, w, s, wall, produced),
                    embedding=e,
                    scores=s,
                    window=w,
                    labels=self._labels[gen],
                )
            except ValueError as err:  # not a valid vbw.window/v1 (a NaN score or time): never published
                reject(w, err, self.metrics.windows_dropped)
                # Dropped for good, like a partial window: a replay would fail the same way, so its
                # frames are let go rather than holding the commit point back forever.
                if w.source_refs:
                    out.released.append((w.stream_id, list(w.source_refs)))
                result = None
            w.features = w.tokens = None  # the sinks do not need them; free the memory early
            self._leave(self._order.settle(w.stream_id, ticket, result), out)

    # -- leaving the gate -----------------------------------------------------------------------
    def _break(
        self, stream_id: str, kind: Literal["close", "drop", "suspend"], out: StageOutput, now: bool = False
    ) -> None:
        """A break of the stream, behind its windows cut so far (only the segmenter needs it). A
        replaying stream's close waits for its next frame, unless `now`."""
        if self.events is None:
            return
        if kind == "close" and not now and stream_id in self._replaying:
            self._breaks_due.add(stream_id)
            return
        self._ticket_break(_Break(stream_id, kind), out)

    def _ticket_break(self, b: _Break, out: StageOutput) -> None:
        self._leave(self._order.settle(b.stream_id, self._order.ticket(b.stream_id), b), out)

    def _leave(self, items: list[WindowResult | _Break], out: StageOutput) -> None:
        """Windows and breaks out of the gate, in each stream's order: results, and the segmenter."""
        ev = self.events
        for item in items:
            if isinstance(item, _Break):
                assert ev is not None
                if item.kind == "close":
                    batch, holds = ev.close(item.stream_id, item.before, item.before_seq)
                    out.held.extend(holds)
                    if batch is not None:
                        out.events.append(batch)
                elif item.kind == "suspend":  # shutdown of a replaying source: save, keep the holds
                    batch = ev.suspend(item.stream_id)
                    if batch is not None:
                        out.events.append(batch)
                else:
                    refs = ev.drop(item.stream_id)
                    if refs:
                        out.released.append((item.stream_id, refs))
                continue
            out.results.append(item)
            if ev is not None:
                batch, holds = ev.window(item)
                out.held.extend(holds)
                if batch is not None:
                    out.events.append(batch)

    def _message(
        self, gen: int, w: Window, scores: np.ndarray, wall: float, produced: datetime
    ) -> WindowMessage:
        top = np.argsort(-scores, kind="stable")[: self._top_k]
        return WindowMessage(
            window_id=w.window_id,
            stream_id=w.stream_id,
            index=w.index,
            start_seq=w.start_seq,
            end_seq=w.end_seq,
            start_pts=w.start_pts,
            end_pts=w.end_pts,
            frames=w.frames,
            complete=w.complete,
            capture_time=w.capture_time,
            labels=[LabelScore(label=self._labels[gen][i], score=float(scores[i])) for i in top],
            model=self._model_refs[gen],
            latency_ms=max(0.0, (wall - w.capture_time) * 1000.0),
            worker=self.worker_id,
            produced_at=produced,
        )

    def _window_outputs(self, engine: Engine, batch: list[Window]) -> tuple[np.ndarray, np.ndarray]:
        """(scores, embeddings): complete windows from their cached tokens (only the transformer
        runs), padded ones from their features. The batcher never mixes the two."""
        if batch[0].tokens is not None:
            return engine.encode_token_windows(
                np.stack([w.features[0] for w in batch]),  # type: ignore[index]
                np.stack([w.tokens for w in batch]),  # type: ignore[misc]
            )
        return engine.encode_windows(np.stack([w.features for w in batch]))  # type: ignore[misc]


def _model_ref(engine: Engine) -> ModelRef:
    m = engine.metadata
    return ModelRef(name=m.name, version=m.version, backend=m.backend, precision=m.precision)
