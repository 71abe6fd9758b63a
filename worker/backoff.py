"""Reconnect delays. Pure: the clock is passed in and the random source is injectable.

`Backoff` is exponential backoff with jitter. `ReconnectPolicy` decides, for one camera, how long
to wait before the next attempt, and keeps the outage's book (since when, how many attempts) for
the line logged when the camera is back.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


class Backoff:
    """delay(n) = min(max_s, initial_s * multiplier**n), minus a random part of up to `jitter` of it.

    The jitter spreads the reconnects of many cameras that dropped at the same moment (a switch
    rebooting) instead of hammering the NVR in lockstep.
    """

    def __init__(
        self,
        initial_s: float = 0.5,
        max_s: float = 30.0,
        multiplier: float = 2.0,
        jitter: float = 0.5,
        rng: random.Random | None = None,
    ):
        self.initial_s = initial_s
        self.max_s = max_s
        self.multiplier = multiplier
        self.jitter = jitter
        self.attempts = 0
        self._rng = rng or random.Random()

    def next_delay(self) -> float:
        base = min(self.max_s, self.initial_s * self.multiplier**self.attempts)
        self.attempts += 1
        return base * (1.0 - self.jitter * self._rng.random())

    def reset(self) -> None:
        """Call after a connection delivered frames again."""
        self.attempts = 0


@dataclass(frozen=True, slots=True)
class Retry:
    """What to do after a failed attempt."""

    delay: float  # seconds before the next attempt
    report: bool  # log and count this failure (False: a quiet probe, the outage is already reported)


@dataclass(frozen=True, slots=True)
class Recovery:
    """An outage that ended: frames flow again."""

    outage_s: float  # from the loss (or the first failed attempt) to the first frame
    attempts: int  # attempts in the outage, the one that worked included


class ReconnectPolicy:
    """When to try a camera again, for one camera.

    Early in an outage (its first `probe_for_s`), while the camera is unreachable (a TCP connect
    to its RTSP port fails), the next probe comes at most `probe_interval_s` later: a camera that
    returns is found within that interval, for the price of one TCP handshake per probe. Plain
    exponential backoff would sleep through the return (the delay after a 5 s outage is already
    2-4 s). A camera that accepts the connection but whose RTSP open fails (wrong path,
    credentials, still booting) and one down for longer than `probe_for_s` (dead, unplugged) get
    exponential backoff with jitter instead, so nothing is hammered for long.

    Every delay is jittered: cameras that dropped together (a switch rebooting) probe on schedules
    of their own, so they find the switch back spread over a probe interval, not in lockstep.
    """

    def __init__(
        self,
        initial_s: float = 0.5,
        max_s: float = 30.0,
        multiplier: float = 2.0,
        jitter: float = 0.5,
        probe_interval_s: float = 0.5,
        probe_for_s: float = 300.0,
        rng: random.Random | None = None,
    ):
        self._rng = rng or random.Random()
        self.backoff = Backoff(initial_s, max_s, multiplier, jitter, self._rng)
        self.jitter = jitter
        self.probe_interval_s = min(probe_interval_s, max_s)  # max_s caps every delay
        self.probe_for_s = probe_for_s
        self._since: float | None = None
        self._failures = 0

    @property
    def in_outage(self) -> bool:
        return self._since is not None

    def probing(self, now: float) -> bool:
        """True early in an outage: try a cheap TCP probe before the full RTSP open."""
        return self._since is not None and now - self._since < self.probe_for_s

    def lost(self, now: float) -> float:
        """A connection that delivered frames ended: the outage starts. Returns the delay before
        the first attempt (short, when probing: the camera may only have dropped the session)."""
        self._since, self._failures = now, 0
        self.backoff.reset()
        return self._probe_delay() if self.probe_for_s > 0 else self.backoff.next_delay()

    def failed(self, now: float, reached: bool) -> Retry:
        """An attempt failed. `reached`: the camera accepted the TCP connection (the RTSP open
        failed, or gave no frame); False: the probe found the port closed or silent."""
        if self._since is None:  # never connected yet: the outage starts with this failure
            self._since = now
        first = self._failures == 0
        self._failures += 1
        if not reached and now - self._since < self.probe_for_s:
            return Retry(self._probe_delay(), report=first)
        return Retry(self.backoff.next_delay(), report=True)

    def recovered(self, now: float) -> Recovery | None:
        """Frames flow again: ends the outage. None when there was none (a first connect that
        worked at once)."""
        if self._since is None:
            return None
        rec = Recovery(now - self._since, self._failures + 1)
        self._since, self._failures = None, 0
        self.backoff.reset()
        return rec

    def _probe_delay(self) -> float:
        return self.probe_interval_s * (1.0 - self.jitter * self._rng.random())
