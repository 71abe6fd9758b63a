"""`vbw bench engine`: frames/s and windows/s per backend, precision and batch; incremental vs whole-window.

Workloads are described in vbw/bench/engine.py. "whole" is infer_windows (the whole_window graph
at fp32, the stage graphs composed at fp16/int8); "recompute" is encode_frames of all T frames +
encode_windows through the stage graphs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path


def _csv(kind: type) -> object:
    return lambda s: [kind(x.strip()) for x in s.split(",") if x.strip()]


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", type=Path, default=Path("models/vbw-motion-small"), help="model directory")
    parser.add_argument(
        "--backends", type=_csv(str), default=["onnxruntime", "torch"], help="comma-separated"
    )
    parser.add_argument(
        "--precisions", type=_csv(str), default=["fp32", "fp16", "int8"], help="comma-separated"
    )
    parser.add_argument(
        "--batches", type=_csv(int), default=[1, 8, 32], help="windows per call, comma-separated"
    )
    parser.add_argument("--stride", type=int, default=4, help="new frames per window step (S)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per workload (median reported)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls before timing")
    parser.add_argument("--min-time", type=float, default=0.2, help="seconds each repeat lasts at least")
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads (default: all cores)")
    parser.add_argument("--device", default="cpu", help="torch device (cpu, cuda)")
    parser.add_argument(
        "--json", dest="json_out", default=None, help="also write results as JSON to this path ('-': stdout)"
    )


def _engine_options(backend: str, args: argparse.Namespace, max_batch: int) -> dict:
    if backend == "onnxruntime":
        return {"intra_op_threads": args.threads, "max_batch": max_batch}
    if backend == "torch":
        return {"threads": args.threads, "device": args.device, "max_batch": max_batch}
    if backend == "tensorrt":  # plans tuned for batch 8 (or the largest asked for, if smaller)
        return {"max_batch": max_batch, "opt_batch": min(8, max_batch)}
    return {"max_batch": max_batch}


def _fmt(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:,.1f}"


def run(args: argparse.Namespace) -> int:
    from engines import EngineUnavailable, load_engine
    from engines.manifest import ModelDirError
    from vbw.bench.engine import CellResult, bench_cell

    load_before = os.getloadavg()
    started = time.time()
    results: list[CellResult] = []
    skipped: list[dict] = []
    max_batch = max(args.batches)
    for backend in args.backends:
        for precision in args.precisions:
            try:
                engine = load_engine(
                    args.model, backend, precision, **_engine_options(backend, args, max_batch)
                )
            except EngineUnavailable as e:
                print(f"[bench] skip {backend} {precision}: {e}", file=sys.stderr)
                skipped.append({"backend": backend, "precision": precision, "reason": str(e)})
                continue
            except ModelDirError as e:
                print(f"vbw bench engine: {e}", file=sys.stderr)
                return 2
            with engine:
                engine.warmup()
                for batch in args.batches:
                    cell = bench_cell(engine, batch, args.stride, args.repeats, args.warmup, args.min_time)
                    results.append(cell)
                    print(
                        f"[bench] {backend} {precision} batch {batch}: {_fmt(cell.frames_per_s)} frames/s, "
                        f"{_fmt(cell.steps_per_s)} steps/s, {_fmt(cell.windows_per_s)} windows/s, "
                        f"incremental {cell.incremental_gain:.2f}x whole",
                        file=sys.stderr,
                        flush=True,
                    )
    if not results:
        print("vbw bench engine: no backend/precision could run", file=sys.stderr)
        return 2

    t, s = results[0].num_frames, args.stride
    header = (
        f"{'backend':<12}{'prec':<6}{'batch':>6}{'frames/s':>10}{'steps/s':>10}{'windows/s':>11}"
        f"{'incr fr/s':>11}{'whole fr/s':>12}{'recomp fr/s':>13}{'gain':>7}{'gain2':>7}"
    )
    print(
        f"engine throughput, T={t}, stride S={s} (fr/s = video frames followed per second = windows/s x S; "
        "gain = incremental / whole (infer_windows), gain2 = incremental / recompute through the stages)"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        print(
            f"{r.backend:<12}{r.precision:<6}{r.batch:>6}{_fmt(r.frames_per_s):>10}{_fmt(r.steps_per_s):>10}"
            f"{_fmt(r.windows_per_s):>11}{_fmt(r.incremental_stream_frames_per_s):>11}"
            f"{_fmt(r.whole_stream_frames_per_s):>12}{_fmt(r.recompute_stream_frames_per_s):>13}"
            f"{r.incremental_gain:>6.2f}x{r.recompute_gain:>6.2f}x"
        )
    by = {(r.backend, r.precision, r.batch): r for r in results}
    ort, ref = by.get(("onnxruntime", "fp32", 8)), by.get(("torch", "fp32", 8))
    if ort and ref:
        print(
            f"batch 8, fp32: onnxruntime {_fmt(ort.frames_per_s)} frames/s vs torch eager {_fmt(ref.frames_per_s)} "
            f"({ort.frames_per_s / ref.frames_per_s:.2f}x); windows/s {_fmt(ort.windows_per_s)} vs "
            f"{_fmt(ref.windows_per_s)} ({ort.windows_per_s / ref.windows_per_s:.2f}x)"
        )
    for r in results:
        if r.batch == 8 and r.precision == "fp32":
            print(
                f"batch 8, {r.backend} fp32, T={t} S={s}: incremental {_fmt(r.incremental_stream_frames_per_s)} "
                f"frames/s vs whole-window recompute {_fmt(r.whole_stream_frames_per_s)} ({r.incremental_gain:.2f}x; "
                f"{r.recompute_gain:.2f}x vs recompute through the stages)"
            )
    load_after = os.getloadavg()
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f}; {os.cpu_count()} CPUs")

    if args.json_out:
        doc = {
            "command": "vbw bench engine "
            + " ".join(sys.argv[3:] if sys.argv[1:3] == ["bench", "engine"] else []),
            "model": str(args.model),
            "machine": {
                "cpus": os.cpu_count(),
                "platform": platform.platform(),
                "processor": platform.processor(),
                "loadavg_before": load_before,
                "loadavg_after": load_after,
            },
            "settings": {
                "stride": s,
                "repeats": args.repeats,
                "warmup": args.warmup,
                "min_time": args.min_time,
                "threads": args.threads,
            },
            "seconds": round(time.time() - started, 1),
            "results": [r.to_dict() for r in results],
            "skipped": skipped,
        }
        text = json.dumps(doc, indent=2) + "\n"
        if args.json_out == "-":
            sys.stdout.write(text)
        else:
            Path(args.json_out).write_text(text)
    return 0
