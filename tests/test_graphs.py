"""ONNX graphs built without torch (searchindex.models.graphs) against open_clip's torch model.

Every covered architecture, random weights: image and text vectors per probe agree with
``encode_image`` / ``encode_text`` to cosine >= 0.9999 (fp32), and the int8 image tower made
by the existing quantizer keeps the quality guard's mean cosine.  Also: the builder imports
no torch, unsupported configs and pickled checkpoints are refused with the torch hint, and
the shipped catalogue equals what the installed open_clip gives.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import open_clip
import pytest
import torch
from safetensors.numpy import save_file

from searchindex.errors import ModelError, UnknownModelError
from searchindex.models import architectures
from searchindex.models.architectures import UnsupportedArchitecture, from_open_clip_config
from searchindex.models.encoders import INT8_MIN_COSINE
from searchindex.models.graphs import build_image_graph, build_text_graph, read_checkpoint
from searchindex.models.int8 import int8_weight_levels, probe_pixels
from searchindex.models.pixels import PixelSpec
from searchindex.models.quantize import quantize_onnx_file
from searchindex.models.textforward import trim_tokens
from searchindex.models.tokenizer import ClipTokenizer

ROOT = Path(__file__).resolve().parent.parent
MIN_COSINE = 0.9999
TEXTS = [
    "",
    "a photo of a dog",
    "Kids building a sandcastle at the beach, late afternoon light!",
    "naïve café façade — 東京の夜景 😀",
    " ".join(f"word{i}" for i in range(120)),  # cut at the context, the end token put last
]
# Each covered architecture and whether its random-init test is slow (> ~60 s here).
COVERED = {
    "ViT-B-32": False, "ViT-B-32-quickgelu": False, "ViT-B-32-256": False,
    "ViT-B-16": False, "ViT-B-16-quickgelu": False,
    "ViT-L-14": True, "ViT-L-14-quickgelu": True, "ViT-B-16-plus-240": True,
}
TIMES: dict[str, float] = {}


def _session(path: Path) -> Any:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    # as searchindex's own sessions: this fusion mishandles the int8 graphs' per-row scales
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"],
                                disabled_optimizers=["MatMulIntegerToFloatFusion"])


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return np.sum(a * b, axis=1)


def _state(model: torch.nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().float().numpy() for k, v in model.state_dict().items()}


def _check_model(model: Any, arch: architectures.ClipArchitecture, pixel_spec: PixelSpec, tmp: Path,
                 int8: bool = True) -> dict[str, float]:
    """Build both graphs from ``model``'s tensors and compare them with the torch model."""
    weights = _state(model)
    image_file, text_file = tmp / "image.onnx", tmp / "text.onnx"
    build_image_graph(arch, weights, image_file)
    build_text_graph(arch, weights, text_file)
    assert (tmp / "image.onnx.data").stat().st_size > 20 * (tmp / "image.onnx").stat().st_size
    out: dict[str, float] = {}

    probes = probe_pixels(pixel_spec)
    with torch.inference_mode():
        want = model.encode_image(torch.from_numpy(probes)).float().numpy()
    fp32 = got = _session(image_file).run(None, {"pixels": probes})[0]
    assert got.shape == want.shape
    # not normalised, as encode_image: the length agrees too
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), np.linalg.norm(want, axis=1), rtol=1e-3)
    out["image"] = float(_cosines(got, want).min())
    assert out["image"] >= MIN_COSINE

    tokens = ClipTokenizer(arch.context_length)(TEXTS)
    assert tokens[-1, -1] == tokens.max()  # the long text was cut and ends with the end token
    with torch.inference_mode():
        want = model.encode_text(torch.from_numpy(tokens), normalize=True).float().numpy()
    text = _session(text_file)
    full = text.run(None, {"tokens": tokens})[0]
    short = text.run(None, {"tokens": trim_tokens(tokens[:3])})[0]  # cut after the longest end token
    np.testing.assert_allclose(np.linalg.norm(full, axis=1), 1.0, rtol=1e-5)
    out["text"] = float(min(_cosines(full, want).min(), _cosines(short, want[:3]).min()))
    assert out["text"] >= MIN_COSINE
    assert full.shape == (len(TEXTS), arch.text_dim)

    if int8:
        int8_file = tmp / "image-int8.onnx"
        converted = quantize_onnx_file(image_file, int8_file, weight_levels=int8_weight_levels())
        assert converted == 4 * arch.vision_layers + 1  # qkv, out, fc, proj per block, and the head
        got8 = _session(int8_file).run(None, {"pixels": probes})[0]
        out["int8"] = float(_cosines(got8, fp32).mean())
        out["int8_min"] = float(_cosines(got8, fp32).min())
        assert out["int8"] >= INT8_MIN_COSINE
    return out


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if slow else n
                                  for n, slow in COVERED.items()])
