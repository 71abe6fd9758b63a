"""Engine start-up for the pipeline: load, check against the config, warm up, publish engine_info.

Every failure is a `StartupError` with one line naming what to fix; /readyz says which step is
running (`loading engine`, `warming up`).

`prepare_swap` does the same for a hot model swap (worker.model_swap), beside the running
model and without touching /readyz; its failures are `ModelSwapError`s.
"""

from __future__ import annotations

import contextlib
import logging
import time

import numpy as np

from engines.base import Engine, EngineInfo
from worker.config import EngineConfig, VbwConfig
from worker.health import Health
from worker.metrics import Metrics
from worker.model_swap import ModelSwapError, incompatibilities
from worker.runtime import StartupError

log = logging.getLogger("vbw.pipeline")  # these lines have always been the pipeline's


def start_engine(cfg: VbwConfig, health: Health, metrics: Metrics, engine: Engine | None = None) -> Engine:
    """The engine ready to serve: `engine` if given (the caller keeps owning it), else loaded from
    `cfg.engine` (closed again here if a later check fails)."""
    health.set_ready(False, "loading engine")
    loaded = engine is None
    eng = load(cfg) if engine is None else engine
    try:
        check_windows(cfg, eng)
        check_prompts(cfg, eng)
        warm_up(cfg, eng, health)
    except StartupError:
        if loaded:
            with contextlib.suppress(Exception):
                eng.close()
        raise
    info = eng.metadata
    metrics.engine_info.info(
        {"backend": info.backend, "precision": info.precision, "model": info.name, "version": info.version}
    )
    return eng


def prepare_swap(cfg: VbwConfig, engine_cfg: EngineConfig, running: EngineInfo, *, events: bool) -> Engine:
    """The model of `engine_cfg` loaded beside the running one, checked against it and the
    config, and warm (`engine_cfg.warmup_runs`, at least one run: the first real batch must not
    be slow). ModelSwapError names what is wrong; the new engine is closed again then."""
    swap_cfg = cfg.model_copy(update={"engine": engine_cfg})
    try:
        eng = load(swap_cfg)
    except StartupError as e:
        raise ModelSwapError(str(e)) from None
    try:
        m = eng.metadata
        problems = incompatibilities(running, m, events=events)
        if problems:
            raise ModelSwapError(f"model {m.name} {m.version} cannot replace {running.name} {running.version} "
                                 f"without a restart: {'; '.join(problems)}")  # fmt: skip
        try:
            check_windows(swap_cfg, eng)
            check_prompts(swap_cfg, eng)
        except StartupError as e:
            raise ModelSwapError(str(e)) from None
        t0 = time.perf_counter()
        try:
            for _ in range(max(1, engine_cfg.warmup_runs)):
                eng.warmup()
        except Exception as e:
            raise ModelSwapError(
                f"model {m.name} {m.version}: warm-up failed: {type(e).__name__}: {e}"
            ) from None
        log.info("model swap: %s %s warm in %.2fs", m.name, m.version, time.perf_counter() - t0)
    except ModelSwapError:
        with contextlib.suppress(Exception):
            eng.close()
        raise
    return eng


def load(cfg: VbwConfig) -> Engine:
    from engines import EngineUnavailable, load_engine
    from engines.manifest import ModelDirError

    ec = cfg.engine
    opts = dict(ec.options)
    opts.setdefault("max_batch", cfg.batching.max_batch)
    if ec.threads is not None:
        opts.setdefault("intra_op_threads" if ec.backend == "onnxruntime" else "threads", ec.threads)
    t0 = time.perf_counter()
    try:
        engine = load_engine(ec.model_dir, backend=ec.backend, precision=ec.precision, **opts)
    except (EngineUnavailable, ModelDirError, TypeError, ValueError, OSError) as e:
        raise StartupError(f"engine {ec.backend}/{ec.precision} from {ec.model_dir}: {e}") from None
    m = engine.metadata
    log.info(
        "engine %s %s %s/%s on %s loaded in %.2fs (T=%d, %dx%d)",
        m.name, m.version, m.backend, m.precision, m.device, time.perf_counter() - t0,
        m.num_frames, *m.image_size,
    )  # fmt: skip
    return engine


def check_windows(cfg: VbwConfig, engine: Engine) -> None:
    """windows.size must be the model's T; windows.partial=emit needs an engine taking shorter windows."""
    m = engine.metadata
    size = cfg.windows.size or m.num_frames
    if size != m.num_frames:
        raise StartupError(f"windows.size={size} but model {m.name} {m.version} takes T={m.num_frames}")
    if cfg.windows.partial != "emit":
        return
    try:
        engine.encode_windows(np.zeros((1, max(1, m.num_frames - 1), m.feature_dim), np.float32))
    except Exception:
        raise StartupError(
            f"windows.partial=emit needs an engine that takes windows shorter than T; "
            f"{m.name} ({m.backend}) has a fixed T={m.num_frames}: use pad or drop"
        ) from None


def check_prompts(cfg: VbwConfig, engine: Engine) -> None:
    """engine.labels.prompts needs a model with a text encoder (zero-shot labels)."""
    if cfg.engine.labels is not None and not engine.has_text:
        m = engine.metadata
        raise StartupError(
            f"engine.labels.prompts needs a model with a text encoder; {m.name} {m.version} has none "
            "(train it with the text stage of `vbw train` and export it, or remove engine.labels)"
        )


def warm_up(cfg: VbwConfig, engine: Engine, health: Health) -> None:
    """GPU runtimes reach steady speed only after a few runs (autotuning, arena growth)."""
    runs = cfg.engine.warmup_runs
    if not runs:
        return
    health.set_ready(False, "warming up")
    t0 = time.perf_counter()
    try:
        for _ in range(runs):
            engine.warmup()
    except Exception as e:
        raise StartupError(f"engine warm-up failed: {e}") from None
    log.info("engine warm in %.2fs (%d runs)", time.perf_counter() - t0, runs)
