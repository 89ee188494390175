"""Build tiny real ONNX models for tests (no torch): score = 1 + 4 * mean(pixels in [0,1])."""
from __future__ import annotations

import json
from pathlib import Path


def write_mean_model(folder: Path, name: str = "test-mean", fixed_batch: bool = False,
                     channels: int = 3, extra: dict | None = None) -> Path:
    import onnx
    from onnx import TensorProto, helper

    batch = 1 if fixed_batch else "N"
    x = helper.make_tensor_value_info("frames", TensorProto.FLOAT, [batch, channels, "H", "W"])
    y = helper.make_tensor_value_info("score", TensorProto.FLOAT, [batch, 1])
    four = helper.make_tensor("four", TensorProto.FLOAT, [], [4.0])
    one = helper.make_tensor("one", TensorProto.FLOAT, [], [1.0])
    nodes = [
        helper.make_node("ReduceMean", ["frames"], ["m4"], axes=[1, 2, 3], keepdims=1),
        helper.make_node("Reshape", ["m4", "shape"], ["m"]),
        helper.make_node("Mul", ["m", "four"], ["m_scaled"]),
        helper.make_node("Add", ["m_scaled", "one"], ["score"]),
    ]
    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [-1, 1])
    graph = helper.make_graph(nodes, "mean", [x], [y], initializer=[four, one, shape])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(model, folder / "model.onnx")
    spec = {
        "name": name, "kind": "video", "reference": "none", "score_range": [1, 5], "lower_better": False,
        "version": "0.0.1", "weights": "model.onnx", "description": "test model: mean brightness",
        "input": {"layout": "NCHW", "scale": 255.0, "mean": [0, 0, 0], "std": [1, 1, 1]},
    }
    spec.update(extra or {})
    (folder / "model.json").write_text(json.dumps(spec))
    return folder
