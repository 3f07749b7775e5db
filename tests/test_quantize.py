"""int8 image towers under ONNX Runtime (searchindex.quantize), prepared once, and the int8 default on CPU."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import warnings
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
import torch
from open_clip.transformer import VisionTransformer
from PIL import Image

from searchindex import ModelError
from searchindex.defaults import DEFAULT_CPU_PRECISION
from searchindex.models import encoders
from searchindex.models import int8 as int8_tower
from searchindex.models import onnx as onnxmodels
from searchindex.models.backends import load_encoder
from searchindex.models.encoders import resolve_precision
from searchindex.models.int8 import PreparedEncoder
from searchindex.models.quantize import quantize_onnx_file
from searchindex.models.spec import resolve_model

from .conftest import Shapes

ROOT = Path(__file__).resolve().parent.parent

onnx_extra = pytest.mark.skipif(not onnxmodels.onnx_available(export=True),
                                reason="needs the onnx extra (onnxruntime, onnx)")
int8_default = pytest.mark.skipif(DEFAULT_CPU_PRECISION != "int8",
                                  reason="int8 is the default on x86 CPUs only")


@pytest.fixture()
def torch_model(tmp_path: Path) -> str:
    """tiny-shapes as a ``local-dir:`` model without its shipped ONNX image tower: a timm ResNet the graph
    builder does not cover, so its int8 tower is prepared from torch's export (the path these tests check;
    the torch-free path is tests/test_towers.py's)."""
    import shutil

    from searchindex.models.spec import builtin_models

    folder = tmp_path / "tiny-torch"
    shutil.copytree(builtin_models()["tiny-shapes"], folder,
                    ignore=shutil.ignore_patterns("image.onnx", "towers.json"))
    return f"local-dir:{folder}"


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _export(module: torch.nn.Module, example: torch.Tensor, path: Path) -> None:
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(module.eval(), (example,), str(path), input_names=["pixels"], output_names=["out"],
                              dynamic_axes={"pixels": {0: "n"}, "out": {0: "n"}}, opset_version=17, dynamo=False)
    finally:
        torch.backends.mha.set_fastpath_enabled(True)


@onnx_extra
@pytest.mark.parametrize("levels", [127, 63])
def test_int8_vit_agrees_with_fp32_and_ignores_batch_mates(tmp_path: Path, levels: int) -> None:
    torch.manual_seed(0)
    tower = VisionTransformer(image_size=32, patch_size=8, width=64, layers=2, heads=4, mlp_ratio=4.0,
                              output_dim=32).eval()
    _export(tower, torch.zeros(2, 3, 32, 32), tmp_path / "fp32.onnx")
    converted = quantize_onnx_file(tmp_path / "fp32.onnx", tmp_path / "int8.onnx", weight_levels=levels)
    assert converted == 2 * 4 + 1  # per block: attention in/out, MLP in/out; and the projection
    fp32 = onnxmodels.cpu_session(tmp_path / "fp32.onnx")
    int8 = onnxmodels.cpu_session(tmp_path / "int8.onnx", spin=False)
    import onnx

    ops = {n.op_type for n in onnx.load(str(tmp_path / "int8.onnx")).graph.node}
    assert "MatMulInteger" in ops and "DynamicQuantizeLinear" not in ops  # per row, not per tensor
    rng = np.random.default_rng(4)
    x = rng.standard_normal((6, 3, 32, 32)).astype(np.float32)
    with torch.inference_mode():
        exact = _unit(tower(torch.from_numpy(x)).numpy())
    fast = _unit(int8.run(None, {"pixels": x})[0])
    assert np.allclose(_unit(fp32.run(None, {"pixels": x})[0]), exact, atol=1e-4)
    assert (fast * exact).sum(axis=1).min() > 0.99
    # The first image's vector is the same whatever it is batched with: one bright outlier
    # image, or none at all, does not change it.
    others = np.concatenate([x[:1], 50 * rng.standard_normal((3, 3, 32, 32)).astype(np.float32)])
    np.testing.assert_allclose(_unit(int8.run(None, {"pixels": others})[0])[0], fast[0], atol=1e-6)
    np.testing.assert_allclose(_unit(int8.run(None, {"pixels": x[:1]})[0])[0], fast[0], atol=1e-6)


