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
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(src))
    graph = model.graph
    opset = max((op.version for op in model.opset_import if op.domain in ("", "ai.onnx")), default=0)
    if opset < 13:
        raise ValueError(f"opset {opset} is too old to quantise (MatMulInteger with int8 needs 13 or later)")
    inits = {i.name: i for i in graph.initializer}
    consumers: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            consumers[name] = consumers.get(name, 0) + 1
    new_inits: list[Any] = []
    out_nodes: list[Any] = []
    name = _names("int8")
    axis_last = helper.make_tensor(name("axes"), TensorProto.INT64, [1], [-1])  # ReduceMax's input from opset 18
    levels = numpy_helper.from_array(np.array(ACTIVATION_LEVELS, dtype=np.float32), name("levels"))
    tiny = numpy_helper.from_array(np.array(1e-30, dtype=np.float32), name("tiny"))
    lo = numpy_helper.from_array(np.array(-ACTIVATION_LEVELS, dtype=np.float32), name("lo"))
    offset = numpy_helper.from_array(np.array(128.0, dtype=np.float32), name("offset"))
    zero_point = numpy_helper.from_array(np.array(128, dtype=np.uint8), name("zp"))
    new_inits += [axis_last, levels, tiny, lo, offset, zero_point]
    converted = 0
    used_weights: set[str] = set()

    for node in graph.node:
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
            out_nodes.append(node)
            continue
        w = weight.T if transposed else weight  # (K, N)
        scale = np.maximum(np.abs(w).max(axis=0), 1e-12) / weight_levels  # per output channel
        qw = np.clip(np.round(w / scale), -weight_levels, weight_levels).astype(np.int8)
        wq = numpy_helper.from_array(qw, name("w"))
        ws = numpy_helper.from_array(scale.astype(np.float32), name("wscale"))
        new_inits += [wq, ws]
        used_weights.add(node.input[1])
        x, y = node.input[0], node.output[0]
        amax, rs, q, qi, acc, accf, prod, scaled = (name(s) for s in
                                                     ("amax", "rscale", "q", "qi", "acc", "accf", "prod", "scaled"))
        out_nodes += [
            helper.make_node("Abs", [x], [name("abs")]),
        ]
        abs_out = out_nodes[-1].output[0]
        reduce = (helper.make_node("ReduceMax", [abs_out, axis_last.name], [amax], keepdims=1) if opset >= 18
                  else helper.make_node("ReduceMax", [abs_out], [amax], keepdims=1, axes=[-1]))
        out_nodes += [
            reduce,
            helper.make_node("Max", [amax, tiny.name], [name("amaxc")]),
        ]
        amaxc = out_nodes[-1].output[0]
        out_nodes += [
            helper.make_node("Div", [amaxc, levels.name], [rs]),  # the row's scale, shape (..., 1)
            helper.make_node("Div", [x, rs], [name("xs")]),
        ]
        xs = out_nodes[-1].output[0]
        out_nodes += [
            helper.make_node("Round", [xs], [q]),
            helper.make_node("Clip", [q, lo.name, levels.name], [name("qc")]),
        ]
        qc = out_nodes[-1].output[0]
        shifted = name("shifted")
        out_nodes += [helper.make_node("Add", [qc, offset.name], [shifted]),
                      helper.make_node("Cast", [shifted], [qi], to=TensorProto.UINT8),
                      helper.make_node("MatMulInteger", [qi, wq.name, zero_point.name], [acc])]
        out_nodes += [
            helper.make_node("Cast", [acc], [accf], to=TensorProto.FLOAT),
            helper.make_node("Mul", [rs, ws.name], [prod]),  # row scale x channel scale, (..., N)
        ]
        if bias is None:
            out_nodes.append(helper.make_node("Mul", [accf, prod], [y]))
        else:
            out_nodes += [helper.make_node("Mul", [accf, prod], [scaled]),
                          helper.make_node("Add", [scaled, bias], [y])]
        converted += 1

    keep = [i for i in graph.initializer
            if i.name not in used_weights or any(i.name in n.input for n in out_nodes)]
    del graph.node[:]
    graph.node.extend(out_nodes)
    del graph.initializer[:]
    graph.initializer.extend(keep + new_inits)
    onnx.save_model(model, str(dst))
    return converted
