"""The `vbw` command line.

Each sub-command lives in its own module exposing `configure(parser)` and `run(args) -> int`.
Modules are imported only when their command runs, so `vbw run` never pays for torch and
`vbw --help` works on a run-time-only install. Heavy imports belong inside `run()`.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# command words -> (module, one-line help)
COMMANDS: dict[tuple[str, ...], tuple[str, str]] = {
    ("run",): ("worker.cmd_run", "run the worker from a YAML config"),
    ("validate-config",): ("worker.cmd_validate_config", "check a config file and report every problem"),
    ("demo",): ("worker.cmd_demo", "run the bundled sample video through the CPU engine"),
    ("ingest",): ("worker.cmd_ingest", "edge mode: publish RTSP/file frames to a Kafka frames topic"),
    ("gen-clips",): ("build_engine.cmd_gen_clips", "generate labelled synthetic motion clips"),
    ("train",): ("build_engine.cmd_train", "train the VideoBERT model (codebook, pretrain, fine-tune)"),
    ("export",): ("build_engine.cmd_export", "export ONNX graphs (FP32, FP16, INT8) and model.json"),
    ("eval",): ("build_engine.cmd_eval", "top-1 accuracy of a model on freshly generated clips"),
    ("eval-events",): (
        "vbw.eval_events",
        "segment F1, boundary errors and static-scene events on long clips",
    ),
    ("build-engine",): ("build_engine.cmd_build_engine", "compile TensorRT plans (GPU machine only)"),
    ("index",): ("search.cmd_index", "window embeddings (topic or JSONL) into the search index"),
    ("search",): ("search.cmd_search", "indexed windows by text or by a similar window"),
    ("summarize",): ("vbw.cmd_summarize", "events (JSONL or a topic) to HTML pages: timeline and snapshots"),
    ("bench", "engine"): ("vbw.bench.cmd_engine", "engine throughput per backend, precision and batch"),
    ("bench", "pipeline"): ("vbw.bench.cmd_pipeline", "whole-pipeline throughput and latency"),
    ("bench", "kafka"): ("vbw.bench.cmd_kafka", "Kafka in to Kafka out throughput against the raw client"),
    ("bench", "reconnect"): (
        "vbw.bench.cmd_reconnect",
        "camera outages: time to the first frame once it is back",
    ),
    ("bench", "search"): (
        "vbw.bench.cmd_search",
        "search index: ingest rate, p50/p95 filtered query latency",
    ),
    ("bench", "events"): (
        "vbw.bench.cmd_events",
        "time from a motion's first frame to its start event's ack",
    ),
    ("bench", "swap"): (
        "vbw.bench.cmd_swap",
        "hot model swap: RSS of one vs two engines, memory back, load+warm time",
    ),
    ("bench", "streams"): (
        "vbw.bench.cmd_streams",
        "stream API add/remove cycles: threads and RSS back at baseline, request latency",
    ),
}


def _usage() -> str:
    lines = ["usage: vbw COMMAND [options]", "", "commands:"]
    for words, (_, help_) in COMMANDS.items():
        lines.append(f"  {' '.join(words):<18} {help_}")
    lines.append("")
    lines.append("`vbw COMMAND --help` shows a command's options.")
    return "\n".join(lines)


def _match(argv: list[str]) -> tuple[tuple[str, ...], list[str]] | None:
    for n in (2, 1):
        words = tuple(argv[:n])
        if words in COMMANDS:
            return words, argv[n:]
    return None


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    if argv[0] == "--version":
        from worker import __version__

        print(__version__)
        return 0
    found = _match(argv)
    if found is None:
        print(f"vbw: unknown command {' '.join(argv[:2])!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    words, rest = found
    module_name, help_ = COMMANDS[words]
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog="vbw " + " ".join(words), description=help_)
    module.configure(parser)
    args = parser.parse_args(rest)
    try:
        return int(module.run(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
