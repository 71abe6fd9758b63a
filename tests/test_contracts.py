"""contracts/: one home for graph names, shared types and the error base class.

- Every exception class the project defines derives from VbwError (found by walking the
  packages, so a new class without the base fails here), keeps its builtin base where callers
  catch one, and says whether retrying can help.
- The graph file names are pinned to the shipped model's: renaming a stage or a file would
  orphan every exported model directory.
- contracts imports the standard library only, so every layer can import it.
"""

from __future__ import annotations

import ast
import functools
import importlib
import inspect
import json
import pkgutil
import sys
from pathlib import Path

import pytest

from contracts.errors import VbwError, is_retriable
from contracts.graph import (
    CHECKPOINT_NAME,
    GRAPH_IO,
    GRAPHS,
    MANIFEST_NAME,
    PRECISIONS,
    STAGES,
    graph_filename,
)

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("contracts", "media", "videobert", "engines", "worker", "build_engine", "search", "vbw")


@functools.cache
def _project_exceptions() -> tuple[dict[str, type[BaseException]], tuple[str, ...]]:
    """Every exception class defined in the project's modules, by qualified name; and the
    modules skipped for a missing optional dependency."""
    found: dict[str, type[BaseException]] = {}
    skipped: list[str] = []
    for pkg in PACKAGES:
        root = importlib.import_module(pkg)
        names = [pkg, *(m.name for m in pkgutil.walk_packages(root.__path__, f"{pkg}."))]
        for name in names:
            try:
                module = importlib.import_module(name)
            except ModuleNotFoundError as e:
                # An optional dependency (torch, tensorrt, gi...) absent here: skip that module.
                if (e.name or "").split(".")[0] in PACKAGES:
                    raise
                skipped.append(f"{name} ({e.name})")
                continue
            for obj in vars(module).values():
                if inspect.isclass(obj) and issubclass(obj, BaseException) and obj.__module__ == name:
                    found[f"{name}.{obj.__qualname__}"] = obj
    return found, tuple(skipped)


def test_every_project_exception_derives_from_vbw_error() -> None:
    found, skipped = _project_exceptions()
    assert "contracts.errors.VbwError" in found
    assert len(found) >= 5, (found, skipped)  # the walk really found the classes
    orphans = sorted(name for name, cls in found.items() if not issubclass(cls, VbwError))
    assert orphans == [], f"exception classes without the VbwError base: {orphans}"


# By class name, wherever it lives (modules move): a builtin base its callers catch, and
# whether retrying can help. Classes in modules that need torch/tensorrt are skipped without them.
KNOWN: list[tuple[str, type[Exception] | None, bool]] = [
    ("ConfigError", None, False),
    ("StartupError", None, False),
    ("OffsetRegression", ValueError, True),
    ("SecretError", ValueError, False),
    ("EngineUnavailable", RuntimeError, False),
    ("ModelDirError", None, False),
    ("PlanBuildError", RuntimeError, False),
    ("ExportError", RuntimeError, False),
    ("Stopped", None, True),
    ("SourceFailed", None, False),
]


@pytest.mark.parametrize(("name", "builtin", "retriable"), KNOWN, ids=[k[0] for k in KNOWN])
def test_known_errors_keep_their_builtin_base_and_say_if_retrying_helps(
    name: str, builtin: type[Exception] | None, retriable: bool
) -> None:
    found, skipped = _project_exceptions()
    classes = [cls for qualname, cls in found.items() if qualname.rsplit(".", 1)[1] == name]
    if not classes and skipped:
        pytest.skip(f"{name} not found; skipped modules: {', '.join(skipped)}")
    assert len(classes) == 1, (name, classes)  # one home per error
    cls = classes[0]
    assert issubclass(cls, VbwError)
    if builtin is not None:  # `except ValueError` / `except RuntimeError` still catches it
        assert issubclass(cls, builtin)
    assert cls.retriable is retriable


def test_retriable_is_per_class_and_per_instance() -> None:
    class Broker(VbwError, ConnectionError):
        retriable = True

    assert VbwError("x").retriable is False
    assert VbwError("x", retriable=True).retriable is True
    assert Broker("down").retriable is True and Broker("x", retriable=False).retriable is False
    assert VbwError.retriable is False  # an instance's override stays on the instance
    err = VbwError("stream cam-1: offset 7", retriable=True)
    assert str(err) == "stream cam-1: offset 7" and err.args == ("stream cam-1: offset 7",)


def test_is_retriable_reads_vbw_kafka_and_builtin_errors() -> None:
    from kafka import errors as kerr

    assert is_retriable(VbwError("x", retriable=True)) and not is_retriable(VbwError("x"))
    assert is_retriable(kerr.KafkaConnectionError()) and not is_retriable(kerr.MessageSizeTooLargeError())
    assert is_retriable(ConnectionRefusedError()) and is_retriable(TimeoutError())
    assert not is_retriable(ValueError("bad")) and not is_retriable(FileNotFoundError("x"))


def test_graph_names_are_the_shipped_model_files() -> None:
    """Literal on purpose: these are the names on disk in every exported model directory."""
    assert STAGES == ("frame_encoder", "motion_encoder", "window_encoder")
    assert GRAPHS == ("frame_encoder", "motion_encoder", "window_encoder", "whole_window")
    assert set(GRAPH_IO) == {*GRAPHS, "text_encoder"}
    assert GRAPH_IO["text_encoder"] == (("input_ids",), ("text_embedding",))
    assert graph_filename("text_encoder", "fp16") == "text_encoder.fp16.onnx"
    assert PRECISIONS == ("fp32", "fp16", "int8")
    assert (MANIFEST_NAME, CHECKPOINT_NAME) == ("model.json", "checkpoint.pt")
    assert graph_filename("whole_window", "fp32") == "whole_window.onnx"
    assert graph_filename("frame_encoder", "int8") == "frame_encoder.int8.onnx"
    assert GRAPH_IO["motion_encoder"] == (("features", "prev_features"), ("tokens",))
    assert GRAPH_IO["window_encoder"].outputs == ("scores", "embedding")
    with pytest.raises(ValueError, match="unknown graph 'frame'"):
        graph_filename("frame", "fp32")
    with pytest.raises(ValueError, match="unknown precision 'int4'"):
        graph_filename("frame_encoder", "int4")

    shipped = REPO / "models" / "vbw-motion-small"
    if not (shipped / MANIFEST_NAME).is_file():
        pytest.skip(f"shipped model not built yet: {shipped}")
    doc = json.loads((shipped / MANIFEST_NAME).read_text())  # raw JSON: what consumers read
    assert doc["checkpoint"] == CHECKPOINT_NAME
    for precision, graphs in doc["graphs"].items():
        for graph, filename in graphs.items():
            assert filename == graph_filename(graph, precision)
            assert (shipped / filename).is_file()


def test_contracts_import_only_the_standard_library() -> None:
    for path in sorted((REPO / "contracts").glob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                roots = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                roots = [(node.module or "").split(".")[0]] if node.level == 0 else ["<relative>"]
            else:
                continue
            for root in roots:
                ok = root in sys.stdlib_module_names or root in ("contracts", "<relative>")
                assert ok, f"{path.name}:{node.lineno} imports {root}"
