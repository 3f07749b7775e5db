"""int8 image towers (searchindex.models.quantize) and the encoder's int8 default on CPU."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from open_clip.transformer import VisionTransformer
from PIL import Image
from torch import nn

from searchindex.models import encoders
from searchindex.models.backends import load_encoder
from searchindex.models.encoders import resolve_model, resolve_precision
from searchindex.models.quantize import Int8Linear, Int8SelfAttention, quantize_image_tower

from .conftest import Shapes


def _cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return nn.functional.cosine_similarity(a.flatten(0, -2), b.flatten(0, -2), dim=-1)


def _vit(**kwargs: object) -> VisionTransformer:
    torch.manual_seed(0)
    return VisionTransformer(image_size=32, patch_size=8, width=64, layers=2, heads=4, mlp_ratio=4.0,
                             output_dim=32, **kwargs).eval()


def test_int8_linear_is_close_to_fp32_and_each_row_stands_alone() -> None:
    torch.manual_seed(1)
    linear = nn.Linear(96, 40)
    q = Int8Linear.from_linear(linear)
    x = torch.randn(2, 7, 96)
    x[1, 3, 5] = 300.0  # one outlier activation, as CLIP towers have
    with torch.inference_mode():
        exact, fast = linear(x), q(x)
        assert fast.shape == exact.shape
        assert _cosine(fast, exact).min() > 0.999
        # A row's result does not depend on the other rows it is computed with.
        alone = q(x[0, 2:3])
        assert torch.equal(alone[0], fast[0, 2])
        mixed = q(torch.cat([x[0, 2:3], 1000 * torch.randn(5, 96)]))
        assert torch.equal(mixed[0], fast[0, 2])


def test_int8_linear_handles_zero_rows_and_no_bias() -> None:
    linear = nn.Linear(16, 8, bias=False)
    q = Int8Linear.from_linear(linear)
    with torch.inference_mode():
        out = q(torch.zeros(3, 16))
    assert torch.equal(out, torch.zeros(3, 8))


@pytest.mark.parametrize("batch_first", [True, False])
def test_int8_attention_matches_multihead_attention(batch_first: bool) -> None:
    torch.manual_seed(2)
    mha = nn.MultiheadAttention(32, 4, batch_first=batch_first).eval()
    assert Int8SelfAttention.supports(mha)
    q = Int8SelfAttention(mha)
    x = torch.randn(3, 6, 32) if batch_first else torch.randn(6, 3, 32)
    causal = torch.triu(torch.ones(6, 6, dtype=torch.bool), diagonal=1)
    padding = torch.zeros(3, 6, dtype=torch.bool)
    padding[1, 4:] = True
    with torch.inference_mode():
        for kwargs in ({}, {"attn_mask": causal}, {"attn_mask": causal.float() * -1e4},
                       {"key_padding_mask": padding}):
            exact = mha(x, x, x, need_weights=False, **kwargs)[0]
            fast = q(x, x, x, need_weights=False, **kwargs)[0]
            assert fast.shape == exact.shape
            assert _cosine(fast, exact).min() > 0.999, kwargs
        with pytest.raises(NotImplementedError):
            q(x, x, x)  # attention weights are not computed


def test_int8_attention_cross_attention() -> None:
    torch.manual_seed(3)
    mha = nn.MultiheadAttention(32, 4, batch_first=True).eval()
    q = Int8SelfAttention(mha)
    queries, context = torch.randn(2, 3, 32), torch.randn(2, 9, 32)
    with torch.inference_mode():
        exact = mha(queries, context, context, need_weights=False)[0]
        fast = q(queries, context, context, need_weights=False)[0]
    assert _cosine(fast, exact).min() > 0.999


@pytest.mark.parametrize("pooled", [False, True])
def test_quantized_vit_agrees_with_fp32_and_ignores_batch_mates(pooled: bool) -> None:
    # The attentional pooler's attention maps 64-d tokens to 32-d queries, which the int8
    # stand-in does not cover: it must stay fp32, projections included.
    tower = _vit(**({"attentional_pool": True, "attn_pooler_queries": 4, "attn_pooler_heads": 4} if pooled else {}))
    quantized, converted = quantize_image_tower(tower)
    assert quantized is not tower and all(p.dtype == torch.float32 for p in tower.parameters())
    assert sum(isinstance(m, Int8SelfAttention) for m in quantized.modules()) == 2
    left = [n for n, m in quantized.named_modules() if isinstance(m, nn.MultiheadAttention)]
    assert left == (["attn_pool.attn"] if pooled else [])
    linear = [n for n, m in quantized.named_modules() if isinstance(m, nn.Linear)]
    assert linear == (["attn_pool.attn.out_proj"] if pooled else [])
    assert converted == 2 * (2 + 2)  # per block: attention in/out, MLP in/out
    torch.manual_seed(4)
    x = torch.randn(6, 3, 32, 32)
    with torch.inference_mode():
        exact, fast = tower(x), quantized(x)
        assert _cosine(fast, exact).min() > 0.995
        # The first image's vector is the same whatever it is batched with (to float
        # rounding, as in fp32): one bright outlier image does not change it.
        others = torch.cat([x[:1], 50 * torch.randn(3, 3, 32, 32)])
        assert torch.allclose(quantized(others)[0], fast[0], atol=1e-5)


@pytest.mark.skipif(encoders.DEFAULT_CPU_PRECISION != "int8", reason="int8 is the default on x86 CPUs only")
def test_cpu_default_is_int8_and_keeps_the_embeddings(shapes: Shapes, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEARCHINDEX_CACHE", str(tmp_path))
    assert resolve_precision("auto", "cpu") == encoders.DEFAULT_CPU_PRECISION
    images = [Image.open(p).convert("RGB") for p in sorted(shapes.folder.glob("*.png"))[:24]]
    auto = load_encoder(resolve_model("tiny-shapes"), "cpu", "auto")
    reference = load_encoder(resolve_model("tiny-shapes"), "cpu", "fp32")
    fast = auto.encode_images(images)
    assert auto.precision == "int8"  # passed its own check against fp32
    assert float((fast * reference.encode_images(images)).sum(axis=1).min()) > 0.999
    # The check's result is kept for the next process with this model.
    (record,) = (tmp_path / "int8").glob("*.json")
    assert encoders.INT8_MIN_COSINE <= json.loads(record.read_text())["cosine"] <= 1.0 + 1e-6


@pytest.mark.skipif(encoders.DEFAULT_CPU_PRECISION != "int8", reason="int8 is the default on x86 CPUs only")
def test_int8_that_drifts_falls_back_to_fp32(shapes: Shapes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("SEARCHINDEX_CACHE", str(tmp_path))
    # No real tower drifts this much, so the bar is raised above what int8 can reach.
    monkeypatch.setattr(encoders, "INT8_MIN_COSINE", 1.5)
    images = [Image.open(p).convert("RGB") for p in sorted(shapes.folder.glob("*.png"))[:12]]
    auto = load_encoder(resolve_model("tiny-shapes"), "cpu", "auto")
    reference = load_encoder(resolve_model("tiny-shapes"), "cpu", "fp32")
    with caplog.at_level(logging.WARNING, logger="searchindex.models.encoders"):
        first = auto.encode_images(images)
    assert auto.precision == "fp32"
    assert "encoding in fp32 instead" in caplog.text
    expected = reference.encode_images(images)
    assert np.allclose(first, expected, atol=1e-5)
    assert np.allclose(auto.encode_images(images[:5]), expected[:5], atol=1e-5)
    # The next encoder of this model reads the verdict and starts in fp32.
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="searchindex.models.encoders"):
        again = load_encoder(resolve_model("tiny-shapes"), "cpu", "auto")
    assert again.precision == "fp32" and "an earlier check" in caplog.text
    assert np.allclose(again.encode_images(images), expected, atol=1e-5)
