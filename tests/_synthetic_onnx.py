"""Tiny synthetic SCRFD-layout ONNX files (any level count, 2-D or batched 3-D outputs).

Each level: AveragePool(s) of the input → 1×1 Conv with fixed random weights → score
(Sigmoid), bbox (Sigmoid·4, positive ltrb distances in stride units), kps (raw), then the
official export's flattening (Transpose + Reshape). Enough structure for layout detection,
decoding and NMS tests without real weights.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def make_scrfd_like_onnx(
    path: Path,
    strides: tuple[int, ...] = (8, 16, 32, 64, 128),
    num_anchors: int = 1,
    use_kps: bool = True,
    batched: bool = False,
    seed: int = 0,
    score_sigmoid: bool = True,
) -> Path:
    rng = np.random.default_rng(seed)
    batch_dim: str | int = "B" if batched else 1
    inp = helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [batch_dim, 3, "H", "W"])
    nodes, inits, outs = [], [], []
    kinds = [("score", 1), ("bbox", 4)] + ([("kps", 10)] if use_kps else [])
    shape_c = {}
    for _kind, c in kinds:
        name = f"shape_{c}"
        arr = np.array([0, -1, c] if batched else [-1, c], dtype=np.int64)
        inits.append(numpy_helper.from_array(arr, name))
        shape_c[c] = name
    four = numpy_helper.from_array(np.array(4.0, np.float32), "four")
    inits.append(four)
    per_kind: dict[str, list[str]] = {k: [] for k, _ in kinds}
    for s in strides:
        pooled = f"pool_{s}"
        nodes.append(
            helper.make_node(
                "AveragePool", ["input.1"], [pooled], kernel_shape=[s, s], strides=[s, s]
            )
        )
        for kind, c in kinds:
            # small weights: the score sigmoid never saturates to exactly 1.0 (ties)
            w = (rng.standard_normal((num_anchors * c, 3, 1, 1)) * 0.7).astype(np.float32)
            b = (rng.standard_normal(num_anchors * c) * 0.3).astype(np.float32)
            wn, bn = f"w_{kind}_{s}", f"b_{kind}_{s}"
            inits += [numpy_helper.from_array(w, wn), numpy_helper.from_array(b, bn)]
            conv = f"conv_{kind}_{s}"
            nodes.append(helper.make_node("Conv", [pooled, wn, bn], [conv]))
            last = conv
            if kind == "bbox" or (kind == "score" and score_sigmoid):
                nodes.append(helper.make_node("Sigmoid", [conv], [conv + "_sig"]))
                last = conv + "_sig"
            if kind == "bbox":
                nodes.append(helper.make_node("Mul", [last, "four"], [conv + "_x4"]))
                last = conv + "_x4"
            perm = f"{conv}_t"
            nodes.append(helper.make_node("Transpose", [last], [perm], perm=[0, 2, 3, 1]))
            out = f"{kind}_{s}"
            nodes.append(helper.make_node("Reshape", [perm, shape_c[c]], [out]))
            per_kind[kind].append(out)
    for kind, c in kinds:
        for name in per_kind[kind]:
            shape = [batch_dim, "N", c] if batched else ["N", c]
            outs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, shape))
    graph = helper.make_graph(nodes, "scrfd_like", [inp], outs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])
    model.ir_version = 7
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path