@onnx_extra
def test_int8_gemm_with_transposed_weights_zero_rows_and_bias(tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(1)
    w = rng.standard_normal((8, 16)).astype(np.float32)  # (out, in), as nn.Linear stores it
    b = rng.standard_normal(8).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1)], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 8])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    onnx.save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "g.onnx"))
    assert quantize_onnx_file(tmp_path / "g.onnx", tmp_path / "q.onnx") == 1
    x = rng.standard_normal((5, 16)).astype(np.float32)
    x[2] = 0.0
    got = onnxmodels.cpu_session(tmp_path / "q.onnx").run(None, {"x": x})[0]
    want = x @ w.T + b
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got[2], b, atol=1e-6)  # a zero row: no division by zero, only the bias
    assert np.abs(got - want).max() < 0.05 * np.abs(want).max()


@onnx_extra
@int8_default
def test_cpu_default_prepares_int8_once_then_loads_it_without_torch(shapes: Shapes, tmp_path: Path, torch_model: str,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEARCHINDEX_CACHE", str(tmp_path))
    assert resolve_precision("auto", "cpu") == "int8"
    images = [Image.open(p).convert("RGB") for p in sorted(shapes.folder.glob("*.png"))[:24]]
    spec = resolve_model(torch_model)
    first = load_encoder(spec, "cpu", "auto")  # builds the prepared tower
    assert isinstance(first, encoders.OpenClipEncoder) and first.precision == "int8"
    reference = load_encoder(spec, "cpu", "fp32")
    fast = first.encode_images(images)
    assert float((fast * reference.encode_images(images)).sum(axis=1).min()) > 0.999
    again = load_encoder(spec, "cpu", "auto")
    assert isinstance(again, PreparedEncoder) and again.dim == first.dim and again.pixel_spec == first.pixel_spec
    assert not again.loaded  # its session is made on first use (or load()), after decode workers fork
    np.testing.assert_allclose(again.encode_images(images), fast, atol=1e-5)
    # Chunked encoder calls give the same vectors as one call (no batch-mate effects).
    pixels = [np.asarray(im.resize((64, 64))) for im in images]
    np.testing.assert_allclose(again.encode_pixels(pixels)[:3], again.encode_pixels(pixels[:3]), atol=1e-6)
    # A new process loads it with neither torch nor open_clip.
    code = ("import sys\nfrom searchindex.models.backends import load_encoder\n"
            "from searchindex.models.spec import resolve_model\n"
            f"e = load_encoder(resolve_model({torch_model!r}), 'cpu')\n"
            "print(type(e).__name__, 'torch' in sys.modules, 'open_clip' in sys.modules)\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SEARCHINDEX_CACHE": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.split() == ["PreparedEncoder", "False", "False"]


@onnx_extra
@int8_default
def test_a_damaged_prepared_tower_is_prepared_again(shapes: Shapes, tmp_path: Path, torch_model: str,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEARCHINDEX_CACHE", str(tmp_path))
    images = [Image.open(p).convert("RGB") for p in sorted(shapes.folder.glob("*.png"))[:6]]
    spec = resolve_model(torch_model)
    want = load_encoder(spec, "cpu", "int8").encode_images(images)
    (model_file,) = (tmp_path / "onnx").glob("*-image-int8.onnx")
    size = model_file.stat().st_size
    # Cut short: seen before anything loads, and built again.
    model_file.write_bytes(model_file.read_bytes()[: size // 2])
    assert int8_tower.load_int8_tower(spec) is None
    rebuilt = load_encoder(spec, "cpu", "int8")
    assert isinstance(rebuilt, encoders.OpenClipEncoder) and rebuilt.precision == "int8"
    np.testing.assert_allclose(rebuilt.encode_images(images), want, atol=1e-5)
    # Overwritten at the same size: refused when its session is made, with a clear error, and
    # its record removed so that the next load prepares it again.
    model_file.write_bytes(b"\0" * size)
    damaged = load_encoder(spec, "cpu", "int8")
    assert isinstance(damaged, PreparedEncoder)
    with pytest.raises(ModelError, match="prepared again on the next run"):
        damaged.encode_images(images)
    again = load_encoder(spec, "cpu", "int8")
    assert isinstance(again, encoders.OpenClipEncoder) and again.precision == "int8"
    np.testing.assert_allclose(again.encode_images(images), want, atol=1e-5)


@onnx_extra
@int8_default
@pytest.mark.parametrize("changed", ["onnxruntime", "torch", "open_clip_torch", "onnx"])
def test_prepared_tower_is_rebuilt_after_an_upgrade(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    changed: str, torch_model: str) -> None:
    monkeypatch.setenv("SEARCHINDEX_CACHE", str(tmp_path))
    spec = resolve_model(torch_model)
    load_encoder(spec, "cpu", "int8")
    assert int8_tower.load_int8_tower(spec) is not None
    assert int8_tower.load_int8_tower(resolve_model("tiny-shapes", "none")) is None  # another model's weights
    real = int8_tower.package_version
    monkeypatch.setattr(int8_tower, "package_version", lambda dist: "99.0" if dist == changed else real(dist))
    assert int8_tower.load_int8_tower(spec) is None
    rebuilt = load_encoder(spec, "cpu", "int8")
    assert isinstance(rebuilt, encoders.OpenClipEncoder) and rebuilt.precision == "int8"
    assert isinstance(load_encoder(spec, "cpu", "int8"), PreparedEncoder)


@onnx_extra
@int8_default
def test_int8_that_drifts_falls_back_to_fp32(shapes: Shapes, tmp_path: Path, torch_model: str,
                                             monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("SEARCHINDEX_CACHE", str(tmp_path))
    # No real tower drifts this much, so the bar is raised above what int8 can reach.
    monkeypatch.setattr(encoders, "INT8_MIN_COSINE", 1.5)
    images = [Image.open(p).convert("RGB") for p in sorted(shapes.folder.glob("*.png"))[:12]]
    spec = resolve_model(torch_model)
    auto = load_encoder(spec, "cpu", "auto")
    assert auto.precision == "fp32"
    expected = load_encoder(spec, "cpu", "fp32").encode_images(images)
    np.testing.assert_allclose(auto.encode_images(images), expected, atol=1e-5)
    # The verdict is kept: the next encoder starts in fp32 without trying again, and says why.
    with caplog.at_level(logging.WARNING, logger="searchindex.models.encoders"):
        again = load_encoder(spec, "cpu", "auto")
    assert isinstance(again, encoders.OpenClipEncoder) and again.precision == "fp32"
    assert "drift from fp32" in caplog.text


def test_int8_without_onnx_runtime_encodes_in_fp32(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   torch_model: str) -> None:
    monkeypatch.setenv("SEARCHINDEX_CACHE", str(tmp_path))
    for module in (onnxmodels, int8_tower):  # the prepared tower's module asks too
        monkeypatch.setattr(module, "onnx_available", lambda export=False: False)
    encoder = load_encoder(resolve_model(torch_model), "cpu", "int8")
    assert encoder.precision == "fp32"
    assert not list(tmp_path.rglob("*int8*"))


@pytest.mark.parametrize(("n", "runs", "want"), [
    (64, 2, [16, 16, 16, 16]), (16, 2, [8, 8]), (36, 2, [9, 9, 9, 9]), (1, 2, [1]), (0, 2, []),
    (17, 1, [8, 9]), (64, 4, [16, 16, 16, 16]), (20, 4, [5, 5, 5, 5]), (3, 4, [1, 1, 1]),
])
def test_image_calls_fill_the_runs_with_at_most_one_chunk_each(n: int, runs: int, want: list[int]) -> None:
    calls = encoders.encode_calls(n, runs)
    assert [b - a for a, b in calls] == want
    assert all(b == a2 for (_, b), (a2, _) in pairwise(calls)) and (not calls or calls[-1][1] == n)


@onnx_extra
def test_side_by_side_calls_give_the_vectors_of_one_call(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The image tower runs as calls of at most 16 images, several at once on one session, each on
    its own thread: the same unit vectors, in the same order, as the whole batch in one call."""
    torch.manual_seed(1)
    tower = VisionTransformer(image_size=32, patch_size=8, width=64, layers=2, heads=4, mlp_ratio=4.0,
                              output_dim=32).eval()
    _export(tower, torch.zeros(2, 3, 32, 32), tmp_path / "fp32.onnx")
    quantize_onnx_file(tmp_path / "fp32.onnx", tmp_path / "int8.onnx")
    session = onnxmodels.cpu_session(tmp_path / "int8.onnx", spin=False, threads=1)
    x = np.random.default_rng(5).standard_normal((70, 3, 32, 32)).astype(np.float32)
    whole = _unit(session.run(None, {"pixels": x})[0])
    monkeypatch.setattr(encoders, "image_runs", lambda: (3, 1))  # 70 images: 6 calls, 3 at a time
    side_by_side = encoders.run_image_session(session, x)
    np.testing.assert_allclose(side_by_side, whole, atol=1e-6)
