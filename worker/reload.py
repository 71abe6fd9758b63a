"""Config reload (SIGHUP, a change of the file, POST /config/reload): diff, validate, apply.

- The new file is loaded and validated as at start (`load_config`, VBW_* overrides included).
  An invalid one is rejected whole: the worker keeps running the old config, every problem is
  logged, and `vbw_config_reload_total{result="rejected"}` counts it.
- Only `sources` reload. A change anywhere else (engine, sinks, windows, ...) also rejects the
  whole reload with "needs a restart", so what runs is always one file's config, never half of
  two. The `engine` section, and a model directory whose model.json changed under the same
  section, go to the hot model swap (`Pipeline.swap_engine`, worker.model_swap): the new model
  is loaded beside the old one and each stream switches at a window boundary; a model that
  fails to load or warm up fails the reload and the old one goes on. An engine section that
  differs only in `labels` (zero-shot prompts) loads nothing: the inference thread re-encodes
  the prompts and each stream switches at its next window; prompts for a model without a text
  encoder (or lacking a label `events.labels` names) reject the reload (`engine_problems`).
  Kafka sources join a consumer group: changing them needs a restart too.
- The sources are diffed by id (`diff_sources`): new ones start, removed ones drain (their
  windows in flight are published), changed ones drain and start again, unchanged ones are not
  touched, so their streams lose no frame.

`changed()` polls the file rather than using inotify: a Kubernetes ConfigMap mount changes by an
atomic swap of its `..data` symlink, which inotify sees only on the directory (and not at all on
some volume types); the resolved path and a content hash catch that swap and an in-place edit
alike, on any filesystem, for one small read every `api.watch_interval_s`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from prometheus_client import Counter

from worker.config import ConfigError, ConfigProblem, SourceConfig, VbwConfig, load_config
from worker.metrics import Metrics

log = logging.getLogger("vbw.reload")

RESULTS = ("applied", "unchanged", "rejected", "failed")
# Sections a reload applies; a change of any other needs a restart (docs/operations.md).
RELOADABLE = frozenset({"sources"})


class SourceDiff(NamedTuple):
    added: list[SourceConfig]
    removed: list[str]
    changed: list[SourceConfig]
    unchanged: list[str]

    def empty(self) -> bool:
        return not (self.added or self.removed or self.changed)


def diff_sources(old: list[SourceConfig], new: list[SourceConfig]) -> SourceDiff:
    """By id: in new only (added), in old only (removed), in both and not equal (changed)."""
    before = {s.id: s for s in old}
    after = {s.id: s for s in new}
    return SourceDiff(
        added=[s for s in new if s.id not in before],
        removed=[i for i in before if i not in after],
        changed=[s for s in new if s.id in before and before[s.id] != s],
        unchanged=[s.id for s in new if s.id in before and before[s.id] == s],
    )


def needs_restart(old: VbwConfig, new: VbwConfig, diff: SourceDiff) -> list[ConfigProblem]:
    """What a reload cannot apply: changed sections besides `sources`, and kafka sources."""
    out = [
        ConfigProblem(name, "changed; this section needs a restart (docs/operations.md)")
        for name in type(old).model_fields
        if name not in RELOADABLE and getattr(old, name) != getattr(new, name)
    ]
    before = {s.id: s for s in old.sources}
    for s in [*diff.added, *diff.changed, *(before[i] for i in diff.removed)]:
        if s.type == "kafka":
            out.append(ConfigProblem(f"sources.{s.id}", "a kafka source changed; it needs a restart"))
    return out


class Fingerprint(NamedTuple):
    target: str  # the resolved path: a ConfigMap's `..data` swap changes it
    digest: str  # of the content: an in-place edit changes it


def fingerprint(path: Path) -> Fingerprint | None:
    try:
        target = os.path.realpath(path)
        return Fingerprint(target, hashlib.sha256(Path(target).read_bytes()).hexdigest())
    except OSError:  # mid-swap, or gone: look again next time
        return None


class Control(Protocol):
    cfg: VbwConfig

    def add_source(self, sc: Any) -> Any: ...
    def replace_source(self, sc: Any) -> Any: ...
    def remove_source(self, source_id: str) -> bool: ...


@dataclass
class Outcome:
    result: str  # one of RESULTS
    detail: str
    problems: list[ConfigProblem] = field(default_factory=list)


class Reloader:
    def __init__(self, control: Control, path: Path, metrics: Metrics) -> None:
        self.control = control
        self.path = path
        self.total = Counter(
            "vbw_config_reload_total",
            "Config reloads (SIGHUP, file change, POST /config/reload) by result: applied, unchanged, "
            "rejected (invalid, or a change that needs a restart: nothing changed), failed (a source "
            "did not start)",
            ["result"],
            registry=metrics.registry,
        )
        for r in RESULTS:
            self.total.labels(r)
        self._seen = fingerprint(path)
        self._lock = threading.Lock()  # SIGHUP, the watcher and the API may reload at once

    def changed(self) -> bool:
        """The file (or the symlink it resolves through) differs from the one seen last."""
        fp = fingerprint(self.path)
        return fp is not None and fp != self._seen

    def reload(self, why: str) -> Outcome:
        with self._lock:
            out = self._reload()
        self.total.labels(out.result).inc()
        level = logging.INFO if out.result in ("applied", "unchanged") else logging.ERROR
        log.log(level, "config reload (%s) %s: %s", why, out.result, out.detail)
        for p in out.problems:
            log.log(level, "  %s", p)
        return out

    def _reload(self) -> Outcome:
        self._seen = fingerprint(self.path)  # a rejected file is not retried until it changes again
        try:
            new = load_config(self.path)
        except ConfigError as e:
            return Outcome("rejected", f"{self.path}: invalid, the running config is kept", e.problems)
        old = self.control.cfg
        diff = diff_sources(list(old.sources), list(new.sources))
        blocked = needs_restart(old, new, diff)
        # The hot model swap (issue 12 part 3), once the pipeline has it, takes the engine section.
        swap = getattr(self.control, "swap_engine", None)
        model_changed = getattr(self.control, "model_changed", None)  # same section, new model.json
        engine_changed = old.engine != new.engine or (model_changed is not None and model_changed(new.engine))
        if swap is not None:
            blocked = [p for p in blocked if p.path != "engine"]
        if blocked:
            return Outcome("rejected", f"{self.path}: needs a restart, the running config is kept", blocked)
        check = getattr(self.control, "engine_problems", None)
        if swap is not None and engine_changed and check is not None:
            bad = check(new)
            if bad:
                return Outcome(
                    "rejected",
                    f"{self.path}: the engine section cannot apply, the running config is kept",
                    bad,
                )
        failed: list[ConfigProblem] = []
        if swap is not None and engine_changed:
            self._step(failed, "engine", lambda: swap(new))
        elif diff.empty():
            return Outcome("unchanged", f"{len(diff.unchanged)} source(s) unchanged")
        for sid in diff.removed:
            self._step(failed, sid, lambda i=sid: self.control.remove_source(i))
        for sc in diff.changed:
            self._step(failed, sc.id, lambda s=sc: self.control.replace_source(s))
        for sc in diff.added:
            self._step(failed, sc.id, lambda s=sc: self.control.add_source(s))
        detail = (
            f"added {_ids(diff.added)}, removed {', '.join(diff.removed) or '-'}, "
            f"restarted {_ids(diff.changed)}, untouched {len(diff.unchanged)}"
        )
        return Outcome("failed" if failed else "applied", detail, failed)

    @staticmethod
    def _step(failed: list[ConfigProblem], sid: str, step: Any) -> None:
        try:
            step()
        except Exception as e:  # one source that cannot start does not stop the others' changes
            where = sid if sid == "engine" else f"sources.{sid}"
            failed.append(ConfigProblem(where, f"{type(e).__name__}: {e}"))


def _ids(sources: list[SourceConfig]) -> str:
    return ", ".join(s.id for s in sources) or "-"
