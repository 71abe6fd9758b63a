"""Will TensorRT's ONNX parser take this graph? Checked against its published operator table.

`trt_supported_ops.json` is onnx-tensorrt's `docs/operators.md` as data (source, release and
date in its header). This runs where TensorRT cannot be installed, so export and the tests can
catch an unsupported op or type long before a GPU machine tries to build a plan. The worker
never reads any of this.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import onnx
from onnx import TensorProto, numpy_helper

TABLE_PATH = Path(__file__).with_name("trt_supported_ops.json")
# ONNX element types, as the table names them.
TRT_TYPE_NAMES = {
    TensorProto.FLOAT: "FP32",
    TensorProto.FLOAT16: "FP16",
    TensorProto.BFLOAT16: "BF16",
    TensorProto.INT32: "INT32",
    TensorProto.INT64: "INT64",
    TensorProto.INT8: "INT8",
    TensorProto.UINT8: "UINT8",
    TensorProto.BOOL: "BOOL",
    TensorProto.DOUBLE: "DOUBLE",
}


@cache
def load_table(path: Path = TABLE_PATH) -> dict:
    return json.loads(path.read_text())


def _types(model: onnx.ModelProto) -> dict[str, int]:
    bare = onnx.ModelProto()
    bare.CopyFrom(model)
    del bare.graph.value_info[:]
    inferred = onnx.shape_inference.infer_shapes(bare, strict_mode=True)
    g = inferred.graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*g.value_info, *g.input, *g.output]}
    types.update({t.name: t.data_type for t in g.initializer})
    return types


def trt_problems(model: onnx.ModelProto, table: dict | None = None) -> list[str]:
    """Every reason the TensorRT ONNX parser would reject `model`, one line each; [] if none."""
    table = table or load_table()
    ops: dict[str, dict] = table["operators"]
    lo, hi = table["opset_range"]
    problems: list[str] = []
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx") and not lo <= imp.version <= hi:
            problems.append(f"opset {imp.version} outside TensorRT's supported {lo}..{hi}")
        elif imp.domain not in ("", "ai.onnx"):
            problems.append(f"custom opset domain {imp.domain!r} needs a TensorRT plugin")
    g = model.graph
    types = _types(model)
    constants = {t.name: t for t in g.initializer}
    constants.update(
        {n.output[0]: n.attribute[0].t for n in g.node if n.op_type == "Constant" and n.attribute}
    )
    used = {i for n in g.node for i in n.input} | {o.name for o in g.output}
    for n in g.node:
        where = f"{n.op_type} node {n.name!r}"
        spec = ops.get(n.op_type)
        if n.domain not in ("", "ai.onnx") or spec is None:
            problems.append(f"{where}: not on TensorRT's supported-operator list")
            continue
        # The table's types are those of the data input; shape/axes inputs are INT64 by the spec.
        if n.input and n.input[0]:
            t = TRT_TYPE_NAMES.get(types.get(n.input[0], -1), "?")
            if t == "?":
                problems.append(f"{where}: cannot infer the type of input {n.input[0]!r}")
            elif t not in spec["types"]:
                problems.append(
                    f"{where}: input type {t} not supported (TensorRT: {', '.join(spec['types'])})"
                )
        if n.op_type in ("QuantizeLinear", "DequantizeLinear") and len(n.input) > 2 and n.input[2]:
            zp = constants.get(n.input[2])
            if zp is None or numpy_helper.to_array(zp).any():
                problems.append(f"{where}: zero point must be a constant 0")
        if n.op_type == "ReduceSum" and len(n.input) > 1 and n.input[1] not in constants:
            problems.append(f"{where}: axes must be an initializer")
        if n.op_type == "LayerNormalization" and any(o in used for o in n.output[1:] if o):
            problems.append(f"{where}: only the first output is supported")
    return problems
