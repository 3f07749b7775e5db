"""ONNX graphs of open_clip's ViT image tower and text tower, built from a checkpoint's tensors.

No torch: the checkpoint is read as NumPy arrays (:func:`read_checkpoint`) and the graph
is written node by node with ``onnx.helper`` from a :class:`~.architectures.ClipArchitecture`.
The arithmetic is open_clip's ``CLIP.encode_image`` / ``encode_text`` (pre-norm residual
attention blocks, GELU or QuickGELU MLPs, class-token or mean pooling, end-of-text pooling
for text); ``tests/test_graphs.py`` checks every covered architecture against open_clip.

Every multiply by a weight matrix is a ``MatMul`` by a constant fp32 initializer, so
:func:`.quantize.quantize_onnx_file` turns each into a per-token int8 multiply.  The
weights go to ``NAME.data`` beside the graph (ONNX Runtime loads such a session ~3x
faster than one with the weights inside the protobuf), and both files appear by rename.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelError
from .architectures import ClipArchitecture

__all__ = ["OPSET", "build_image_graph", "build_text_graph", "read_checkpoint"]

logger = logging.getLogger(__name__)

#: LayerNormalization is an ONNX op from 17; GELU is written in its erf form, which ONNX
#: Runtime fuses into its own Gelu kernel (as fast as opset 20's Gelu op; see docs/models.md).
OPSET = 17
_TORCH_HINT = "needs searchindex[torch] (or a .safetensors copy of the checkpoint)"


def read_checkpoint(path: Path | str) -> dict[str, np.ndarray]:
    """The tensors of a safetensors checkpoint as float32 NumPy arrays (fp16 and bf16 widened,
    a ``module.`` prefix from distributed training dropped).

    Raises:
        ModelError: the file is a pickle (``.bin``, ``.pt``, ``.pth``: reading it needs torch),
            missing, or not a readable safetensors file.
    """
    path = Path(path)
    if path.suffix.lower() in (".bin", ".pt", ".pth", ".ckpt"):
        raise ModelError(f"{path.name} is a torch pickle: reading it {_TORCH_HINT}")
    try:
        from safetensors import safe_open
    except ImportError as exc:  # pragma: no cover - safetensors is a core dependency
        raise ModelError("reading checkpoints needs the safetensors package") from exc
    out: dict[str, np.ndarray] = {}
    try:
        with safe_open(str(path), framework="numpy") as f:
            for key in f.keys():  # noqa: SIM118 - safe_open is not a mapping
                name = key[len("module."):] if key.startswith("module.") else key
                if f.get_slice(key).get_dtype() == "BF16":  # NumPy has no bfloat16: widen its bits
                    out[name] = _bf16(path, key)
                    continue
                array = np.asarray(f.get_tensor(key))
                out[name] = array.astype(np.float32) if array.dtype.kind == "f" else array
    except FileNotFoundError as exc:
        raise ModelError(f"checkpoint not found: {path}") from exc
    except Exception as exc:  # safetensors raises its own SafetensorError for a damaged file
        raise ModelError(f"{path.name} is not a readable safetensors checkpoint ({exc}); "
                         f"a torch checkpoint {_TORCH_HINT}") from exc
    return out


def _bf16(path: Path, key: str) -> np.ndarray:
    """One bf16 tensor of a safetensors file as float32 (the format: an 8-byte little-endian
    header size, a JSON header with each tensor's byte range, then the data)."""
    import json

    with open(path, "rb") as fh:
        size = int.from_bytes(fh.read(8), "little")
        entry = json.loads(fh.read(size))[key]
        start, end = entry["data_offsets"]
        fh.seek(8 + size + start)
        bits = np.frombuffer(fh.read(end - start), dtype="<u2")
    shape = tuple(int(d) for d in entry["shape"])
    return (bits.astype(np.uint32) << 16).view(np.float32).reshape(shape)


class _Graph:
    """Collects nodes and initializers, naming each value once."""

    def __init__(self) -> None:
        self.nodes: list[Any] = []
        self.inits: list[Any] = []  # TensorProtos, or (name, type, dims) of arrays in ``big``
        self.big: list[tuple[str, np.ndarray]] = []
        self._count = 0

    def name(self, hint: str) -> str:
        self._count += 1
        return f"{hint}_{self._count}"

    def const(self, value: np.ndarray | float | int | list[int], hint: str = "c", dtype: Any = None) -> str:
        """A constant; arrays of 1 KiB or more are kept aside and written to the data file by
        :func:`_save` (faster than onnx's own conversion: no copy through the protobuf)."""
        from onnx import helper, numpy_helper

        array = np.asarray(value, dtype=dtype)
        if array.dtype == np.float64:
            array = array.astype(np.float32)
        name = self.name(hint)
        if array.nbytes >= 1024:
            tensor = helper.make_tensor_type_proto(helper.np_dtype_to_tensor_dtype(array.dtype), array.shape)
            self.inits.append((name, tensor.tensor_type.elem_type, list(array.shape)))
            self.big.append((name, np.ascontiguousarray(array)))
        else:
            self.inits.append(numpy_helper.from_array(array.copy(order="C"), name))  # copy keeps 0-d
        return name

    def op(self, op_type: str, inputs: list[str], hint: str | None = None, **attrs: Any) -> str:
        from onnx import helper

        out = self.name(hint or op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], **attrs))
        return out

    def ints(self, values: list[int]) -> str:
        return self.const(np.asarray(values, dtype=np.int64), "shape")