def test_graphs_match_open_clip(name: str, tmp_path: Path, record_property: Any) -> None:
    start = time.perf_counter()
    torch.manual_seed(0)
    model = open_clip.create_model(name, pretrained=None).eval()
    arch = architectures.architecture(name)
    spec = PixelSpec.from_open_clip(architectures.preprocess(name))
    assert spec is not None
    cosines = _check_model(model, arch, spec, tmp_path)
    TIMES[name] = time.perf_counter() - start
    record_property("cosines", cosines)
    record_property("seconds", TIMES[name])
    print(f"{name}: {json.dumps(cosines)} in {TIMES[name]:.1f} s")


VARIANTS = {
    # every option the builder honours, on a tiny model: mean pooling with the final norm after
    # it, no norm before the blocks, layer scale, a biased text projection, another epsilon,
    # a non-square image and a short context
    "avg-pool": dict(vision_cfg=dict(pool_type="avg", final_ln_after_pool=True, no_ln_pre=True)),
    "avg-pool-ln-first": dict(vision_cfg=dict(pool_type="avg")),
    "layer-scale": dict(vision_cfg=dict(ls_init_value=0.5), text_cfg=dict(ls_init_value=0.5)),
    "proj-bias": dict(text_cfg=dict(proj_bias=True)),
    "proj-none": dict(text_cfg=dict(proj_type="none")),
    "eps-1e-6": dict(vision_cfg=dict(norm_kwargs={"eps": 1e-6}), text_cfg=dict(norm_kwargs={"eps": 1e-6})),
    "non-square": dict(vision_cfg=dict(image_size=[48, 64], patch_size=16), text_cfg=dict(context_length=32)),
    "mlp-ratio": dict(vision_cfg=dict(mlp_ratio=2.5), text_cfg=dict(mlp_ratio=3.0)),
    "quickgelu": dict(quick_gelu=True),
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_config_options(variant: str, tmp_path: Path) -> None:
    cfg: dict[str, Any] = {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "head_width": 16, "patch_size": 16},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 48, "heads": 4, "layers": 2},
    }
    for key, value in VARIANTS[variant].items():
        cfg[key] = {**cfg[key], **value} if isinstance(value, dict) else value
    arch = from_open_clip_config(cfg)
    torch.manual_seed(1)
    model = open_clip.model.CLIP(**cfg).eval()
    for p in model.parameters():  # open_clip initialises biases and norms to 0 / 1: vary them too
        if p.ndim == 1:
            p.data.add_(0.05 * torch.randn_like(p))
    h, w = arch.image_size
    spec = PixelSpec(h, w, "squash", "bicubic", (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    _check_model(model, arch, spec, tmp_path, int8=variant == "avg-pool")


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    """safetensors in fp16, bf16 and with DDP's ``module.`` prefix read back as float32."""
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4, 3)).astype(np.float32)
    save_file({"module.x": a.astype(np.float16), "module.n": np.arange(3)}, str(tmp_path / "h.safetensors"))
    got = read_checkpoint(tmp_path / "h.safetensors")
    assert got["x"].dtype == np.float32 and got["n"].dtype == np.int64
    np.testing.assert_allclose(got["x"], a, atol=2e-3)
    from safetensors.torch import save_file as save_torch

    save_torch({"y": torch.from_numpy(a).to(torch.bfloat16)}, str(tmp_path / "b.safetensors"))
    np.testing.assert_array_equal(read_checkpoint(tmp_path / "b.safetensors")["y"],
                                  torch.from_numpy(a).to(torch.bfloat16).float().numpy())


def test_pickle_and_bad_checkpoints_refused(tmp_path: Path) -> None:
    torch.save({"x": torch.zeros(2)}, tmp_path / "open_clip_pytorch_model.bin")
    with pytest.raises(ModelError, match=r"needs searchindex\[torch\]"):
        read_checkpoint(tmp_path / "open_clip_pytorch_model.bin")
    (tmp_path / "junk.safetensors").write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match="not a readable safetensors"):
        read_checkpoint(tmp_path / "junk.safetensors")
    with pytest.raises(ModelError, match="not found"):
        read_checkpoint(tmp_path / "missing.safetensors")
    arch = architectures.architecture("ViT-B-32")
    with pytest.raises(ModelError, match="visual.conv1.weight"):
        build_image_graph(arch, {"visual.conv1.weight": np.zeros((768, 3, 16, 16), np.float32)},
                          tmp_path / "x.onnx")
    assert not list(tmp_path.glob("x.onnx*"))


@pytest.mark.parametrize("name", ["ViT-B-16-SigLIP", "convnext_base", "RN50", "coca_ViT-B-32",
                                  "xlm-roberta-base-ViT-B-32", "ViTamin-B", "EVA02-B-16"])
def test_unsupported_architectures_refused(name: str) -> None:
    with pytest.raises(UnsupportedArchitecture) as caught:
        architectures.architecture(name)
    message = str(caught.value)
    assert "\n" not in message and message.endswith("needs searchindex[torch]") and name in message
    assert isinstance(caught.value, ModelError)


