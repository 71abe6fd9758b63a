"""Target-fps frame sampling on presentation timestamps. Pure."""

from __future__ import annotations

# Timestamps are rationals turned into floats; a frame due at 0.2 s may read 0.19999999.
_EPS = 1e-6


class FpsSampler:
    """Keeps the first frame at or after each tick of a 1/fps clock that starts at the first frame.

    Rates that do not divide the source rate come out right on average (30 -> 8 fps keeps frames
    spaced 3,4,4,4,...). A jump forward (a pause in the source) restarts the clock at the jump
    rather than keeping a burst of catch-up frames. `fps=None` keeps everything.
    """

    def __init__(self, fps: float | None):
        self.period = 1.0 / fps if fps else 0.0
        self._next: float | None = None

    def keep(self, pts: float) -> bool:
        if not self.period:
            return True
        if self._next is None or pts < self._next - self.period - _EPS:
            self._next = pts  # first frame, or time went backwards: start again
        if pts + _EPS < self._next:
            return False
        self._next += self.period
        if self._next <= pts:  # we were behind by more than a period: do not burst
            self._next = pts + self.period
        return True

    def reset(self) -> None:
        self._next = None