class _Weights:
    """Checkpoint tensors by name, checked against the shape the architecture implies."""

    def __init__(self, weights: dict[str, np.ndarray]) -> None:
        self._w = weights

    def __call__(self, key: str, shape: tuple[int, ...]) -> np.ndarray:
        if key not in self._w:
            raise ModelError(f"checkpoint has no tensor {key!r}: not the architecture it was named with")
        value = np.asarray(self._w[key], dtype=np.float32)
        if value.shape != shape:
            raise ModelError(f"checkpoint tensor {key!r} is {value.shape}, the architecture needs {shape}")
        return value

    def has(self, key: str) -> bool:
        return key in self._w


def _layer_norm(g: _Graph, w: _Weights, x: str, prefix: str, width: int, eps: float) -> str:
    return g.op("LayerNormalization", [x, g.const(w(prefix + ".weight", (width,)), "ln_w"),
                                       g.const(w(prefix + ".bias", (width,)), "ln_b")],
                axis=-1, epsilon=eps)


def _linear(g: _Graph, w: _Weights, x: str, prefix: str, n_in: int, n_out: int) -> str:
    """``x @ W.T + b`` of a torch ``Linear`` (the weight stored transposed, as MatMul wants it)."""
    y = g.op("MatMul", [x, g.const(np.ascontiguousarray(w(prefix + ".weight", (n_out, n_in)).T), "w")])
    return g.op("Add", [y, g.const(w(prefix + ".bias", (n_out,)), "b")])


def _gelu(g: _Graph, x: str, quick: bool) -> str:
    if quick:  # x * sigmoid(1.702 x), open_clip's QuickGELU (ONNX Runtime fuses it into QuickGelu)
        return g.op("Mul", [x, g.op("Sigmoid", [g.op("Mul", [x, g.const(np.float32(1.702))])])])
    # torch's exact GELU, x (1 + erf(x / sqrt 2)) / 2, in the order ONNX Runtime's GeluFusion
    # recognises (a multiply by 1/sqrt 2, or 0.5 first, leaves five unfused ops per block)
    inner = g.op("Add", [g.op("Erf", [g.op("Div", [x, g.const(np.float32(math.sqrt(2)))])]),
                         g.const(np.float32(1.0))])
    return g.op("Mul", [g.op("Mul", [x, inner]), g.const(np.float32(0.5))])


