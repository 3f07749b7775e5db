"""The torch-free text path: our CLIP tokenizer, the ONNX text tower, the persistent query cache."""

from __future__ import annotations

import os
import random
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import open_clip
import pytest

from searchindex import Index
from searchindex.models import onnx as onnxmodels
from searchindex.models.backends import load_encoder
from searchindex.models.spec import resolve_model
from searchindex.models.tokenizer import ClipTokenizer
from searchindex.store import querycache
from searchindex.store.querycache import CACHE_FILE, QueryCache

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "searchindex" / "models" / "tiny-shapes"

onnx_extra = pytest.mark.skipif(not onnxmodels.onnx_available(export=True),
                                reason="needs the onnx extra (onnxruntime, onnx)")

FIXED = [
    "", " ", "a photo of a cat", "Hello, World!!!", "it's a dog's life, isn't it? they'll've", "naïve café résumé",
    "日本語のテキスト", "emoji 🐱🚗 test", "&amp; &lt;b&gt; &amp;amp; html", "x" * 500, " ".join(["word"] * 100),
    "1234567890 3.14 1e-5", "<start_of_text> hi <end_of_text>", "Ünïcödé ÆØÅ ß ﬁ", "tab\tnew\nline  spaces",
    "mojibake Ã© â€™", "a-b_c/d\\e", "''quoted'' \"double\"", "CAPS LOCK", "Ελληνικά Русский العربية हिन्दी",
    "don't WON'T I'M i'd", "\u200b zero\u200bwidth", "a" * 77, "supercalifragilisticexpialidocious",
]


def _random_texts(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    alphabet = "abcdefghijklmnopqrstuvwxyz ABCXYZ,.!?'\"-_/()éüñ日本🐱0123456789\t"
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 150))) for _ in range(n)]


@pytest.mark.parametrize("name", ["ViT-B-32", f"local-dir:{TINY}"])
def test_tokenizer_matches_open_clip_token_for_token(name: str) -> None:
    reference = open_clip.get_tokenizer(name)
    ours = ClipTokenizer(reference.context_length)
    texts = FIXED + _random_texts(200, seed=5)
    want = reference(texts).numpy()
    got = ours(texts)
    assert got.dtype == np.int64 and got.shape == want.shape
    mismatched = [t for t, a, b in zip(texts, got, want, strict=True) if not np.array_equal(a, b)]
    assert mismatched == []


def test_ascii_texts_that_skip_ftfy_tokenize_as_open_clip_does() -> None:
    """Plain ASCII queries skip ftfy (its import costs a cold search a tenth of a second): over
    every printable ASCII character, HTML entities, control characters and line ends, the
    tokens stay open_clip's."""
    rng = random.Random(11)
    alphabet = [chr(c) for c in range(32, 127)] + ["\t", "\n", "\r", "\x07", "\x00", "\x1b", "\x7f"]
    pieces = ["&amp;", "&lt;", "&#39;", "&amp;amp;lt;", "<b>", "\r\n", "it's", " a photo of ", "Dog", "  "]
    texts = ["".join(rng.choice(alphabet if rng.random() < 0.7 else pieces) for _ in range(rng.randint(0, 40)))
             for _ in range(3000)]
    want = open_clip.get_tokenizer("ViT-B-32")(texts).numpy()
    got = ClipTokenizer(77)(texts)
    assert [t for t, a, b in zip(texts, got, want, strict=True) if not np.array_equal(a, b)] == []


