"""The `events:` config section: which labels make segments, and each label's hysteresis.

    events:
      labels: [move_left, move_right, grow]     # null = every label of the model except `none`
      default: {on_threshold: 0.9, off_threshold: 0.4, start_windows: 1, end_windows: 2}
      rules:                                    # per label: only the keys that differ
        grow: {on_threshold: 0.8, min_duration_s: 2}
      changelog_topic: vbw.events.state         # required with a kafka source (docs/events.md)
    sinks:
      - {type: kafka, topic: vbw.events, payload: events}

Events are made when a sink takes them (`payload: events`). This module is plugged into
`worker.config` like `worker.kafka.config`, and imports nothing from it.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from worker.kafka.config import TopicName

#: the model's "nothing happens" label: never a label of interest unless named
NONE_LABEL = "none"

Score = Annotated[float, Field(ge=0, le=1)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _no_yaml_booleans(data: Any) -> Any:
    """`{on: 0.6}` in YAML is `{True: 0.6}`: say which keys were meant."""
    if isinstance(data, dict) and any(isinstance(k, bool) for k in data):
        raise ValueError(
            "YAML reads the keys on: and off: as true/false; the keys are on_threshold and off_threshold"
        )
    return data


class EventRule(_Section):
    """Hysteresis of one label (worker.segmenter.Rule: on, off, k, m). Not `on`/`off` as keys:
    YAML reads those as booleans.

    Defaults: one sure window starts a segment. The open-set model names a motion only in windows
    that show it throughout, so its first such window already comes 3 s (T=16 at 5 fps) after the
    motion's first frame; a second window at 0.6 added a stride (0.8 s) to every start, taking
    the time to event past 4 s (p50 4.23 s), and missed short motions. One window at 0.9: p50
    3.42 s, and higher segment F1 with still no event on a static scene (BENCHMARKS.md, Events)."""

    on_threshold: Score = Field(
        0.9,
        description="a segment starts once the label's score is at or above this for start_windows windows "
        "in a row",
    )
    off_threshold: Score = Field(
        0.4, description="and ends once it is below this for end_windows windows in a row (<= on_threshold)"
    )
    start_windows: int = Field(
        1, ge=1, le=1000, description="windows at or above on_threshold that start a segment"
    )
    end_windows: int = Field(2, ge=1, le=1000, description="windows below off_threshold that end it")
    min_duration_s: float = Field(
        0.0,
        ge=0,
        description="the start event waits until the segment has also lasted this long (stream time)",
    )
    update_every_s: float | None = Field(
        None, gt=0, description="an update event this often while a segment lasts (stream time); null = none"
    )

    _yaml = model_validator(mode="before")(_no_yaml_booleans)

    @model_validator(mode="after")
    def _off_below_on(self) -> EventRule:
        if self.off_threshold > self.on_threshold:
            raise ValueError(
                f"off_threshold ({self.off_threshold}) must not be above on_threshold ({self.on_threshold})"
            )
        return self


class EventRuleOverride(_Section):
    """The keys of `events.default` that differ for one label."""

    on_threshold: Score | None = None
    off_threshold: Score | None = None
    start_windows: int | None = Field(None, ge=1, le=1000)
    end_windows: int | None = Field(None, ge=1, le=1000)
    min_duration_s: float | None = Field(None, ge=0)
    update_every_s: float | None = Field(None, gt=0)

    _yaml = model_validator(mode="before")(_no_yaml_booleans)


class EventsConfig(_Section):
    """Segments and their start/update/end events (worker.segmenter, docs/events.md)."""

    labels: list[str] | None = Field(
        None,
        description="labels of interest; null = every label of the model except `none` (checked against the "
        "model at start)",
    )
    default: EventRule = Field(default_factory=EventRule, description="the rule of every label of interest")
    rules: dict[str, EventRuleOverride] = Field(
        default_factory=dict,
        description="per label, the keys of `default` that differ, e.g. {grow: {on_threshold: 0.8}}",
    )
    changelog_topic: TopicName | None = Field(
        None,
        description="compacted topic keeping each stream's segment state, so open segments survive a crash; "
        "required with a kafka source",
    )
    checkpoint_every: int = Field(
        8,
        ge=1,
        le=10000,
        description="while a segment is open, write its state at least every this many windows (bounds "
        "what a restart re-reads)",
    )

    @model_validator(mode="after")
    def _rules(self) -> EventsConfig:
        problems = []
        if self.labels is not None:
            dups = sorted({x for x in self.labels if self.labels.count(x) > 1})
            if dups:
                problems.append(f"labels: listed twice: {', '.join(dups)}")
            unused = sorted(set(self.rules) - set(self.labels))
            if unused:
                problems.append(f"rules: not in labels: {', '.join(unused)}")
        for label in sorted(self.rules):
            try:
                self.rule_for(label)
            except ValueError as e:
                problems.append(f"rules.{label}: {e}")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def rule_for(self, label: str) -> EventRule:
        """`default` with the label's overrides (ValueError if off_threshold > on_threshold)."""
        o = self.rules.get(label)
        if o is None:
            return self.default
        merged = {**self.default.model_dump(), **o.model_dump(exclude_none=True)}
        if merged["off_threshold"] > merged["on_threshold"]:
            raise ValueError(
                f"off_threshold ({merged['off_threshold']}) must not be above on_threshold "
                f"({merged['on_threshold']})"
            )
        return EventRule.model_validate(merged)

    def labels_of_interest(self, model_labels: list[str] | tuple[str, ...]) -> list[str]:
        """In model order. Raises ValueError naming labels the model does not have."""
        if self.labels is None:
            return [lb for lb in model_labels if lb != NONE_LABEL]
        unknown = [lb for lb in self.labels if lb not in model_labels]
        if unknown:
            raise ValueError(
                f"events.labels: not labels of the model: {', '.join(unknown)} "
                f"(it has {', '.join(model_labels)})"
            )
        return [lb for lb in model_labels if lb in self.labels]
