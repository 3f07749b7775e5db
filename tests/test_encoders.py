"""Model resolution and loading through open_clip (no network)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from searchindex import Index, ModelError, UnknownModelError, WeightsUnavailableError
from searchindex.models.backends import load_encoder
from searchindex.models.spec import resolve_model

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


def test_open_clip_names_are_checked_without_importing_open_clip_once_its_catalogue_is_kept(tmp_path: Path) -> None:
    """The first check of an architecture name imports open_clip and keeps its list of names and
    tags in the cache; later processes check names from that copy (importing open_clip costs
    seconds), with the same answers, and a damaged copy is only a slower check."""
    code = ("import sys\nfrom searchindex.models.spec import resolve_model\nfrom searchindex import UnknownModelError\n"
            "print(resolve_model('ViT-B-32-256', 'none'), resolve_model('ViT-B-32'), sep='|')\n"
            "try:\n    resolve_model('vit-b-32-nope')\nexcept UnknownModelError as e:\n    print(e)\n"
            "print('open_clip' in sys.modules, 'torch' in sys.modules)\n")
    env = {**os.environ, "PYTHONPATH": str(TINY.parents[2]), "SEARCHINDEX_CACHE": str(tmp_path)}

    def run() -> list[str]:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
        return out.stdout.splitlines()

    first = run()
    assert first[-1] == "True True" and "Similar:" in first[1] and "ViT-B-32" in first[1]
    copies = list((tmp_path / "open_clip").glob("catalogue-*.json"))
    assert len(copies) == 1
    again = run()
    assert again[:-1] == first[:-1] and again[-1] == "False False"
    copies[0].write_text("{not json")
    assert run() == first  # asked open_clip again, and wrote a good copy
    assert run()[-1] == "False False"


def test_default_model_is_vit_b_32_256_datacomp() -> None:
    spec = resolve_model()
    assert (spec.model, spec.pretrained) == ("ViT-B-32-256", "datacomp_s34b_b86k")


def test_unreachable_weights_say_how_to_pass_a_file(tmp_path: Path) -> None:
    spec = resolve_model("ViT-B-32", "laion2b_s34b_b79k")
    for precision in ("int8", "fp32"):  # built without torch, and through torch
        with pytest.raises(WeightsUnavailableError, match="searchindex demo.*--pretrained FILE.safetensors"):
            load_encoder(spec, "cpu", precision)
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
