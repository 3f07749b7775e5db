"""int8 image towers for CPU indexing under ONNX Runtime, with vectors that do not depend on batch mates.

The exported fp32 image tower (:mod:`searchindex.models.onnx`) is rewritten so that
every matrix multiply by a constant weight -- the attention projections and MLPs of
each block and the final projection -- runs in integers:

* weights are int8 with one symmetric scale per output channel (computed once, here);
* activations get one symmetric scale per *row* (per token), computed in the graph
  from that row's largest magnitude: a row's result depends on that row alone, so an
  image encodes to the same vector whatever it is batched with (a resumed run
  reproduces a clean one, a query image finds its own indexed vector);
* ``MatMulInteger`` accumulates in int32; the row scale times the channel scale is
  multiplied back in, then the bias is added.

ONNX Runtime's own dynamic quantisation picks one activation range per tensor, i.e. per
batch, which would make vectors depend on batch mates; and torch's quantized-tensor API
(``quantize_per_channel``, ``quantized.linear_dynamic``) that searchindex used before is
deprecated.  ``MatMulInteger`` is a standard ONNX operator with int8 kernels in ONNX
Runtime's MLAS on x86 and ARM.  Layer norms, softmax, GELU and the patch convolution
stay fp32.  The quality guard (mean cosine against fp32, see
:data:`searchindex.models.encoders.INT8_MIN_COSINE`) is checked when the tower is prepared.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["ACTIVATION_LEVELS", "quantize_onnx_file"]

# Symmetric int8 activations: [-127, 127] per row.
ACTIVATION_LEVELS = 127.0


def _names(prefix: str) -> Any:
    count = iter(range(10**9))
    return lambda what: f"{prefix}/{what}_{next(count)}"


def quantize_onnx_file(src: Path, dst: Path, weight_levels: int = 127) -> int:
    """Write ``src`` (an fp32 ONNX graph) as ``dst`` with per-token int8 matrix multiplies.

    Returns how many were converted.  Weights are stored inside ``dst`` (int8 is 4x
    smaller than the fp32 external data file).  Activations are unsigned with zero point
    128 (ONNX Runtime's fastest x86 kernels multiply u8 by s8); ``weight_levels`` is 127,
    or 63 for CPUs whose int8 kernels add product pairs in 16 bits (no VNNI).
    """
    import onnx

    model = onnx.load(str(src))
    graph = model.graph
    opset = max((op.version for op in model.opset_import if op.domain in ("", "ai.onnx")), default=0)
    if opset < 13:
        raise ValueError(f"opset {opset} is too old to quantise (MatMulInteger with int8 needs 13 or later)")
    inits = {i.name: i for i in graph.initializer}
    writer = _Int8Writer(opset, weight_levels)
    out_nodes: list[Any] = []
    used_weights: set[str] = set()
    for node in graph.node:
        found = _constant_weight(node, inits)
        if found is None:
            out_nodes.append(node)
            continue
        weight, transposed, bias = found
        out_nodes += writer.matmul(node.input[0], node.output[0], weight.T if transposed else weight, bias)
        used_weights.add(node.input[1])
    keep = [i for i in graph.initializer
            if i.name not in used_weights or any(i.name in n.input for n in out_nodes)]
    del graph.node[:]
    graph.node.extend(out_nodes)
    del graph.initializer[:]
    graph.initializer.extend(keep + writer.initializers)
    onnx.save_model(model, str(dst))
    return writer.converted


def _constant_weight(node: Any, inits: dict[str, Any]) -> tuple[np.ndarray, bool, str | None] | None:
    """(weight, transposed, bias input) of a MatMul or plain Gemm by a constant fp32 matrix, else None."""
    from onnx import helper, numpy_helper

    weight, transposed, bias = None, False, None
    if node.op_type == "MatMul" and node.input[1] in inits:
        weight = numpy_helper.to_array(inits[node.input[1]])
    elif node.op_type == "Gemm" and node.input[1] in inits:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if attrs.get("alpha", 1.0) == 1.0 and attrs.get("beta", 1.0) == 1.0 and not attrs.get("transA", 0):
            weight = numpy_helper.to_array(inits[node.input[1]])
            transposed = bool(attrs.get("transB", 0))
            bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
    if weight is None or weight.ndim != 2 or weight.dtype != np.float32:
        return None
    return weight, transposed, bias


class _Int8Writer:
    """Makes the nodes of per-token int8 matrix multiplies, and the constants they share."""

    def __init__(self, opset: int, weight_levels: int) -> None:
        from onnx import TensorProto, helper, numpy_helper

        self.opset, self.weight_levels = opset, weight_levels
        self.name = _names("int8")
        name = self.name
        self.axis_last = helper.make_tensor(name("axes"), TensorProto.INT64, [1], [-1])  # ReduceMax's input from 18
        self.levels = numpy_helper.from_array(np.array(ACTIVATION_LEVELS, dtype=np.float32), name("levels"))
        self.tiny = numpy_helper.from_array(np.array(1e-30, dtype=np.float32), name("tiny"))
        self.lo = numpy_helper.from_array(np.array(-ACTIVATION_LEVELS, dtype=np.float32), name("lo"))
        self.offset = numpy_helper.from_array(np.array(128.0, dtype=np.float32), name("offset"))
        self.zero_point = numpy_helper.from_array(np.array(128, dtype=np.uint8), name("zp"))
        self.initializers: list[Any] = [self.axis_last, self.levels, self.tiny, self.lo, self.offset,
                                        self.zero_point]
        self.converted = 0

    def matmul(self, x: str, y: str, w: np.ndarray, bias: str | None) -> list[Any]:
        """Nodes computing ``y = x @ w (+ bias)`` with ``w`` (K, N) as int8 per output channel and
        ``x`` as int8 per row (token)."""
        from onnx import TensorProto, helper, numpy_helper

        name = self.name
        scale = np.maximum(np.abs(w).max(axis=0), 1e-12) / self.weight_levels  # per output channel
        qw = np.clip(np.round(w / scale), -self.weight_levels, self.weight_levels).astype(np.int8)
        wq = numpy_helper.from_array(qw, name("w"))
        ws = numpy_helper.from_array(scale.astype(np.float32), name("wscale"))
        self.initializers += [wq, ws]
        amax, rs, q, qi, acc, accf, prod, scaled = (name(s) for s in
                                                     ("amax", "rscale", "q", "qi", "acc", "accf", "prod", "scaled"))
        abs_out = name("abs")
        nodes = [helper.make_node("Abs", [x], [abs_out])]
        nodes.append(helper.make_node("ReduceMax", [abs_out, self.axis_last.name], [amax], keepdims=1)
                     if self.opset >= 18 else helper.make_node("ReduceMax", [abs_out], [amax], keepdims=1, axes=[-1]))
        amaxc = name("amaxc")
        nodes.append(helper.make_node("Max", [amax, self.tiny.name], [amaxc]))
        xs = name("xs")
        nodes += [
            helper.make_node("Div", [amaxc, self.levels.name], [rs]),  # the row's scale, shape (..., 1)
            helper.make_node("Div", [x, rs], [xs]),
        ]
        qc = name("qc")
        nodes += [
            helper.make_node("Round", [xs], [q]),
            helper.make_node("Clip", [q, self.lo.name, self.levels.name], [qc]),
        ]
        shifted = name("shifted")
        nodes += [helper.make_node("Add", [qc, self.offset.name], [shifted]),
                  helper.make_node("Cast", [shifted], [qi], to=TensorProto.UINT8),
                  helper.make_node("MatMulInteger", [qi, wq.name, self.zero_point.name], [acc]),
                  helper.make_node("Cast", [acc], [accf], to=TensorProto.FLOAT),
                  helper.make_node("Mul", [rs, ws.name], [prod])]  # row scale x channel scale, (..., N)
        if bias is None:
            nodes.append(helper.make_node("Mul", [accf, prod], [y]))
        else:
            nodes += [helper.make_node("Mul", [accf, prod], [scaled]),
                      helper.make_node("Add", [scaled, bias], [y])]
        self.converted += 1
        return nodes
