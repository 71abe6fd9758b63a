"""`vbw export`: what the model directory holds, graph by graph, for a tiny model and the shipped one."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto
from tiny_model import TINY

from build_engine.export import ExportError, export_model
from build_engine.precision import remove_cast_round_trips
from build_engine.trt_compat import load_table, trt_problems
from contracts.graph import (
    CHECKPOINT_NAME,
    CLIPS,
    FRAME_ENCODER,
    GRAPH_IO,
    MANIFEST_NAME,
    MOTION_ENCODER,
    PRECISIONS,
    STAGES,
    TEXT_ENCODER,
    WHOLE_WINDOW,
    WINDOW_ENCODER,
    graph_filename,
)
from engines.manifest import load_manifest, sha256_file
from vbw.cli import main as vbw


def _graphs(model_dir: Path) -> list[tuple[str, str, onnx.ModelProto]]:
    m = load_manifest(model_dir)
    return [
        (precision, graph, onnx.load(model_dir / filename))
        for precision, graphs in m.graphs.items()
        for graph, filename in graphs.items()
    ]


def _elem(v: onnx.ValueInfoProto) -> int:
    return v.type.tensor_type.elem_type


def _dims(v: onnx.ValueInfoProto) -> list[int | str]:
    return [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]


def test_manifest_lists_every_file_with_its_sha256(tiny_model_dir: Path) -> None:
    m = load_manifest(tiny_model_dir)  # verifies every sha256
    on_disk = {p.name for p in tiny_model_dir.iterdir()} - {MANIFEST_NAME}
    assert set(m.files) == on_disk
    for name, entry in m.files.items():
        assert entry.sha256 == sha256_file(tiny_model_dir / name)
        assert entry.bytes == (tiny_model_dir / name).stat().st_size
    assert set(m.graphs) == set(PRECISIONS)
    for precision in PRECISIONS:
        assert set(STAGES) <= set(m.graphs[precision])
    for precision, graphs in m.graphs.items():  # file names as contracts.graph gives them
        assert graphs == {g: graph_filename(g, precision) for g in graphs}, precision
    assert WHOLE_WINDOW in m.graphs["fp32"]
    assert (m.labels, m.num_frames, tuple(m.image_size)) == (["a", "b", "c", "d", "e"], 8, (32, 32))
    assert (m.feature_dim, m.token_dim) == (TINY["feature_dim"], TINY["d_model"])
    assert m.checkpoint == CHECKPOINT_NAME and m.training == {"note": "random init, tests only"}
    assert m.open_set is None  # no `none` label: the top label always names one
    assert m.normalization.mean == (0.5, 0.5, 0.5)


def test_graph_io_names_types_and_only_batch_dynamic(tiny_model_dir: Path) -> None:
    m = load_manifest(tiny_model_dir)
    t, (h, w), d, k = m.num_frames, m.image_size, m.feature_dim, m.token_dim
    want_in = {
        FRAME_ENCODER: [(TensorProto.UINT8, ["batch", h, w, 3])],
        MOTION_ENCODER: [(TensorProto.FLOAT, ["batch", d])] * 2,  # features, prev_features
        WINDOW_ENCODER: [(TensorProto.FLOAT, ["batch", t, k])],
        WHOLE_WINDOW: [(TensorProto.UINT8, ["batch", t, h, w, 3])],
        TEXT_ENCODER: [(TensorProto.INT64, ["batch", m.text.max_len])],
    }
    seen = set()
    for precision, graph, proto in _graphs(tiny_model_dir):
        seen.add(graph)
        onnx.checker.check_model(proto, full_check=True)
        inputs, outputs = GRAPH_IO[graph]
        assert [i.name for i in proto.graph.input] == list(inputs), (precision, graph)
        assert [o.name for o in proto.graph.output] == list(outputs), (precision, graph)
        got = [(_elem(i), _dims(i)) for i in proto.graph.input]
        assert got == want_in[graph], (precision, graph)
        for out in proto.graph.output:  # I/O types kept at every precision
            assert _elem(out) == TensorProto.FLOAT, (precision, graph, out.name)
            dims = _dims(out)
            assert dims[0] == "batch" and all(isinstance(x, int) for x in dims[1:]), (graph, dims)
    assert seen == set(GRAPH_IO)


def test_opset_and_layernorm_is_one_op(tiny_model_dir: Path) -> None:
    n_layernorms = 2 * TINY["n_layers"] + 1  # two per block, one final
    for precision, graph, proto in _graphs(tiny_model_dir):
        opset = next(i.version for i in proto.opset_import if i.domain in ("", "ai.onnx"))
        assert opset >= 17, (precision, graph)
        ops = [n.op_type for n in proto.graph.node]
        if graph == WINDOW_ENCODER:
            assert ops.count("LayerNormalization") == n_layernorms, (precision, graph)
        if graph == WHOLE_WINDOW:  # the frame encoder may add its own
            assert ops.count("LayerNormalization") >= n_layernorms, (precision, graph)
        assert "Pow" not in ops, (precision, graph)  # a decomposed LayerNorm squares with Pow


def test_motion_runs_per_frame_and_window_encoder_is_the_transformer(tiny_model_dir: Path) -> None:
    """The per-window graph holds no convolution: the motion embedding's convolutions sit in the
    per-frame motion_encoder, which holds no attention."""
    for precision, graph, proto in _graphs(tiny_model_dir):
        ops = {n.op_type for n in proto.graph.node}
        if graph == WINDOW_ENCODER:
            assert "Conv" not in ops and "Softmax" in ops, (precision, ops)
        if graph == MOTION_ENCODER:
            assert "Conv" in ops and not ops & {"Softmax", "LayerNormalization"}, (precision, ops)


def test_tokens_input_mode_is_refused_with_a_reason(tmp_path: Path) -> None:
    from videobert.model import VideoBERT, VideoBertConfig, save_checkpoint

    model = VideoBERT(VideoBertConfig(**TINY, input_mode="tokens"))
    save_checkpoint(model, str(tmp_path / "tokens.pt"))
    with pytest.raises(ExportError, match="input_mode='tokens' models cannot be exported"):
        export_model(tmp_path / "tokens.pt", tmp_path / "out")


def _input_types(proto: onnx.ModelProto) -> dict[str, int]:
    inferred = onnx.shape_inference.infer_shapes(proto)
    g = inferred.graph
    types = {v.name: _elem(v) for v in [*g.value_info, *g.input, *g.output]}
    types.update({i.name: i.data_type for i in g.initializer})
    return types


def test_fp16_is_mixed_with_touchy_ops_in_fp32(tiny_model_dir: Path) -> None:
    m = load_manifest(tiny_model_dir)
    proto = onnx.load(tiny_model_dir / m.graphs["fp16"][WINDOW_ENCODER])
    types = _input_types(proto)
    by_op: dict[str, set[int]] = {}
    for n in proto.graph.node:
        by_op.setdefault(n.op_type, set()).add(types[n.input[0]])
    for op in ("LayerNormalization", "Softmax", "ReduceSum", "Sqrt", "Reciprocal"):
        assert by_op[op] == {TensorProto.FLOAT}, op
    assert TensorProto.FLOAT16 in by_op["MatMul"]  # the bulk of the work is FP16
    # No value takes a lossy FP32 -> FP16 -> FP32 round trip between kept-FP32 ops.
    assert remove_cast_round_trips(proto) == 0


def test_int8_is_explicit_symmetric_qdq(tiny_model_dir: Path) -> None:
    m = load_manifest(tiny_model_dir)
    for graph in STAGES:
        proto = onnx.load(tiny_model_dir / m.graphs["int8"][graph])
        ops = [n.op_type for n in proto.graph.node]
        assert ops.count("QuantizeLinear") > 0 and ops.count("DequantizeLinear") > 0
        consts = {t.name: onnx.numpy_helper.to_array(t) for t in proto.graph.initializer}
        for n in proto.graph.node:
            if n.op_type in ("QuantizeLinear", "DequantizeLinear") and len(n.input) > 2:
                zp = consts[n.input[2]]
                assert zp.dtype == np.int8 and not zp.any(), n.name


def test_every_op_is_on_tensorrt_supported_list(tiny_model_dir: Path) -> None:
    table = load_table()
    assert table["source"].startswith("https://github.com/onnx/onnx-tensorrt/")
    graphs = _graphs(tiny_model_dir)
    assert {g for _, g, _ in graphs} == set(GRAPH_IO)  # motion_encoder included
    for precision, graph, proto in graphs:
        missing = sorted({n.op_type for n in proto.graph.node} - set(table["operators"]))
        assert missing == [], (precision, graph, missing)
        assert trt_problems(proto, table) == [], (precision, graph)


def test_shipped_model_ops_on_tensorrt_list(default_model_dir: Path) -> None:
    graphs = _graphs(default_model_dir)
    assert {p for p, _, _ in graphs} == set(PRECISIONS)
    for precision, graph, proto in graphs:
        assert trt_problems(proto) == [], (precision, graph)


def test_trt_checker_flags_what_the_parser_rejects() -> None:
    x = onnx.helper.make_tensor_value_info("x", TensorProto.UINT8, [1, 4])
    y = onnx.helper.make_tensor_value_info("y", TensorProto.UINT8, [4, 1])
    z = onnx.helper.make_tensor_value_info("z", TensorProto.FLOAT, [])
    graph = onnx.helper.make_graph(
        [
            onnx.helper.make_node("Transpose", ["x"], ["y"], name="t"),  # UINT8 into a Transpose
            onnx.helper.make_node("Det", ["f2"], ["z"], name="h"),  # not supported at all
        ],
        "g",
        [x],
        [y, z],
        [onnx.numpy_helper.from_array(np.eye(2, dtype=np.float32), "f2")],
    )
    problems = trt_problems(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 18)]))
    assert any("Transpose" in p and "UINT8" in p for p in problems)
    assert any("Det" in p and "not on" in p for p in problems)


@pytest.mark.slow
def test_export_of_shipped_checkpoint_reproduces_its_graphs(default_model_dir: Path, tmp_path: Path) -> None:
    import onnxruntime as ort

    shipped = load_manifest(default_model_dir)
    assert shipped.checkpoint
    out = tmp_path / "re-export"
    result = export_model(
        default_model_dir / shipped.checkpoint, out, name=shipped.name, version=shipped.version
    )
    m = result.manifest
    assert (m.labels, m.num_frames, m.image_size, m.feature_dim) == (
        shipped.labels,
        shipped.num_frames,
        shipped.image_size,
        shipped.feature_dim,
    )
    assert max(result.fp32_max_abs_diff.values()) <= 1e-4
    h, w = m.image_size
    clips = np.random.default_rng(0).integers(0, 256, (2, m.num_frames, h, w, 3), dtype=np.uint8)
    runs = [
        ort.InferenceSession(str(d / graph_filename(WHOLE_WINDOW, "fp32"))).run(None, {CLIPS: clips})
        for d in (default_model_dir, out)
    ]
    np.testing.assert_allclose(runs[0][0], runs[1][0], atol=1e-5)


def test_shipped_model_fits_10_mb(default_model_dir: Path) -> None:
    m = load_manifest(default_model_dir)
    on_disk = sum(p.stat().st_size for p in default_model_dir.rglob("*") if p.is_file())
    assert on_disk <= 10_000_000, f"shipped model is {on_disk / 1e6:.2f} MB"
    assert set(m.files) == {p.name for p in default_model_dir.iterdir() if p.is_file()} - {MANIFEST_NAME}


def test_cli_export_clear_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert vbw(["export", "--checkpoint", str(tmp_path / "nope.pt"), "--out", str(tmp_path / "m")]) == 2
    assert "no such checkpoint" in capsys.readouterr().err
    (tmp_path / "x.pt").write_bytes(b"")
    rc = vbw(
        [
            "export",
            "--checkpoint",
            str(tmp_path / "x.pt"),
            "--out",
            str(tmp_path / "m"),
            "--precisions",
            "int4",
        ]
    )
    assert rc == 2
    assert "unknown precision 'int4'" in capsys.readouterr().err


def test_manifest_json_is_readable_without_pydantic(tiny_model_dir: Path) -> None:
    doc = json.loads((tiny_model_dir / MANIFEST_NAME).read_text())
    assert doc["schema"] == "vbw.model/v1"
    assert doc["graphs"]["fp32"][FRAME_ENCODER] == graph_filename(FRAME_ENCODER, "fp32")


def test_open_set_model_bakes_its_temperature_and_records_the_reject_rule(tmp_path: Path) -> None:
    """A model with `none`: every engine's scores are softmax(logits / T) (T inside the window
    graphs), and model.json's open_set holds T and the threshold training fitted."""
    import onnxruntime as ort
    import torch

    from engines import load_engine
    from engines.manifest import OpenSet
    from videobert.model import VideoBERT, VideoBertConfig, save_checkpoint

    torch.manual_seed(0)
    fields = {**TINY, "labels": ["up", "down", "none"], "motion_channels": 8, "score_temperature": 0.5}
    model = VideoBERT(VideoBertConfig(**fields)).eval()
    fitted = {"temperature": 0.5, "reject_threshold": 0.7, "fitted_on": "tests"}
    save_checkpoint(model, str(tmp_path / "os.pt"), {"open_set": fitted})
    m = export_model(
        tmp_path / "os.pt", tmp_path / "os", precisions=("fp32",), calib_clips=4, check_clips=4
    ).manifest
    assert m.open_set == OpenSet(none_label="none", temperature=0.5, reject_threshold=0.7, fitted_on="tests")
    assert load_manifest(tmp_path / "os").open_set == m.open_set  # written and read back
    t, (h, w) = m.num_frames, m.image_size
    clips = np.random.default_rng(1).integers(0, 256, (3, t, h, w, 3), dtype=np.uint8)
    with torch.no_grad():
        logits, _, _ = model.window_encoder.forward_train(model.encode_frames(torch.from_numpy(clips)))
    want = torch.softmax(logits / 0.5, dim=-1).numpy()
    sess = ort.InferenceSession(str(tmp_path / "os" / graph_filename(WHOLE_WINDOW, "fp32")))
    np.testing.assert_allclose(sess.run(None, {CLIPS: clips})[0], want, atol=1e-5)
    for backend in ("onnxruntime", "torch"):
        with load_engine(tmp_path / "os", backend, "fp32") as engine:
            np.testing.assert_allclose(engine.infer_windows(clips)[0], want, atol=1e-5)
    # The decision: the top motion at or over the threshold, else none.
    os_ = m.open_set
    assert os_.decide([0.8, 0.1, 0.1], m.labels) == "up"
    assert os_.decide([0.6, 0.1, 0.3], m.labels) == "none"  # top motion under 0.7
    assert os_.decide([0.3, 0.2, 0.5], m.labels) == "none"
    with pytest.raises(ValueError):
        OpenSet(temperature=0.0, reject_threshold=0.5)