def _block(g: _Graph, w: _Weights, x: str, prefix: str, width: int, heads: int, mlp: int,
           layer_scale: bool, quick: bool, eps: float, mask: str | None) -> str:
    """One pre-norm residual attention block (``nn.MultiheadAttention`` + MLP), any batch and length."""
    head = width // heads
    in_w = w(prefix + ".attn.in_proj_weight", (3 * width, width)).copy()
    in_b = w(prefix + ".attn.in_proj_bias", (3 * width,)).copy()
    scale = np.float32(1 / math.sqrt(head))  # folded into the query rows: one multiply fewer per call
    in_w[:width] *= scale
    in_b[:width] *= scale
    h = _layer_norm(g, w, x, prefix + ".ln_1", width, eps)
    qkv = g.op("Add", [g.op("MatMul", [h, g.const(np.ascontiguousarray(in_w.T), "w")]), g.const(in_b, "b")])
    qkv = g.op("Reshape", [qkv, g.ints([0, 0, 3, heads, head])])
    qkv = g.op("Transpose", [qkv], perm=[2, 0, 3, 1, 4])  # (3, n, heads, length, head)
    q, k, v = (g.op("Gather", [qkv, g.const(np.int64(i), "i")], axis=0) for i in range(3))
    scores = g.op("MatMul", [q, g.op("Transpose", [k], perm=[0, 1, 3, 2])])
    if mask is not None:
        scores = g.op("Add", [scores, mask])
    attn = g.op("MatMul", [g.op("Softmax", [scores], axis=-1), v])
    attn = g.op("Reshape", [g.op("Transpose", [attn], perm=[0, 2, 1, 3]), g.ints([0, 0, width])])
    attn = _linear(g, w, attn, prefix + ".attn.out_proj", width, width)
    if layer_scale:
        attn = g.op("Mul", [attn, g.const(w(prefix + ".ls_1.gamma", (width,)), "gamma")])
    x = g.op("Add", [x, attn])
    h = _layer_norm(g, w, x, prefix + ".ln_2", width, eps)
    h = _linear(g, w, _gelu(g, _linear(g, w, h, prefix + ".mlp.c_fc", width, mlp), quick), prefix + ".mlp.c_proj",
                mlp, width)
    if layer_scale:
        h = g.op("Mul", [h, g.const(w(prefix + ".ls_2.gamma", (width,)), "gamma")])
    return g.op("Add", [x, h])


def _save(g: _Graph, inputs: list[Any], outputs: list[Any], path: Path, doc: str) -> None:
    """Write the graph with its weights in ``NAME.data``; both appear by rename (weights first:
    the graph names them), so a reader never sees half a model."""
    import onnx
    from onnx import TensorProto, helper

    path = Path(path)
    data_name = path.name + ".data"
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".graph-") as tmp:
        where: dict[str, tuple[int, int]] = {}
        with open(Path(tmp) / data_name, "wb") as fh:
            for name, array in g.big:
                offset = -fh.tell() % 4096 + fh.tell()  # page-aligned, so ONNX Runtime can map it
                fh.seek(offset)
                fh.write(array.tobytes())
                where[name] = (offset, array.nbytes)
        inits = []
        for init in g.inits:
            if isinstance(init, tuple):
                name, elem_type, dims = init
                tensor = TensorProto(name=name, data_type=elem_type, dims=dims, data_location=TensorProto.EXTERNAL)
                offset, length = where[name]
                for key, value in (("location", data_name), ("offset", str(offset)), ("length", str(length))):
                    entry = tensor.external_data.add()
                    entry.key, entry.value = key, value
                init = tensor
            inits.append(init)
        graph = helper.make_graph(g.nodes, "graph", inputs, outputs, initializer=inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                                  producer_name="searchindex", doc_string=doc)
        model.ir_version = 8  # ONNX Runtime 1.14+ reads it; newer IRs add nothing these graphs use
        onnx.save_model(model, str(Path(tmp) / path.name))
        for name in (data_name, path.name):
            os.chmod(Path(tmp) / name, 0o644)
            os.replace(Path(tmp) / name, path.parent / name)
    logger.debug("wrote %s (%d nodes, %d weights)", path, len(g.nodes), len(g.inits))


