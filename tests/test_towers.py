"""Models without torch: the shipped tiny-shapes tower, the torch-free encoder path, weights checked in place."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from searchindex import Index
from searchindex.errors import WeightsUnavailableError
from searchindex.models.backends import load_encoder
from searchindex.models.spec import CHECKPOINT_NAME, builtin_models, resolve_model, sha256_file

from .conftest import Shapes

#: Run a snippet in a fresh interpreter where torch, torchvision, open_clip and timm cannot be imported:
#: what the core install is.
NO_TORCH = textwrap.dedent("""
    import sys
    for name in ("torch", "torchvision", "open_clip", "timm"):
        sys.modules[name] = None
""")


def _no_torch(code: str, tmp: Path, **env: str) -> str:
    done = subprocess.run([sys.executable, "-c", NO_TORCH + textwrap.dedent(code) + textwrap.dedent("""
        assert not [m for m in sys.modules if m.split(".")[0] in ("torch", "open_clip", "timm") and sys.modules[m]]
    """)], capture_output=True, text=True, timeout=600, cwd=tmp, env={**os.environ, **env}, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_shipped_image_tower_matches_torch() -> None:
    """The committed image.onnx is tiny-shapes' image tower as torch computes it, from the shipped weights."""
    pytest.importorskip("open_clip")
    import onnxruntime as ort
    import torch

    from searchindex.models.encoders import OpenClipEncoder
    from searchindex.models.int8 import probe_pixels

    folder = builtin_models()["tiny-shapes"]
    facts = json.loads((folder / "towers.json").read_text())
    assert facts["checkpoint_sha256"] == sha256_file(folder / CHECKPOINT_NAME)
    assert facts["image_sha256"] == sha256_file(folder / "image.onnx")
    encoder = OpenClipEncoder(resolve_model("tiny-shapes"), "cpu", "fp32")
    assert encoder.pixel_spec is not None and facts["pixel_spec"] == encoder.pixel_spec.to_json()
    probes = probe_pixels(encoder.pixel_spec, 8)
    with torch.inference_mode():
        want = encoder.torch_model.visual(torch.from_numpy(probes)).numpy()
    got = ort.InferenceSession(str(folder / "image.onnx"), providers=["CPUExecutionProvider"]).run(
        None, {"pixels": probes})[0]
    cos = np.sum(got * want, axis=1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
    assert cos.min() >= 0.9999, cos


def test_core_path_indexes_searches_and_tags_without_torch(shapes: Shapes, tmp_path: Path) -> None:
    """tiny-shapes end to end in a process that cannot import torch: index, search (right answers), tag,
    duplicates and a few-shot rerank."""
    photos = tmp_path / "photos"
    photos.mkdir()
    reds = [p for p, row in shapes.labels.items() if row["color"] == "red" and row["shape"] == "circle"]
    others = [p for p, row in shapes.labels.items() if not (row["color"] == "red" and row["shape"] == "circle")]
    for p in reds[:10] + others[:110]:
        shutil.copy(p, photos / Path(p).name)
    wanted = {Path(p).name for p in reds[:10]}
    out = _no_torch(f"""
        import json
        from searchindex import Index
        ix = Index.create({str(tmp_path / 'idx')!r}, model="tiny-shapes")
        summary = ix.add_folder({str(photos)!r})
        assert summary.indexed == 120, summary
        hits = [r.path.rsplit("/", 1)[1] for r in ix.search("a photo of a red circle", k=10)]
        ix.tag(["circle", "star"])
        groups = ix.duplicates()
        print(json.dumps({{"hits": hits, "precision": ix.models.encoder.precision,
                           "tags": dict(ix.tags()), "groups": len(groups)}}))
    """, tmp_path)
    facts = json.loads(out.strip().splitlines()[-1])
    assert facts["precision"] == "int8"
    assert len(set(facts["hits"]) & wanted) >= 8, facts["hits"]
    assert facts["tags"].get("circle", 0) > 0
    # The same index, reopened in a process with torch, answers the same (vectors from either install agree).
    with Index.open(tmp_path / "idx") as ix:
        again = [Path(r.path).name for r in ix.search("a photo of a red circle", k=10)]
    assert again == facts["hits"]


def test_torch_and_torchless_preparation_give_the_same_results(shapes: Shapes, tmp_path: Path) -> None:
    """Two indexes of the same photos, one whose int8 tower torch exported and one built without torch,
    return the same images for the same queries."""
    pytest.importorskip("open_clip")
    from searchindex.models import encoders
    from searchindex.models.encoders import OpenClipEncoder
    from searchindex.models.int8 import prepare_int8_tower

    photos = tmp_path / "photos"
    photos.mkdir()
    for p in list(shapes.labels)[:150]:
        shutil.copy(p, photos / Path(p).name)
    results = {}
    for way in ("torch", "torchless"):
        os.environ["SEARCHINDEX_CACHE"] = str(tmp_path / f"cache-{way}")
        try:
            if way == "torch":  # prepared from torch's export before the index asks for one
                assert prepare_int8_tower(OpenClipEncoder(resolve_model("tiny-shapes"), "cpu", "fp32"),
                                          encoders.INT8_MIN_COSINE) is not None
            with Index.create(tmp_path / way, model="tiny-shapes") as ix:
                facts = json.loads(next((tmp_path / f"cache-{way}" / "onnx").glob("*-image-int8.json")).read_text())
                assert facts["source"] == ("torch" if way == "torch" else "shipped")
                ix.add_folder(photos)
                results[way] = [[Path(r.path).name for r in ix.search(q, k=8)]
                                for q in ("a photo of a red circle", "a blue star", "a green square on sand")]
        finally:
            os.environ["SEARCHINDEX_CACHE"] = str(Path(os.environ["SEARCHINDEX_CACHE"]).parent)
    for a, b in zip(results["torch"], results["torchless"], strict=True):
        assert len(set(a) & set(b)) >= 7, (a, b)


def test_weights_changed_in_place_are_refused(shapes: Shapes, tmp_path: Path) -> None:
    """An index records its local weights file by SHA-256; a file changed in place is refused before any
    image or text is encoded with it, with the reindex hint (on the torch and the ONNX paths)."""
    folder = tmp_path / "model"
    shutil.copytree(builtin_models()["tiny-shapes"], folder)
    for name in ("image.onnx", "towers.json"):
        (folder / name).unlink()
    photos = tmp_path / "photos"
    photos.mkdir()
    for p in list(shapes.labels)[:20]:
        shutil.copy(p, photos / Path(p).name)
    with Index.create(tmp_path / "idx", model=f"local-dir:{folder}") as ix:
        ix.add_folder(photos)
    from safetensors.numpy import load_file, save_file

    weights = load_file(str(folder / CHECKPOINT_NAME))
    weights["ln_final.weight"] = weights["ln_final.weight"] * 2
    save_file(weights, str(folder / CHECKPOINT_NAME))
    shutil.copy(list(shapes.labels)[30], photos / "new.png")
    for precision in ("int8", "fp32"):
        with Index.open(tmp_path / "idx", precision=precision) as ix:
            with pytest.raises(WeightsUnavailableError, match="changed since this index was built.*reindex"):
                ix.add_folder(photos)
            with pytest.raises(WeightsUnavailableError, match="changed since"):
                ix.search("a never asked query")
    with Index.open(tmp_path / "idx") as ix:
        assert ix.count() == 20  # nothing was added with the other weights


def test_checkpoint_file_changed_in_place_is_refused(tmp_path: Path) -> None:
    ckpt = tmp_path / "w.safetensors"
    shutil.copy(builtin_models()["tiny-shapes"] / CHECKPOINT_NAME, ckpt)
    spec = resolve_model("ViT-B-32", str(ckpt))
    ckpt.write_bytes(ckpt.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(WeightsUnavailableError, match="changed since"):
        load_encoder(spec, "cpu")


def test_models_only_torch_runs_say_so_in_one_line(tmp_path: Path) -> None:
    out = _no_torch("""
        from searchindex.errors import MissingExtraError
        from searchindex.models.backends import load_encoder
        from searchindex.models.spec import resolve_model
        for model, pretrained, precision in (("ViT-B-32", "none", "auto"), ("RN50", "openai", "auto"),
                                             ("tiny-shapes", None, "bf16")):
            try:
                load_encoder(resolve_model(model, pretrained), "cpu", precision)
            except MissingExtraError as exc:
                print(exc)
            else:
                raise AssertionError(model)
    """, tmp_path)
    lines = out.strip().splitlines()
    assert len(lines) == 3 and all("[torch]" in line for line in lines), lines


def test_offline_default_model_raises_quietly_and_fast(tmp_path: Path, capfd: pytest.CaptureFixture[str],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The library's own failure: a typed error naming what to do, nothing printed, no retry storm."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    import time

    start = time.perf_counter()
    with pytest.raises(WeightsUnavailableError) as err:
        Index.create(tmp_path / "idx")
    elapsed = time.perf_counter() - start
    message = str(err.value)
    for hint in ("searchindex demo", "--model tiny-shapes", "--pretrained FILE.safetensors", "HF_HUB_OFFLINE",
                 "http://127.0.0.1:9/laion/"):
        assert hint in message, (hint, message)
    assert "\n" not in message
    out, errs = capfd.readouterr()
    assert out == "" and errs == "", (out, errs)
    assert not (tmp_path / "idx").exists()
    print(f"offline failure in {elapsed:.2f} s")  # the figure, not a threshold


def test_pickled_checkpoint_needs_torch(tmp_path: Path) -> None:
    ckpt = tmp_path / "w.bin"
    ckpt.write_bytes(b"not really a pickle")
    out = _no_torch(f"""
        from searchindex.errors import MissingExtraError
        from searchindex.models.backends import load_encoder
        from searchindex.models.spec import resolve_model
        try:
            load_encoder(resolve_model("ViT-B-32", {str(ckpt)!r}), "cpu")
        except MissingExtraError as exc:
            print(exc)
    """, tmp_path)
    assert "[torch]" in out and "safetensors" in out, out



@pytest.mark.parametrize(("changed", "rebuilt"), [("onnxruntime", True), ("onnx", True), ("torch", False),
                                                  ("open_clip_torch", False)])
def test_a_tower_built_without_torch_depends_on_onnx_versions_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                   changed: str, rebuilt: bool) -> None:
    from searchindex.models import int8 as int8_tower
    from searchindex.models.int8 import PreparedEncoder

    monkeypatch.setenv("SEARCHINDEX_CACHE", str(tmp_path))
    spec = resolve_model("tiny-shapes")
    first = load_encoder(spec, "cpu", "int8")
    assert isinstance(first, PreparedEncoder) and first.precision == "int8"
    assert int8_tower.load_int8_tower(spec) is not None
    real = int8_tower.package_version
    monkeypatch.setattr(int8_tower, "package_version", lambda dist: "99.0" if dist == changed else real(dist))
    assert (int8_tower.load_int8_tower(spec) is None) == rebuilt


def test_a_torchless_int8_tower_that_drifts_falls_back_to_the_fp32_graph(shapes: Shapes, tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import Image

    from searchindex.models import encoders

    monkeypatch.setenv("SEARCHINDEX_CACHE", str(tmp_path))
    monkeypatch.setattr(encoders, "INT8_MIN_COSINE", 1.5)  # no real tower drifts this much: the bar is raised
    spec = resolve_model("tiny-shapes")
    fallback = load_encoder(spec, "cpu", "auto")
    assert fallback.precision == "fp32"
    images = [Image.open(p).convert("RGB") for p in list(shapes.labels)[:8]]
    reference = load_encoder(spec, "cpu", "onnx").encode_images(images)  # the fp32 graph, by name
    np.testing.assert_allclose(fallback.encode_images(images), reference, atol=1e-5)
    facts = json.loads(next((tmp_path / "onnx").glob("*-image-int8.json")).read_text())
    assert facts["accepted"] is False and facts["source"] == "shipped"