def test_catalogue_lookups() -> None:
    assert architectures.architecture("ViT-B-32", "openai").quick_gelu  # trained with QuickGELU
    assert not architectures.architecture("ViT-B-32", "laion2b_s34b_b79k").quick_gelu
    assert architectures.architecture("ViT-B-32-quickgelu").quick_gelu
    assert architectures.pretrained_source("ViT-B-32", "laion2b_s34b_b79k") == (
        "laion/CLIP-ViT-B-32-laion2B-s34B-b79K", "open_clip_model.safetensors")
    pre = architectures.preprocess("ViT-B-32-256", "datacomp_s34b_b86k")
    assert pre["size"] == 256 and PixelSpec.from_open_clip(pre) is not None
    with pytest.raises(UnknownModelError):
        architectures.architecture("ViT-Q-99")
    with pytest.raises(UnknownModelError, match="laion2b"):
        architectures.pretrained_source("ViT-B-32", "no_such_tag")
    # every tag's preprocessing as open_clip's factory would set it
    for name, tag in [("ViT-B-32", "openai"), ("ViT-L-14", "datacomp_xl_s13b_b90k"), ("ViT-B-32-256", None)]:
        import open_clip.factory as factory
        from open_clip.transform import PreprocessCfg, merge_preprocess_dict

        want = merge_preprocess_dict(PreprocessCfg(), open_clip.get_pretrained_cfg(name, tag) if tag else {})
        got = architectures.preprocess(name, tag)
        for key in ("mean", "std", "interpolation", "resize_mode"):
            assert list(np.atleast_1d(got[key])) == list(np.atleast_1d(want[key])), (name, key)
        assert got["size"] == factory.get_model_config(name)["vision_cfg"]["image_size"]


def test_catalogue_matches_installed_open_clip() -> None:
    """The shipped file is what scripts/make_model_catalogue.py makes from this open_clip."""
    spec = importlib.util.spec_from_file_location("make_model_catalogue", ROOT / "scripts/make_model_catalogue.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    fresh = module.dumps(module.build_catalogue())
    assert architectures.CATALOGUE_PATH.read_text(encoding="utf-8") == fresh, \
        "stale catalogue: run scripts/make_model_catalogue.py"
    assert architectures.CATALOGUE_PATH.stat().st_size < 200_000


def test_builder_imports_no_torch(tmp_path: Path) -> None:
    """A process where torch cannot be imported reads a checkpoint and builds and runs both graphs."""
    torch.manual_seed(0)
    cfg = {"embed_dim": 16,
           "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
           "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
    model = open_clip.model.CLIP(**cfg).eval()
    save_file({k: np.ascontiguousarray(v) for k, v in _state(model).items()}, str(tmp_path / "m.safetensors"))
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    script = f"""
import sys, json
sys.modules['torch'] = None
import numpy as np
from pathlib import Path
from searchindex.models.architectures import from_open_clip_config
from searchindex.models.graphs import build_image_graph, build_text_graph, read_checkpoint
from searchindex.models.tokenizer import ClipTokenizer
import onnxruntime as ort
tmp = Path({str(tmp_path)!r})
arch = from_open_clip_config(json.loads((tmp / 'cfg.json').read_text()))
weights = read_checkpoint(tmp / 'm.safetensors')
build_image_graph(arch, weights, tmp / 'i.onnx')
build_text_graph(arch, weights, tmp / 't.onnx')
img = ort.InferenceSession(str(tmp / 'i.onnx')).run(None, {{'pixels': np.zeros((2, 3, 32, 32), np.float32)}})[0]
txt = ort.InferenceSession(str(tmp / 't.onnx')).run(None, {{'tokens': ClipTokenizer()(['a cat'])}})[0]
np.save(tmp / 'img.npy', img)
np.save(tmp / 'txt.npy', txt)
assert not [m for m in sys.modules if m.split('.')[0] in ('torch', 'open_clip') and sys.modules[m] is not None]
"""
    subprocess.run([sys.executable, "-c", script], check=True, cwd=ROOT)
    with torch.inference_mode():
        want_img = model.encode_image(torch.zeros(2, 3, 32, 32)).numpy()
        want_txt = model.encode_text(torch.from_numpy(ClipTokenizer()(["a cat"])), normalize=True).numpy()
    assert _cosines(np.load(tmp_path / "img.npy"), want_img).min() >= MIN_COSINE
    assert _cosines(np.load(tmp_path / "txt.npy"), want_txt).min() >= MIN_COSINE


def test_graph_opset_and_weights_apart(tmp_path: Path) -> None:
    """The graphs hold no weights inside (they load ~3x faster apart) and use opset 17."""
    cfg = {"embed_dim": 16,
           "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
           "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
    model = open_clip.model.CLIP(**cfg)
    build_text_graph(from_open_clip_config(cfg), _state(model), tmp_path / "t.onnx")
    graph = onnx.load(str(tmp_path / "t.onnx"), load_external_data=False)
    assert [o.version for o in graph.opset_import] == [17]
    assert (tmp_path / "t.onnx").stat().st_size < 64_000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.onnx", "t.onnx.data"]  # no temp left
    onnx.checker.check_model(str(tmp_path / "t.onnx"), full_check=True)
