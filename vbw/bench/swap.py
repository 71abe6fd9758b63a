"""`vbw bench swap`: what a hot model swap costs here (worker.model_swap). Resident memory with
one engine of the model, with two side by side (as while streams are handed over), and after
the old one is closed (and the heap trimmed, as the pipeline does); over several swaps in a
row, so memory not given back would show as growth; and the time to load, check and warm the new model (worker.engine_start.prepare_swap,
the swap thread's work). The model's graph files of the precision are listed too: the basis of
the GPU estimate in docs/operations.md (no GPU here to measure on)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from worker.config import VbwConfig
from worker.engine_start import load, prepare_swap
from worker.model_swap import return_freed_memory


def rss_mb() -> float:
    """Resident set size of this process (Linux /proc; the runtime has no psutil dependency)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status (Linux only)")


@dataclass
class SwapBenchResult:
    model: str
    backend: str
    precision: str
    max_batch: int
    graphs_mb: float  # the graph files the engine loads at this precision
    rss_start_mb: float  # the process before any engine
    rss_one_mb: float  # one engine loaded and warm
    rss_two_mb: list[float] = field(default_factory=list)  # per swap: old and new side by side
    rss_after_mb: list[float] = field(default_factory=list)  # per swap: the old one closed
    prepare_s: list[float] = field(default_factory=list)  # per swap: load + checks + warm-up

    def table(self) -> str:
        one = self.rss_one_mb - self.rss_start_mb
        lines = [
            f"model {self.model} ({self.backend}/{self.precision}, max_batch {self.max_batch}); "
            f"graph files {self.graphs_mb:.1f} MB",
            f"RSS before any engine {self.rss_start_mb:.0f} MB; one engine warm {self.rss_one_mb:.0f} MB "
            f"(+{one:.0f} MB)",
            "swap  two engines (MB)  second engine (MB)  old closed (MB)  load+warm (s)",
        ]
        for i, (two, after, s) in enumerate(
            zip(self.rss_two_mb, self.rss_after_mb, self.prepare_s, strict=True)
        ):
            prev = self.rss_one_mb if i == 0 else self.rss_after_mb[i - 1]
            lines.append(f"{i + 1:>4}  {two:>16.0f}  {two - prev:>+18.0f}  {after:>15.0f}  {s:>13.2f}")
        return "\n".join(lines)


def graphs_mb(model_dir: Path, precision: str) -> float:
    meta = json.loads((model_dir / "model.json").read_text())
    files = meta["graphs"][precision].values()
    return sum((model_dir / f).stat().st_size for f in files) / 1e6


def run_swap_bench(cfg: VbwConfig, swaps: int) -> SwapBenchResult:
    ec = cfg.engine
    start = rss_mb()
    old = load(cfg)
    for _ in range(max(1, ec.warmup_runs)):
        old.warmup()
    m = old.metadata
    res = SwapBenchResult(
        model=f"{m.name} {m.version}",
        backend=m.backend,
        precision=m.precision,
        max_batch=m.max_batch,
        graphs_mb=graphs_mb(Path(ec.model_dir), ec.precision),
        rss_start_mb=start,
        rss_one_mb=rss_mb(),
    )
    for _ in range(swaps):
        t0 = time.perf_counter()
        new = prepare_swap(cfg, ec, old.metadata, events=False)
        res.prepare_s.append(time.perf_counter() - t0)
        res.rss_two_mb.append(rss_mb())
        old.close()  # as the pipeline retires it
        del old
        return_freed_memory()
        res.rss_after_mb.append(rss_mb())
        old = new
    old.close()
    return res
