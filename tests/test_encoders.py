"""Model resolution and loading through open_clip (no network)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from searchindex import Index, ModelError, UnknownModelError, WeightsUnavailableError
from searchindex.models.backends import load_encoder
from searchindex.models.encoders import resolve_model

TINY = Path(__file__).resolve().parent.parent / "searchindex" / "models" / "tiny-shapes"


def test_builtin_model_needs_no_pretrained() -> None:
    spec = resolve_model("tiny-shapes")
    assert spec.pretrained == "builtin" and spec.checkpoint_sha256
    enc = load_encoder(spec, "cpu")
    assert (enc.dim, enc.image_size) == (64, 64)
    vecs = enc.encode_texts(["a red circle", "a blue star"])
    assert vecs.shape == (2, 64) and np.allclose(np.linalg.norm(vecs, axis=1), 1, atol=1e-5)


def test_unknown_model_is_refused_with_suggestions() -> None:
    with pytest.raises(UnknownModelError, match="Similar: .*ViT-B-32"):
        resolve_model("vit-b-32-nope")


def test_default_model_is_vit_b_32_256_datacomp() -> None:
    spec = resolve_model()
    assert (spec.model, spec.pretrained) == ("ViT-B-32-256", "datacomp_s34b_b86k")


def test_unreachable_weights_say_how_to_pass_a_file(tmp_path: Path) -> None:
    spec = resolve_model("ViT-B-32", "laion2b_s34b_b79k")
    with pytest.raises(WeightsUnavailableError, match="--pretrained /path/to"):
        load_encoder(spec, "cpu")
    with pytest.raises(WeightsUnavailableError):
        Index.create(tmp_path / "idx", model="ViT-B-32", pretrained="laion2b_s34b_b79k")
    assert not (tmp_path / "idx").exists()  # nothing half-made


def test_random_init_is_allowed_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING", logger="searchindex"):
        enc = load_encoder(resolve_model("ViT-B-32", "none"), "cpu")
    assert enc.dim == 512 and enc.image_size == 224
    assert "random init" in caplog.text


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_local_checkpoint_folder_loads_and_is_hashed(tmp_path: Path, suffix: str) -> None:
    folder = tmp_path / "my-model"
    folder.mkdir()
    shutil.copy(TINY / "open_clip_config.json", folder)
    if suffix == ".pth":
        torch.save(load_file(str(TINY / "open_clip_model.safetensors")), folder / "model.pth")
    else:
        shutil.copy(TINY / "open_clip_model.safetensors", folder)
    spec = resolve_model(f"local-dir:{folder}")
    assert spec.checkpoint_sha256
    enc = load_encoder(spec, "cpu")
    reference = load_encoder(resolve_model("tiny-shapes"), "cpu")
    np.testing.assert_allclose(enc.encode_texts(["a red circle"]), reference.encode_texts(["a red circle"]),
                               atol=1e-5)


def test_checkpoint_for_another_architecture_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "wrong"
    folder.mkdir()
    cfg = json.loads((TINY / "open_clip_config.json").read_text())
    cfg["model_cfg"]["text_cfg"]["width"] = 96
    (folder / "open_clip_config.json").write_text(json.dumps(cfg))
    shutil.copy(TINY / "open_clip_model.safetensors", folder)
    with pytest.raises(ModelError, match="could not load"):
        load_encoder(resolve_model(f"local-dir:{folder}"), "cpu")
