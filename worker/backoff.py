"""Reconnect delays: exponential backoff with jitter. Pure (the random source is injectable)."""

from __future__ import annotations

import random


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