def test_tokenizer_tables_are_cached_and_a_damaged_cache_is_rebuilt(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEARCHINDEX_CACHE", str(tmp_path))
    texts = FIXED + _random_texts(50, seed=6)
    want = open_clip.get_tokenizer("ViT-B-32")(texts).numpy()
    assert np.array_equal(ClipTokenizer(77)(texts), want)  # builds the tables and caches them
    (cached,) = (tmp_path / "tokenizer").glob("bpe-*.marshal")
    assert np.array_equal(ClipTokenizer(77)(texts), want)  # from the cache
    cached.write_bytes(b"not marshal data")
    assert np.array_equal(ClipTokenizer(77)(texts), want)
    assert cached.read_bytes() != b"not marshal data"


def test_tokenizer_cuts_long_texts_with_end_token() -> None:
    tok = ClipTokenizer(8)
    row = tok("one two three four five six seven eight nine")[0]
    assert row[0] == tok.sot_id and row[-1] == tok.eot_id and 0 not in row


@onnx_extra
def test_onnx_text_tower_matches_torch() -> None:
    encoder = load_encoder(resolve_model("tiny-shapes"), "cpu", "fp32")  # the torch model (int8 may be torch-free)
    assert onnxmodels.export_text_tower(encoder) is not None
    onnx_text = onnxmodels.load_text_encoder(encoder.spec)
    assert onnx_text is not None and onnx_text.dim == encoder.dim
    texts = FIXED + _random_texts(30, seed=9)
    first = onnx_text.encode_texts(texts)  # the quick-to-make session (weights as stored)
    cosine = np.sum(first * encoder.encode_texts(texts), axis=1)
    assert cosine.min() >= 0.999
    # Later calls run on repacked weights: the same vectors.
    np.testing.assert_allclose(onnx_text.encode_texts(texts), first, atol=1e-5)
    np.testing.assert_allclose(onnx_text.encode_texts(texts[:3]), first[:3], atol=1e-5)


def _padded_reference(encoder: object, texts: list[str]) -> np.ndarray:
    """open_clip's own text tower on the full, padded context."""
    import torch

    with torch.inference_mode():
        return encoder.torch_model.encode_text(encoder.tokenizer(texts), normalize=True).numpy()  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", ["tiny-shapes", pytest.param("ViT-B-32", marks=pytest.mark.slow)])
def test_text_tower_on_the_real_token_count_equals_the_padded_one(name: str) -> None:
    # Causal mask + end-of-text pooling: padding after the end token cannot change the vector.
    encoder = load_encoder(resolve_model(name, None if name == "tiny-shapes" else "none"), "cpu", "fp32")
    assert onnxmodels.supports_short_text(encoder.torch_model)
    texts = FIXED + _random_texts(300, seed=11)
    want = _padded_reference(encoder, texts)
    tokens = encoder.tokenizer(texts)
    lengths = set()
    import torch

    got = []
    with torch.inference_mode():
        for i in range(len(texts)):  # each text on its own length
            row = onnxmodels.trim_tokens(tokens[i:i + 1])
            lengths.add(row.shape[1])
            got.append(onnxmodels.short_text_forward(encoder.torch_model, row).numpy())
    assert len(lengths) > 10 and min(lengths) == 2
    assert np.sum(np.concatenate(got) * want, axis=1).min() >= 0.9999
    # The encoder's own text path (batched, cut to the batch's longest text; none of these texts
    # encoded by it before) agrees too.
    assert np.sum(encoder.encode_texts(texts) * want, axis=1).min() >= 0.9999


def test_trimming_keeps_texts_with_exclamation_marks_whole() -> None:
    # Token id 0 is "!" as well as the padding: a row's length is found by its end token.
    tok = ClipTokenizer(77)
    tokens = tok(["wow!!! great", "a"])
    trimmed = onnxmodels.trim_tokens(tokens)
    assert trimmed.shape[1] == int(np.argmax(tokens[0])) + 1
    assert trimmed[0, -1] == tok.eot_id and tok.eot_id in trimmed[1]


@onnx_extra
def test_onnx_text_tower_takes_any_length(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEARCHINDEX_CACHE", str(tmp_path))
    encoder = load_encoder(resolve_model("tiny-shapes"), "cpu", "fp32")
    assert onnxmodels.export_text_tower(encoder) is not None
    onnx_text = onnxmodels.load_text_encoder(encoder.spec)
    assert onnx_text is not None and onnx_text.trims
    texts = FIXED + _random_texts(200, seed=12)
    want = _padded_reference(encoder, texts)
    one_by_one = np.concatenate([onnx_text.encode_texts([t]) for t in texts])
    assert np.sum(one_by_one * want, axis=1).min() >= 0.9999
    assert np.sum(onnx_text.encode_texts(texts) * want, axis=1).min() >= 0.9999


@onnx_extra
def test_exporting_leaves_the_encoder_as_it_was(shapes: object, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    # tiny-shapes' image tower has BatchNorm: a model left in training mode by the
    # exporter would encode every later image with batch statistics instead.
    from PIL import Image

    encoder = load_encoder(resolve_model("tiny-shapes"), "cpu", "fp32")
    images = [Image.open(p).convert("RGB") for p in sorted(shapes.folder.glob("*.png"))[:6]]  # type: ignore[attr-defined]
    before = encoder.encode_images(images)
    monkeypatch.setenv("SEARCHINDEX_CACHE", str(tmp_path))  # an empty cache: a fresh export
    assert onnxmodels.export_text_tower(encoder) is not None
    assert not encoder.torch_model.training
    np.testing.assert_allclose(encoder.encode_images(images), before, atol=1e-5)
    np.testing.assert_allclose(encoder.encode_images(images[:1]), before[:1], atol=1e-5)


def _search_in_new_process(index: Path, text: str, backend: str = "auto") -> tuple[list[str], list[str]]:
    """Paths of a search in a fresh interpreter, and which heavy modules it imported."""
    code = (
        "import sys\n"
        "from searchindex import Index\n"
        "with Index.open(sys.argv[1], device='cpu') as idx:\n"
        "    print('\\n'.join(r.path for r in idx.search(sys.argv[2], k=5)))\n"
        "print('MODULES', *[m for m in ('torch', 'open_clip', 'onnxruntime', 'sqlalchemy') if m in sys.modules])\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SEARCHINDEX_TEXT_BACKEND": backend}
    out = subprocess.run([sys.executable, "-c", code, str(index), text], capture_output=True, text=True,
                         check=True, env=env, cwd=ROOT).stdout.splitlines()
    return out[:-1], out[-1].split()[1:]


@onnx_extra
def test_cold_search_needs_no_torch_and_repeats_need_no_model(shapes_index: Path, tmp_path: Path) -> None:
    index = tmp_path / "copy.idx"
    shutil.copytree(shapes_index, index)
    (index / CACHE_FILE).unlink(missing_ok=True)  # searches by other tests of the shared index cached texts
    with Index.open(index, device="cpu") as idx:
        want = [r.path for r in idx.search("a photo of a green triangle", k=5)]
        # The index was built in this process: its tower is exported, and this query cached in the folder.
        assert (index / CACHE_FILE).is_file()
    paths, modules = _search_in_new_process(index, "a photo of a blue star")
    assert modules == ["onnxruntime"] and len(paths) == 5
    with Index.open(index, device="cpu") as idx:
        assert paths == [r.path for r in idx.search("a photo of a blue star", k=5)]
    again, modules = _search_in_new_process(index, "a photo of a green triangle")
    assert modules == [] and again == want


def test_search_falls_back_to_torch_without_onnxruntime(shapes_index: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    index = tmp_path / "copy.idx"
    shutil.copytree(shapes_index, index)
    (index / CACHE_FILE).unlink(missing_ok=True)  # searches by other tests of the shared index cached texts
    monkeypatch.setattr(onnxmodels, "onnx_available", lambda export=False: False)  # as without the extra
    with Index.open(index, device="cpu") as idx:
        hits = idx.search("a photo of a red circle", k=10)
        assert idx.models.loaded == "torch"
        direct = idx.search_vector(idx.encoder.encode_texts(["a photo of a red circle"])[0], k=10)
    assert len(hits) == 10 and [r.path for r in hits] == [r.path for r in direct]


def test_query_cache_is_bounded_and_keyed_by_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(querycache, "MAX_ENTRIES", 5)
    cache = QueryCache(tmp_path, "model-a", 4)
    def unit(i: int) -> np.ndarray:  # the cache keeps only what can be a text embedding: unit vectors
        return np.array([np.cos(i), np.sin(i), 0, 0], dtype=np.float32)

    for i in range(12):
        cache.put_many({f"q{i}": unit(i)})
    cache.close()
    with sqlite3.connect(tmp_path / CACHE_FILE) as db:
        kept = {r[0] for r in db.execute("SELECT text FROM queries")}
    assert kept == {f"q{i}" for i in range(7, 12)}
    fresh = QueryCache(tmp_path, "model-a", 4)
    assert set(fresh.get_many(["q3", "q11"])) == {"q11"}
    assert np.array_equal(fresh.get_many(["q11"])["q11"], unit(11))
    assert QueryCache(tmp_path, "model-b", 4).get_many(["q11"]) == {}


def test_unusable_query_cache_never_fails_a_search(shapes_index: Path, tmp_path: Path) -> None:
    index = tmp_path / "copy.idx"
    shutil.copytree(shapes_index, index)
    (index / CACHE_FILE).unlink(missing_ok=True)
    (index / CACHE_FILE).mkdir()  # neither readable nor writable as a database, like a read-only folder
    with Index.open(index, device="cpu") as idx:
        assert len(idx.search("a photo of a red circle", k=3)) == 3
        assert len(idx.search("a photo of a red circle", k=3)) == 3  # from the in-memory layer
    shutil.rmtree(index / CACHE_FILE)
    (index / CACHE_FILE).write_bytes(b"not a database" * 100)
    with Index.open(index, device="cpu") as idx:
        assert len(idx.search("a photo of a red circle", k=3)) == 3


@onnx_extra
def test_onnx_image_precision_matches_fp32(shapes: object) -> None:
    from PIL import Image

    spec = resolve_model("tiny-shapes")
    reference, fast = load_encoder(spec, "cpu", "fp32"), load_encoder(spec, "cpu", "onnx")
    files = sorted(shapes.folder.glob("*.png"))[:48]  # type: ignore[attr-defined]
    images = [Image.open(f).convert("RGB") for f in files]
    cosine = np.sum(fast.encode_images(images) * reference.encode_images(images), axis=1)
    assert fast.precision == "onnx" and cosine.min() >= 0.999


def test_onnx_precision_without_onnx_runtime_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    from searchindex import ModelError

    monkeypatch.setattr(onnxmodels, "onnx_available", lambda export=False: False)
    with pytest.raises(ModelError, match=r"ONNX Runtime: pip install onnxruntime onnx"):
        load_encoder(resolve_model("tiny-shapes"), "cpu", "onnx")

