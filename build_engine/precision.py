"""Reduced-precision variants of the exported FP32 graphs.

TensorRT 10.12+/11 builds strongly typed networks: precision is whatever the ONNX says, so the
FP16 and INT8 choices are made here, once, and every runtime (ONNX Runtime, TensorRT) sees the
same graph.

- FP16: ONNX Runtime's float16 converter (onnxruntime.transformers.float16, the maintained fork
  of onnxconverter-common's, which also retypes Cast nodes; the original leaves `Cast(to=FLOAT)`
  feeding FP16 consumers and the graph fails to load), mixed precision. Graph I/O keeps its types
  (uint8 frames / float32 features or tokens in, float32 out) and numerically touchy ops stay FP32:
  LayerNormalization and Softmax (large sums of exponentials), and the whole L2-normalisation
  tail of the embedding head (x*x summed can overflow FP16's 65504).
- INT8: explicit QuantizeLinear/DequantizeLinear pairs from onnxruntime.quantization in QDQ
  format, symmetric (zero point 0, which is what TensorRT accepts), per-channel weights,
  activations calibrated on generated clips (for the motion encoder: each frame's features with
  its window predecessor's; for the window encoder: the windows' tokens). The layer on the image
  and the layer reading the temporal difference stay float (`int8_keep_float_nodes`).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import onnx

from contracts.graph import EMBEDDING, SCORES

# Kept in FP32 in the FP16 graph, by op type.
FP16_KEEP_FP32_OPS = ("LayerNormalization", "Softmax", "ReduceSum", "ReduceMean", "Sqrt", "Reciprocal", "Pow")
# Quantized in the INT8 graph: the weight-carrying ops. Attention's activation x activation
# MatMuls are quantized too (TensorRT runs them in INT8); LayerNorm/Softmax stay float.
INT8_OPS = ("Conv", "Gemm", "MatMul")


def _ancestors(graph: onnx.GraphProto, output: str) -> set[str]:
    """Names of the nodes that `output` depends on."""
    producer = {o: n for n in graph.node for o in n.output}
    seen: set[str] = set()
    stack = [output]
    while stack:
        node = producer.get(stack.pop())
        if node is None or node.name in seen:
            continue
        seen.add(node.name)
        stack.extend(node.input)
    return seen


def embedding_tail_nodes(
    model: onnx.ModelProto, embedding: str = EMBEDDING, scores: str = SCORES
) -> list[str]:
    """Nodes that only the embedding output needs (its head and L2 normalisation)."""
    outputs = {o.name for o in model.graph.output}
    if embedding not in outputs:
        return []
    emb = _ancestors(model.graph, embedding)
    shared = _ancestors(model.graph, scores) if scores in outputs else set()
    return sorted(emb - shared)


def _cast_to(node: onnx.NodeProto) -> int:
    return next(a.i for a in node.attribute if a.name == "to")


def remove_cast_round_trips(model: onnx.ModelProto) -> int:
    """Rewire `Cast(to=FP32)(Cast(to=FP16)(x))` with FP32 `x` to read `x` directly; returns the count.

    ONNX Runtime's converter casts every kept-FP32 node's output to FP16 and back again before
    the next kept-FP32 node, so a chain like the L2 norm would still round through FP16. Neither
    maintained converter avoids this, hence this small pass.
    """
    g = model.graph
    bare = onnx.ModelProto()
    bare.CopyFrom(model)
    del bare.graph.value_info[:]  # the converter leaves stale types behind; infer afresh
    inferred = onnx.shape_inference.infer_shapes(bare)
    types = {
        v.name: v.type.tensor_type.elem_type
        for v in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]
    }
    types.update({t.name: t.data_type for t in g.initializer})
    producer = {o: n for n in g.node for o in n.output}
    outputs = {o.name for o in g.output}
    fp32, fp16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16
    rename: dict[str, str] = {}
    for n in g.node:
        if n.op_type != "Cast" or _cast_to(n) != fp32:
            continue
        p = producer.get(n.input[0])
        if p is None or p.op_type != "Cast" or _cast_to(p) != fp16 or types.get(p.input[0]) != fp32:
            continue
        if n.output[0] in outputs:  # a graph output keeps its name: the Cast becomes an Identity
            n.op_type = "Identity"
            del n.attribute[:]
            n.input[0] = p.input[0]
        else:
            rename[n.output[0]] = p.input[0]
    for n in g.node:
        for i, name in enumerate(n.input):
            if name in rename:
                n.input[i] = rename[name]
    # Drop Casts nobody reads any more (repeat: removing one can orphan its producer).
    while True:
        used = {i for n in g.node for i in n.input} | outputs
        dead = [n for n in g.node if n.op_type == "Cast" and not any(o in used for o in n.output)]
        if not dead:
            break
        for n in dead:
            g.node.remove(n)
    return len(rename)


def to_fp16(model: onnx.ModelProto, keep_fp32_nodes: list[str] | None = None) -> onnx.ModelProto:
    """FP16 mixed-precision copy of an FP32 graph; I/O types and touchy ops unchanged.

    `keep_fp32_nodes`: nodes kept FP32 by name; by default the embedding head's tail (a graph
    with `scores` and `embedding` outputs)."""
    from onnxruntime.transformers import float16
    from onnxruntime.transformers.onnx_model import OnnxModel

    # Unnamed nodes cannot be put on the block list; the dynamo exporter names them all, but be safe.
    for i, node in enumerate(model.graph.node):
        if not node.name:
            node.name = f"{node.op_type}_{i}"
    fp16 = float16.convert_float_to_float16(
        model,
        keep_io_types=True,
        op_block_list=list(FP16_KEEP_FP32_OPS),
        node_block_list=embedding_tail_nodes(model) if keep_fp32_nodes is None else keep_fp32_nodes,
    )
    # The converter appends its Cast nodes at the end of the node list; the ONNX spec (and
    # onnx.checker, TensorRT's parser) want topological order.
    OnnxModel(fp16).topological_sort()
    remove_cast_round_trips(fp16)
    # The converter leaves value_info entries with their old FP32 types: infer them afresh.
    del fp16.graph.value_info[:]
    fp16 = onnx.shape_inference.infer_shapes(fp16, strict_mode=True)
    onnx.checker.check_model(fp16, full_check=True)
    return fp16


Feed = np.ndarray | dict[str, np.ndarray]  # one input's batch, or a batch of every input by name


class ArrayCalibrationReader:
    """onnxruntime.quantization CalibrationDataReader over in-memory batches.

    A bare array feeds `input_name`; a dict feeds a graph with several inputs (the motion
    encoder's features and prev_features).
    """

    def __init__(self, input_name: str, batches: Iterable[Feed]):
        self.input_name = input_name
        self._batches = list(batches)
        self._it: Iterator[Feed] = iter(self._batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._it, None)
        if batch is None or isinstance(batch, dict):
            return batch
        return {self.input_name: batch}

    def rewind(self) -> None:
        self._it = iter(self._batches)


# Ops that only move or re-type data: a value's quantization sensitivity passes through them.
_DATA_MOVEMENT = {
    "Cast", "Concat", "Expand", "Flatten", "Gather", "Identity", "Pad", "Reshape", "Slice",
    "Split", "Squeeze", "Transpose", "Unsqueeze",
}  # fmt: skip
_AFFINE = {"Add", "Sub", "Mul", "Div"}


def int8_keep_float_nodes(model: onnx.ModelProto, op_types: Iterable[str] = INT8_OPS) -> list[str]:
    """Quantizable nodes to leave in float, by two rules common in post-training quantization.

    - The first layer on the image: its input is the normalised uint8 picture, and an 8-bit
      re-quantization of it costs accuracy for almost no compute.
    - A layer reading a temporal difference (x_t - x_{t-1}, concatenated with x_t for the motion
      embedding): one per-tensor scale sized for x leaves the much smaller change a few levels.
    Found by walking up from each node's data input through data-movement ops.
    """
    g = model.graph
    producer = {o: n for n in g.node for o in n.output}
    consts = {t.name for t in g.initializer} | {n.output[0] for n in g.node if n.op_type == "Constant"}
    uint8_inputs = {i.name for i in g.input if i.type.tensor_type.elem_type == onnx.TensorProto.UINT8}
    wanted = set(op_types)

    def reaches(tensor: str) -> tuple[bool, bool]:
        """(comes from the uint8 image, comes from a difference of two activations)."""
        image = diff = False
        stack, seen = [tensor], set()
        while stack:
            name = stack.pop()
            if name in seen or name in consts:
                continue
            seen.add(name)
            if name in uint8_inputs:
                image = True
                continue
            node = producer.get(name)
            if node is None:
                continue
            live = [i for i in node.input if i and i not in consts]
            if node.op_type == "Sub" and len(live) == 2:
                diff = True
            elif node.op_type in _DATA_MOVEMENT:
                stack.extend(live[:1] if node.op_type != "Concat" else live)
            elif node.op_type in _AFFINE and len(live) == 1:  # normalisation by constants
                stack.extend(live)
        return image, diff

    keep = []
    for n in g.node:
        if n.op_type in wanted and n.input:
            image, diff = reaches(n.input[0])
            if image or diff:
                keep.append(n.name)
    return keep


def to_int8_qdq(
    model: onnx.ModelProto,
    calibration: Iterable[Feed],
    nodes_to_exclude: Iterable[str] = (),
    op_types: Iterable[str] = INT8_OPS,
    method: str = "MinMax",
) -> onnx.ModelProto:
    """INT8 QDQ copy of an FP32 graph, activation ranges calibrated on `calibration` batches
    (arrays for a one-input graph, dicts by input name otherwise)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    input_name = model.graph.input[0].name
    nodes_to_exclude = [*nodes_to_exclude, *int8_keep_float_nodes(model, op_types)]
    with tempfile.TemporaryDirectory(prefix="vbw-int8-") as tmp:
        src, pre, dst = Path(tmp, "fp32.onnx"), Path(tmp, "pre.onnx"), Path(tmp, "int8.onnx")
        onnx.save(model, src)
        # ONNX shape inference so the quantizer knows every tensor's type (ORT's symbolic one fails
        # on opset-18 ReduceMax, and only the batch is dynamic anyway); no ORT graph optimisation
        # here, the saved graph must stay portable (TensorRT parses it).
        quant_pre_process(str(src), str(pre), skip_optimization=True, skip_symbolic_shape=True)
        quantize_static(
            pre,
            dst,
            calibration_data_reader=ArrayCalibrationReader(input_name, calibration),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(op_types),
            nodes_to_exclude=list(nodes_to_exclude),
            per_channel=True,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod[method],
            extra_options={
                "ActivationSymmetric": True,  # TensorRT needs zero point 0
                "WeightSymmetric": True,
                # Biases stay float: TensorRT's DequantizeLinear takes INT8/FP8/INT4, not the
                # INT32 bias ONNX Runtime would write; TensorRT fuses the float bias itself.
                "QuantizeBias": False,
            },
        )
        int8 = onnx.load(dst)
    onnx.checker.check_model(int8, full_check=True)
    return int8
