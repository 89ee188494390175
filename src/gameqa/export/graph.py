"""Size and cost of an ONNX graph, read from the graph alone (onnx, no torch, no run).

* parameters: elements of the graph's weight tensors (initializers and Constant nodes), counting each learned
  tensor once whatever its storage (fp32, int8, uint8, int32 bias); quantization bookkeeping (scales, zero
  points), clip bounds, pad amounts and values, and int64 shape tensors are not parameters;
* MACs: multiply-accumulates of Conv / ConvInteger / QLinearConv (output elements x input channels per group x
  kernel size), Gemm and MatMul / MatMulInteger / QLinearMatMul (output elements x inner dimension), from
  ONNX shape inference with the input's dynamic dimensions fixed (batch 1, the crop size).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

import numpy as np

from gameqa.errors import ModelError

# Inputs that hold quantization parameters or bounds, not learned weights: op -> input positions.
_NOT_WEIGHTS = {
    "QuantizeLinear": (1, 2), "DequantizeLinear": (1, 2), "ConvInteger": (2, 3), "MatMulInteger": (2, 3),
    "QLinearConv": (1, 2, 4, 5, 6, 7), "QLinearMatMul": (1, 2, 4, 5, 6, 7), "Clip": (1, 2), "Pad": (1, 2, 3),
}
_MAC_OPS = {"Conv": 1, "ConvInteger": 1, "QLinearConv": 3, "Gemm": None, "MatMul": None, "MatMulInteger": None,
            "QLinearMatMul": None}


@dataclass(frozen=True)
class GraphCost:
    parameters: int
    macs: int               # per input of the given shape (one crop when batch is 1)
    input_shape: tuple[int, ...]


def load_graph(path: str | os.PathLike):
    """An ONNX model read from ``path``; a ModelError naming the file when onnx is missing or the file is no graph."""
    try:
        import onnx
    except ImportError:
        raise ModelError(path, "reading an ONNX graph needs the onnx package: pip install onnx") from None
    try:
        return onnx.load(os.fspath(path))
    except Exception as exc:  # onnx raises DecodeError, OSError, ...
        raise ModelError(path, f"cannot read ONNX graph: {str(exc).splitlines()[0] if str(exc) else exc}") from None


def count_parameters(model) -> int:
    """Learned elements in a loaded ONNX model (see the module doc)."""
    from onnx import TensorProto, numpy_helper

    tensors = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    tensors[node.output[0]] = attr.t
    excluded: set[str] = set()
    dynamic_scales = {n.output[1] for n in model.graph.node if n.op_type == "DynamicQuantizeLinear" and len(n.output) > 1}
    for node in model.graph.node:
        for pos in _NOT_WEIGHTS.get(node.op_type, ()):
            if pos < len(node.input):
                excluded.add(node.input[pos])
        if node.op_type == "Mul" and dynamic_scales & set(node.input):  # weight scale times the activation scale
            excluded.update(node.input)
    total = 0
    for name, tensor in tensors.items():
        if name in excluded or tensor.data_type in (TensorProto.INT64, TensorProto.BOOL, TensorProto.STRING):
            continue
        total += int(np.prod(tensor.dims, dtype=np.int64)) if len(tensor.dims) else int(numpy_helper.to_array(tensor).size)
    return total


def _constant_folded(model):
    """The graph after ONNX Runtime's basic (standard-op) optimisations: constant subgraphs such as computed
    padding amounts become initializers, so shape inference can follow them."""
    import tempfile

    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="gameqa-graph-") as work:
        folded = os.path.join(work, "folded.onnx")
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        opts.optimized_model_filepath = folded
        opts.log_severity_level = 3
        try:
            ort.InferenceSession(model.SerializeToString(), sess_options=opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ModelError(None, f"ONNX Runtime cannot load the graph: {str(exc).splitlines()[0]}") from None
        return onnx.load(folded)


def graph_cost(path: str | os.PathLike, crop_size: Optional[int | tuple[int, int]] = None, batch: int = 1) -> GraphCost:
    """Parameters and MACs of the ONNX file at ``path`` for one ``batch`` x C x H x W input; dynamic dimensions
    take ``batch`` and ``crop_size`` (an int for square crops, or (H, W)); fixed ones keep their value."""
    import onnx

    model = load_graph(path)
    params = count_parameters(model)
    graph = model.graph
    inits = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise ModelError(path, f"expected one graph input, found {len(inputs)}")
    dims = inputs[0].type.tensor_type.shape.dim
    shape = []
    for axis, dim in enumerate(dims):
        if dim.HasField("dim_value") and dim.dim_value > 0:
            shape.append(int(dim.dim_value))
            continue
        hw = (crop_size, crop_size) if isinstance(crop_size, int) else (crop_size or (None, None))
        value = batch if axis == 0 else hw[axis - 2] if axis >= 2 else None
        if not value:
            raise ModelError(path, f"input dimension {axis} is dynamic: give the crop size")
        dim.Clear()
        dim.dim_value = int(value)
        shape.append(int(value))
    del graph.value_info[:]  # symbolic shapes from earlier tools would shadow the concrete ones
    try:
        inferred = onnx.shape_inference.infer_shapes(_constant_folded(model), strict_mode=False, data_prop=True)
    except ModelError:
        raise
    except Exception as exc:
        raise ModelError(path, f"ONNX shape inference failed: {str(exc).splitlines()[0]}") from None
    shapes: dict[str, list[int]] = {t.name: list(t.dims) for t in inferred.graph.initializer}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        d = vi.type.tensor_type.shape.dim
        if all(x.HasField("dim_value") for x in d):
            shapes.setdefault(vi.name, [int(x.dim_value) for x in d])
    for node in inferred.graph.node:  # Constant nodes carry their own shapes
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    shapes[node.output[0]] = list(attr.t.dims)
    macs = 0
    for node in inferred.graph.node:
        if node.op_type not in _MAC_OPS:
            continue
        out_shape = shapes.get(node.output[0])
        if out_shape is None:
            raise ModelError(path, f"no inferred shape for the output of {node.op_type} node {node.name!r}")
        out_elems = int(np.prod(out_shape, dtype=np.int64))
        if node.op_type in ("Conv", "ConvInteger", "QLinearConv"):
            weight = shapes.get(node.input[_MAC_OPS[node.op_type]])
            if weight is None:
                raise ModelError(path, f"no shape for the weights of {node.op_type} node {node.name!r}")
            macs += out_elems * int(np.prod(weight[1:], dtype=np.int64))
        elif node.op_type == "Gemm":
            a = shapes.get(node.input[0])
            trans_a = next((attr.i for attr in node.attribute if attr.name == "transA"), 0)
            if a is None:
                raise ModelError(path, f"no shape for the input of Gemm node {node.name!r}")
            macs += out_elems * int(a[0] if trans_a else a[1])
        else:
            a = shapes.get(node.input[0])
            if a is None:
                raise ModelError(path, f"no shape for the input of {node.op_type} node {node.name!r}")
            macs += out_elems * int(a[-1])
    return GraphCost(params, macs, tuple(shape))