def build_image_graph(arch: ClipArchitecture, weights: dict[str, np.ndarray], path: Path | str) -> None:
    """Write the image tower of ``arch`` with ``weights`` (open_clip state-dict names) to ``path``.

    Input ``pixels``: float32 (n, 3, H, W), normalised as the model expects.  Output
    ``embedding``: float32 (n, embed_dim), not normalised (as ``CLIP.encode_image``).

    Raises:
        ModelError: a tensor is missing or has a shape other than ``arch`` implies.
    """
    from onnx import TensorProto, helper

    w, g = _Weights(weights), _Graph()
    width, (gh, gw), (ph, pw) = arch.vision_width, arch.grid, arch.patch_size
    tokens = gh * gw + 1
    x = g.op("Conv", ["pixels", g.const(w("visual.conv1.weight", (width, 3, ph, pw)), "conv")],
             kernel_shape=[ph, pw], strides=[ph, pw])
    x = g.op("Transpose", [g.op("Reshape", [x, g.ints([0, width, -1])])], perm=[0, 2, 1])  # (n, grid, width)
    pos = w("visual.positional_embedding", (tokens, width))
    x = g.op("Add", [x, g.const(pos[1:], "pos")])
    # the class token with its position, one copy per image
    cls = (w("visual.class_embedding", (width,)) + pos[0]).reshape(1, 1, width)
    batch = g.op("Slice", [g.op("Shape", [x]), g.ints([0]), g.ints([1])])
    cls_shape = g.op("Concat", [batch, g.ints([1, width])], axis=0)
    x = g.op("Concat", [g.op("Expand", [g.const(cls, "cls"), cls_shape]), x], axis=1)
    if not arch.vision_no_ln_pre:
        x = _layer_norm(g, w, x, "visual.ln_pre", width, arch.norm_eps)
    for i in range(arch.vision_layers):
        x = _block(g, w, x, f"visual.transformer.resblocks.{i}", width, arch.vision_heads, arch.vision_mlp_width,
                   arch.vision_layer_scale, arch.quick_gelu, arch.norm_eps, None)
    if not arch.vision_final_ln_after_pool:
        x = _layer_norm(g, w, x, "visual.ln_post", width, arch.norm_eps)
    if arch.vision_pool == "tok":
        x = g.op("Gather", [x, g.const(np.int64(0), "i")], axis=1)
    else:  # "avg": the mean of the patch tokens
        patches = g.op("Slice", [x, g.ints([1]), g.ints([tokens]), g.ints([1])])
        x = g.op("ReduceMean", [patches], axes=[1], keepdims=0)
    if arch.vision_final_ln_after_pool:
        x = _layer_norm(g, w, x, "visual.ln_post", width, arch.norm_eps)
    proj = w("visual.proj", (width, arch.embed_dim))
    g.nodes.append(helper.make_node("MatMul", [x, g.const(proj, "proj")], ["embedding"]))
    h, wd = arch.image_size
    _save(g, [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["n", 3, h, wd])],
          [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["n", arch.embed_dim])],
          Path(path), "open_clip image tower built by searchindex.models.graphs")


def build_text_graph(arch: ClipArchitecture, weights: dict[str, np.ndarray], path: Path | str) -> None:
    """Write the text tower of ``arch`` with ``weights`` (open_clip state-dict names) to ``path``.

    Input ``tokens``: int64 (n, L), any L up to the context length (positions and the
    causal mask are cut to L; padding after a row's end-of-text token cannot change its
    vector).  Output ``embedding``: float32 (n, embed_dim), L2-normalised, read at each
    row's largest id (the end-of-text token), as ``CLIP.encode_text(normalize=True)``.

    Raises:
        ModelError: a tensor is missing or has a shape other than ``arch`` implies.
    """
    from onnx import TensorProto, helper

    w, g = _Weights(weights), _Graph()
    width, ctx = arch.text_width, arch.context_length
    length = g.op("Slice", [g.op("Shape", ["tokens"]), g.ints([1]), g.ints([2])])
    zero = g.ints([0])
    x = g.op("Gather", [g.const(w("token_embedding.weight", (arch.vocab_size, width)), "emb"), "tokens"], axis=0)
    pos = g.op("Slice", [g.const(w("positional_embedding", (ctx, width)), "pos"), zero, length])
    x = g.op("Add", [x, pos])
    causal = np.triu(np.full((ctx, ctx), -np.inf, dtype=np.float32), 1)
    mask = g.op("Slice", [g.const(causal, "mask"), g.ints([0, 0]), g.op("Concat", [length, length], axis=0)])
    for i in range(arch.text_layers):
        x = _block(g, w, x, f"transformer.resblocks.{i}", width, arch.text_heads, arch.text_mlp_width,
                   arch.text_layer_scale, arch.quick_gelu, arch.norm_eps, mask)
    x = _layer_norm(g, w, x, "ln_final", width, arch.norm_eps)
    eot = g.op("ArgMax", ["tokens"], axis=1, keepdims=1)  # (n, 1): the end-of-text id is the largest
    x = g.op("GatherND", [x, eot], batch_dims=1)  # (n, width)
    if arch.text_projection == "matrix":
        x = g.op("MatMul", [x, g.const(w("text_projection", (width, arch.embed_dim)), "proj")])
    elif arch.text_projection == "linear":
        x = _linear(g, w, x, "text_projection", width, arch.embed_dim)
    norm = g.op("Max", [g.op("ReduceL2", [x], axes=[-1], keepdims=1), g.const(np.float32(1e-12))])
    g.nodes.append(helper.make_node("Div", [x, norm], ["embedding"]))
    _save(g, [helper.make_tensor_value_info("tokens", TensorProto.INT64, ["n", "length"])],
          [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["n", arch.text_dim])],
          Path(path), "open_clip text tower built by searchindex.models.graphs")

