"""IVF indexes built from shards (trained once, filled in parallel, merged) equal one-process builds."""

from __future__ import annotations

import numpy as np
import pytest

from searchindex.errors import IndexTypeError
from searchindex.store.vectors.build import add_shard, build_index, merge_shards, serialize_trained
from searchindex.store.vectors.index import VectorIndex


def _data(n: int = 6000, dim: int = 32, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return np.arange(10, 10 + n, dtype=np.int64), x


def _chunks(ids: np.ndarray, x: np.ndarray, size: int = 700):
    for start in range(0, len(ids), size):
        yield ids[start:start + size], x[start:start + size]


@pytest.mark.parametrize("factory", ["IVF32,SQfp16", "IVF32,Flat"])
def test_sharded_build_finds_what_the_single_build_finds(factory: str) -> None:
    ids, x = _data()
    sample = (ids[:2000], x[:2000])
    one, r1 = build_index(factory, x.shape[1], _chunks(ids, x), sample, tune_queries=0)
    four, r4 = build_index(factory, x.shape[1], _chunks(ids, x), sample, tune_queries=0, shards=4)
    assert one.ntotal == four.ntotal == len(ids) and r4.vectors == len(ids)
    np.testing.assert_array_equal(one.ids(), four.ids())
    one.nprobe = four.nprobe = 4
    q = x[:50] + 0.01
    s1, i1 = one.search(q, 10)
    s4, i4 = four.search(q, 10)
    # Same trained quantizer and codes, only the order inside each list differs: same scores, same sets.
    np.testing.assert_allclose(s1, s4, rtol=1e-6, atol=1e-6)
    assert all(set(a) == set(b) for a, b in zip(i1, i4, strict=True))


def test_shards_from_elsewhere_merge_by_bytes() -> None:
    ids, x = _data(3000)
    trained = serialize_trained("IVF16,SQ8", x.shape[1], x[:1000])
    parts = [add_shard(trained, ids[i::3], x[i::3]) for i in range(3)]  # e.g. three Ray tasks
    merged = VectorIndex(merge_shards(parts))
    assert merged.ntotal == 3000
    np.testing.assert_array_equal(merged.ids(), ids)
    merged.nprobe = 16  # every list: the merged index answers like exact search on SQ8 codes
    _, found = merged.search(x[:20], 1)
    np.testing.assert_array_equal(found[:, 0], ids[:20])


def test_only_ivf_merges() -> None:
    ids, x = _data(100)
    flat = VectorIndex.empty(x.shape[1])
    with pytest.raises(IndexTypeError, match="only IVF"):
        merge_shards([flat.faiss_index, flat.faiss_index])


def test_index_rebuilds_ivf_from_shards(tmp_path) -> None:
    from searchindex import Index
    from searchindex.store.catalog.records import NewImage

    ids, x = _data(3000, 64)
    with Index.create(tmp_path / "s.idx", model="tiny-shapes", device="cpu") as index:
        rows = [NewImage(f"/p/{i}.png", 1, 1, f"{i:064x}", 8, 8, "PNG", v) for i, v in zip(ids, x, strict=True)]
        for start in range(0, len(rows), 1000):
            index.catalog.commit_batch(rows[start:start + 1000])
        report = index.optimize("IVF16,SQfp16", shards=3)
        assert report is not None and report.factory == "IVF16,SQfp16" and report.vectors == 3000
        generation = index.catalog.read.generation()
    with Index.open(tmp_path / "s.idx") as index:  # the merged index was saved with its generation
        vecs = index.vectors.current()
        assert (vecs.factory, vecs.ntotal, vecs.generation) == ("IVF16,SQfp16", 3000, generation)
        scores, found = vecs.search(x[:5], 1)
        assert found[:, 0].tolist() == sorted(index.catalog.read.ids_by_path([f"/p/{i}.png" for i in ids[:5]])
                                              .values())
