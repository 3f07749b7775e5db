"""FAISS index type: the size policy, overrides, recorded choice, IVF search, automatic atomic rebuild."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import searchindex.store.vector_store as vector_store
import searchindex.store.vectors.build as index_build
import searchindex.store.vectors.kinds as index_types
from searchindex import Filters, Index, IndexTypeError
from searchindex.cli import cli
from searchindex.store.vectors.file import latest_vector_file
from searchindex.store.vectors.kinds import (
    DEFAULT_FACTORY,
    FLAT_MAX,
    canonical_factory,
    choose_factory,
    estimate_bytes,
    ivf_nlist,
    planned_factory,
)
from tests.support.vectors import write_vector_index

from .conftest import Shapes

ROOT = Path(__file__).resolve().parent.parent
COUNT = 4000
DIM = 32


# -- the policy --------------------------------------------------------------


def test_policy_is_exact_below_the_threshold_and_ivf_above() -> None:
    assert choose_factory(0, 512) == DEFAULT_FACTORY
    assert choose_factory(FLAT_MAX - 1, 512) == DEFAULT_FACTORY
    assert choose_factory(FLAT_MAX, 512) == f"IVF{ivf_nlist(FLAT_MAX)},SQfp16"
    assert choose_factory(1_000_000, 512) == "IVF4096,SQfp16"
    # fp16 codes of 768-d vectors (1,536 B) do not fit the default 1.2 KB budget; 8-bit ones do
    assert choose_factory(1_000_000, 768) == "IVF4096,SQ8"
    assert choose_factory(1_000_000, 512, memory_budget_bytes=600 * 1_000_000) == "IVF4096,SQ8"
    assert estimate_bytes(1_000_000, 512, "IVF4096,SQfp16") / 1_000_000 <= 1200


def test_nlist_is_a_power_of_two_near_four_root_n_with_full_lists() -> None:
    assert ivf_nlist(1_000_000) == 4096
    assert ivf_nlist(100_000) == 1024
    for n in (200, 3000, 50_000, 2_000_000):
        nlist = ivf_nlist(n)
        assert nlist & (nlist - 1) == 0 and n / nlist >= 39


def test_rebuild_plan_has_hysteresis() -> None:
    ivf = choose_factory(FLAT_MAX, 512)
    assert planned_factory(DEFAULT_FACTORY, 0, FLAT_MAX - 1, 512) is None
    assert planned_factory(DEFAULT_FACTORY, 0, FLAT_MAX, 512) == ivf
    # shrinking below the threshold keeps IVF until half of it
    assert planned_factory(ivf, FLAT_MAX, int(FLAT_MAX * 0.6), 512) is None
    assert planned_factory(ivf, FLAT_MAX, int(FLAT_MAX * 0.4), 512) == DEFAULT_FACTORY
    # growing: a new list count only after 4x more vectors
    assert planned_factory(ivf, FLAT_MAX, 3 * FLAT_MAX, 512) is None
    assert planned_factory(ivf, FLAT_MAX, 4 * FLAT_MAX, 512) == choose_factory(4 * FLAT_MAX, 512)


def test_explicit_type_waits_for_enough_training_vectors() -> None:
    assert planned_factory(DEFAULT_FACTORY, 0, 100, 32, "IVF256,SQ8") is None
    assert planned_factory(DEFAULT_FACTORY, 0, 300, 32, "IVF256,SQ8") == "IVF256,SQ8"
    assert planned_factory("IVF256,SQ8", 300, 10**6, 32, "IVF256,SQ8") is None
    assert planned_factory("IVF256,SQ8", 300, 10, 32, "auto") == DEFAULT_FACTORY


def test_factory_strings_are_validated() -> None:
    assert canonical_factory("Flat") == "IDMap2,Flat"
    assert canonical_factory(" IVF64,SQ8 ", 32) == "IVF64,SQ8"
    with pytest.raises(IndexTypeError, match="cannot build"):
        canonical_factory("IVFx,Nonsense")
    with pytest.raises(IndexTypeError, match="32-d"):
        canonical_factory("IVF16,PQ7", 32)
    with pytest.raises(IndexTypeError, match="remove"):
        canonical_factory("HNSW32,Flat")
    # Nested IVF quantizers keep every list count, outer first (formerly recorded as IVF1(...)).
    assert canonical_factory("IVF2(IVF3,Flat),Flat", 32) == "IVF2(IVF3,Flat),Flat"
    assert canonical_factory("IVF12,Flat", 32) == "IVF12,Flat"
    # Transforms that change inner products store vectors nothing can check: refused up front
    # (formerly accepted, then every open and check said DAMAGED).
    for spec in ("PCA32,Flat", "PCAR16,IVF4,Flat", "L2norm,Flat", "ITQ,Flat", "IDMap2,PCA32,Flat"):
        with pytest.raises(IndexTypeError, match="transform"):
            canonical_factory(spec, 64)
    assert canonical_factory("OPQ16,IVF4,PQ16", 64) == "OPQ16_64,IVF4,PQ16x8"  # a rotation: fine


# -- IVF search against exact search -------------------------------------------


@pytest.fixture(scope="module")
def ivf_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The same 4,000 synthetic vectors as an exact index and as an auto-chosen IVF index."""
    flat = tmp_path_factory.mktemp("flat") / "idx"
    write_vector_index(flat, COUNT, dim=DIM, seed=5, folders=100)
    ivf = flat.parent / "ivf"
    shutil.copytree(flat, ivf)
    with Index.open(flat) as index:
        assert index.optimize() is None  # 4,000 < FLAT_MAX: stays exact
    mp = pytest.MonkeyPatch()
    mp.setattr(index_types, "FLAT_MAX", 2000)
    try:
        with Index.open(ivf) as index:
            report = index.optimize()
    finally:
        mp.undo()
    assert report is not None and report.factory == f"IVF{ivf_nlist(COUNT)},SQfp16"
    assert report.nprobe is not None and report.recall is not None and report.recall >= 0.95
    return flat, ivf


def _queries(path: Path, n: int = 40) -> np.ndarray:
    with Index.open(path) as index:
        ids = np.random.default_rng(1).choice(np.arange(1, COUNT + 1), n, replace=False)
        stored = index.catalog.read.embeddings([int(i) for i in ids], DIM)
    rng = np.random.default_rng(2)
    q = np.stack([stored[int(i)] for i in ids]) + 0.05 * rng.standard_normal((n, DIM)).astype(np.float32)
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def _recall(flat: Path, ivf: Path, k: int = 10, **options: object) -> float:
    hits = total = 0
    with Index.open(flat) as a, Index.open(ivf) as b:
        for q in _queries(flat):
            want = {r.image_id for r in a.search_vector(q, k, **options)}
            got = [r.image_id for r in b.search_vector(q, k, **options)]
            assert len(got) == len(want)
            hits += len(want & set(got))
            total += len(want)
    return hits / total


def test_ivf_search_matches_exact_search(ivf_pair: tuple[Path, Path]) -> None:
    flat, ivf = ivf_pair
    assert _recall(flat, ivf) >= 0.93
    with Index.open(ivf) as index:
        assert index.vectors.current().factory.startswith("IVF")


def test_ivf_filters_return_only_matching_images(ivf_pair: tuple[Path, Path]) -> None:
    flat, ivf = ivf_pair
    narrow = Filters(paths=("/synthetic/f07/*",))  # 40 ids: scored directly from the catalog, exact
    wide = Filters(min_width=2048)  # about half of the ids: IVF scan with an id selector
    q = _queries(flat, 1)[0]
    with Index.open(flat) as a, Index.open(ivf) as b:
        exact = [(r.image_id, round(r.score, 5)) for r in a.search_vector(q, 10, filters=narrow)]
        assert [(r.image_id, round(r.score, 5)) for r in b.search_vector(q, 10, filters=narrow)] == exact
        got = b.search_vector(q, 50, filters=wide)
        assert len(got) == 50 and all(r.width >= 2048 for r in got)
    assert _recall(flat, ivf, filters=wide) >= 0.93
    # a selective filter above the direct-scoring limit probes more lists, not fewer results
    assert _recall(flat, ivf, filters=Filters(paths=tuple(f"/synthetic/f{i:02d}/*" for i in range(10)))) >= 0.93


def test_ivf_min_score_and_long_result_lists(ivf_pair: tuple[Path, Path]) -> None:
    flat, ivf = ivf_pair
    q = _queries(flat, 1)[0]
    with Index.open(flat) as a, Index.open(ivf) as b:
        want = {r.image_id for r in a.search_vector(q, None, min_score=0.5)}
        got = {r.image_id for r in b.search_vector(q, None, min_score=0.5)}
        assert want and len(got & want) >= 0.9 * len(want)
        assert len(b.search_vector(q, 1000)) == 1000  # k far above one list's size still fills up


def test_ivf_removal_and_catch_up(ivf_pair: tuple[Path, Path], tmp_path: Path,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(index_types, "FLAT_MAX", 2000)
    path = tmp_path / "ivf"
    shutil.copytree(ivf_pair[1], path)
    with Index.open(path) as index:
        q = _queries(path, 1)[0]
        top = [r for r in index.search_vector(q, 5)]
        index.catalog.commit_batch(deleted=[r.path for r in top[:3]])
        vecs = index.vectors.current()
        assert vecs.factory.startswith("IVF") and vecs.ntotal == COUNT - 3
        assert not vecs.contains(np.array([r.image_id for r in top[:3]])).any()
        after = [r.image_id for r in index.search_vector(q, 2)]
        assert after == [r.image_id for r in top[3:5]]
        assert index.optimize() is None  # saves the caught-up IVF file; 3,997 vectors: no new type
    with Index.open(path) as index:
        assert index.vectors.current().ntotal == COUNT - 3
        assert index.info().faiss_factory.startswith("IVF")


# -- recorded choice, override, info ----------------------------------------------


def test_override_is_recorded_and_reported(ivf_pair: tuple[Path, Path], tmp_path: Path) -> None:
    path = tmp_path / "idx"
    shutil.copytree(ivf_pair[0], path)
    with Index.open(path) as index:
        with pytest.raises(IndexTypeError):
            index.optimize("IVF64,Bogus")
        report = index.optimize("IVF32,SQ8")
        assert report is not None and report.factory == "IVF32,SQ8"
        info = index.info()
        assert (info.index_type, info.faiss_factory, info.nprobe, info.built_at) == (
            "IVF32,SQ8", "IVF32,SQ8", report.nprobe, COUNT)
        assert info.tuned_recall is not None and info.tuned_recall >= 0.95
        # SQ8 codes: one byte a dimension plus an 8-byte id, and the centroids
        assert info.faiss_memory_bytes == info.vector_bytes == latest_vector_file(path)[0].stat().st_size
        assert DIM + 8 <= info.bytes_per_image <= DIM + 8 + 32 * DIM * 4 / COUNT + 16
        assert index.optimize() is None  # nothing more to do
        report = index.optimize("auto")  # 4,000 < FLAT_MAX: back to exact
        assert report is not None and report.factory == DEFAULT_FACTORY
        assert index.info().index_type == "auto" and index.info().nprobe is None


def test_cli_index_type_and_info(runner: CliRunner, small_folder: Path, tmp_path: Path) -> None:
    path = tmp_path / "idx"
    bad = runner.invoke(cli, ["index", str(small_folder), "--index", str(path), "--model", "tiny-shapes",
                              "--device", "cpu", "--index-type", "IVF8,Nonsense"])
    assert bad.exit_code == 2 and "cannot build index type 'IVF8,Nonsense'" in bad.output
    assert not path.exists()
    ok = runner.invoke(cli, ["index", str(small_folder), "--index", str(path), "--model", "tiny-shapes",
                             "--device", "cpu", "--index-type", "IVF1,SQfp16"])
    assert ok.exit_code == 0, ok.output
    data = json.loads(runner.invoke(cli, ["info", "--index", str(path), "--json"]).output)
    assert (data["index_type"], data["faiss_factory"], data["built_at"]) == ("IVF1,SQfp16", "IVF1,SQfp16", 40)
    assert data["nprobe"] == 1 and data["faiss_memory_bytes"] == data["vector_bytes"] > 0
    assert data["bytes_per_image"] == pytest.approx(data["faiss_memory_bytes"] / 40)
    text = runner.invoke(cli, ["info", "--index", str(path)]).output
    assert "FAISS IVF1,SQfp16 (index type: IVF1,SQfp16)" in text and "nprobe 1" in text and "B/image" in text
    hits = runner.invoke(cli, ["search", "a red circle", "--index", str(path), "-k", "3"])
    assert hits.exit_code == 0 and len(hits.output.splitlines()) == 1 + 3  # header + 3 results
    back = runner.invoke(cli, ["index", str(small_folder), "--index", str(path), "--index-type", "auto"])
    assert back.exit_code == 0, back.output
    assert json.loads(runner.invoke(cli, ["info", "--index", str(path), "--json"]).output)["faiss_factory"] == \
        DEFAULT_FACTORY


@pytest.fixture()
def runner() -> CliRunner:
    return CliRunner()


# -- automatic, atomic rebuild -------------------------------------------------------


def _copy(shapes: Shapes, folder: Path, start: int, stop: int) -> None:
    folder.mkdir(exist_ok=True)
    for src in sorted(shapes.folder.glob("*.png"))[start:stop]:
        shutil.copy2(src, folder / src.name)


def _exact_scores(index: Index, text: str) -> dict[int, float]:
    """Every image's exact score for ``text``, from the catalog's embeddings."""
    q = index.embed(text)
    ids = [int(i) for i in index.vectors.current().ids()]
    return {i: float(v @ q) for i, v in index.catalog.read.embeddings(ids, index.dim).items()}


def _top_hits(index: Index, text: str, k: int) -> int:
    """How many of the top ``k`` results score (exactly) at least the exact k-th best score (ties count)."""
    exact = _exact_scores(index, text)
    kth = sorted(exact.values(), reverse=True)[k - 1]
    return sum(exact[r.image_id] >= kth - 1e-6 for r in index.search(text, k=k))


def test_crossing_the_threshold_rebuilds(shapes: Shapes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(index_types, "FLAT_MAX", 150)
    photos = tmp_path / "photos"
    _copy(shapes, photos, 0, 100)
    with Index.create(tmp_path / "idx", model="tiny-shapes", device="cpu") as index:
        index.add_folder(photos)
        assert index.info().faiss_factory == DEFAULT_FACTORY
        _copy(shapes, photos, 100, 200)
        index.add_folder(photos)
        info = index.info()
        assert info.faiss_factory == f"IVF{ivf_nlist(200)},SQfp16" and info.built_at == 200
        assert len(list((tmp_path / "idx").glob("vectors-*.faiss"))) == 1
    with Index.open(tmp_path / "idx") as index:
        assert _top_hits(index, "a red circle", 10) >= 9
        # 120 images: under the threshold but above half of it: no flapping back
        for f in sorted(photos.glob("*.png"))[:80]:
            f.unlink()
        index.add_folder(photos)
        assert index.info().faiss_factory.startswith("IVF")
        for f in sorted(photos.glob("*.png"))[:60]:
            f.unlink()
        index.add_folder(photos)
        assert index.info().faiss_factory == DEFAULT_FACTORY and index.count() == 60
        assert _top_hits(index, "a red circle", 10) == 10


@pytest.fixture()
def grown(tmp_path: Path) -> Path:
    """A synthetic exact index that the policy (FLAT_MAX 2000) wants rebuilt as IVF."""
    path = tmp_path / "idx"
    write_vector_index(path, COUNT, dim=DIM, seed=6, folders=100)
    with Index.open(path) as index:
        assert index.optimize() is None
    return path


def _searchable(path: Path) -> list[int]:
    with Index.open(path) as index:
        q = index.catalog.read.embeddings([7], DIM)[7]
        hits = index.search_vector(q, 5)
        assert hits[0].image_id == 7
        return [r.image_id for r in hits]


def test_failed_rebuild_keeps_the_old_index(grown: Path, monkeypatch: pytest.MonkeyPatch,
                                            caplog: pytest.LogCaptureFixture) -> None:
    before = _searchable(grown)
    monkeypatch.setattr(index_types, "FLAT_MAX", 2000)

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("Error in faiss: out of something")

    monkeypatch.setattr(vector_store, "build_index", broken)
    with Index.open(grown) as index:
        assert index.optimize() is None
        assert index.info().faiss_factory == DEFAULT_FACTORY
    assert "could not rebuild the vector index" in caplog.text
    assert _searchable(grown) == before

    class Killed(BaseException):
        pass

    def interrupted(*args: object, **kwargs: object) -> None:
        raise Killed

    monkeypatch.setattr(vector_store, "build_index", interrupted)
    with Index.open(grown) as index, pytest.raises(Killed):
        index.optimize()
    assert _searchable(grown) == before
    monkeypatch.undo()
    monkeypatch.setattr(index_types, "FLAT_MAX", 2000)
    with Index.open(grown) as index:
        assert index.optimize() is not None and index.info().faiss_factory.startswith("IVF")
    assert _searchable(grown)[0] == 7


_KILLED_CHILD = """
import pathlib, sys, time
import searchindex.store.vectors.kinds as T
import searchindex.store.vectors.build as V
T.FLAT_MAX = 2000
real = V.tune_nprobe
def slow(*args, **kwargs):
    pathlib.Path(sys.argv[2]).write_text("tuning")
    time.sleep(120)
    return real(*args, **kwargs)
V.tune_nprobe = slow
from searchindex import Index
with Index.open(sys.argv[1]) as index:
    index.optimize()
"""


def test_kill_during_rebuild_leaves_a_searchable_index(grown: Path, tmp_path: Path) -> None:
    before = _searchable(grown)
    marker = tmp_path / "marker"
    child = subprocess.Popen([sys.executable, "-c", _KILLED_CHILD, str(grown), str(marker)], cwd=ROOT,
                             env={**os.environ, "PYTHONPATH": str(ROOT)}, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert child.poll() is None, child.stderr.read().decode() if child.stderr else ""
            assert time.monotonic() < deadline
            time.sleep(0.05)
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait()
    assert _searchable(grown) == before
    with Index.open(grown) as index:
        assert index.info().faiss_factory == DEFAULT_FACTORY
        assert len(list(grown.glob("vectors-*.faiss"))) == 1


def test_bench_search_measures_the_policys_choice() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench_search.py"), "--n", "3000", "--dim", "32", "--queries", "50",
         "--flat-sizes", "1000", "--rounds", "1", "--latency-queries", "5", "--json"],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, check=True)
    result = json.loads(out.stdout)
    auto = result["auto"]
    assert auto["factory"] == choose_factory(3000, 32) == DEFAULT_FACTORY
    assert auto["recall"] == 1.0 and auto["nprobe"] is None  # exact search finds the exact neighbours
    assert auto["bytes_per_vector"] > 32 * 4 and set(result["flat_p50_by_size"]) == {"1000"}


def test_ivf_answers_are_filled_when_the_nearest_lists_are_small() -> None:
    # 15 crowded clusters and one with 3 vectors: a query there probes (nprobe 1) a list
    # of about 3 vectors, fewer than the 20 asked for.
    rng = np.random.default_rng(7)
    centres = rng.normal(size=(16, 32)).astype(np.float32)
    sizes = [200] * 15 + [3]
    x = np.concatenate([c + 0.05 * rng.normal(size=(n, 32)) for c, n in zip(centres, sizes, strict=True)])
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    ids = np.arange(len(x), dtype=np.int64) + 100
    index, _ = index_build.build_index("IVF16,Flat", 32, [(ids, x)], (ids, x), tune_queries=0)
    index.nprobe = 1
    query = x[-1:]
    nearest = set(np.argsort(-(x @ query[0]))[:3] + 100)  # the small cluster itself
    scores, found = index.search(query, 20)
    # Filled by probing more lists, not padded with -1; real scores, best first.
    assert found.shape == (1, 20) and (found >= 0).all() and len(set(found[0])) == 20
    assert nearest <= set(found[0])
    assert np.allclose(scores[0], x[found[0] - 100] @ query[0], atol=1e-5)
    assert (np.diff(scores[0]) <= 1e-6).all()
    _, top_ids = index.top_k(query[0], 20)
    assert len(top_ids) == 20 and nearest <= set(top_ids)
    allowed = np.concatenate([ids[-3:], ids[:50]])  # a filter: 3 in the small list, 50 elsewhere
    _, filtered = index.search(query, 10, allowed=allowed)
    assert (filtered >= 0).all() and set(filtered[0]) <= set(allowed)


@pytest.mark.slow  # OPQ training: about a minute on a quiet 2-core machine, several under load
def test_opq_rotation_builds_reopens_and_searches(ivf_pair: tuple[Path, Path], tmp_path: Path,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    """An OPQ rotation is accepted (it keeps inner products): its index is built, saved, trusted
    when reopened (no rebuild, no "damaged"), and finds what the exact index finds."""
    path = tmp_path / "idx"
    shutil.copytree(ivf_pair[0], path)
    with Index.open(path) as index:
        report = index.optimize("OPQ16,IVF32,PQ16")
        assert report is not None and report.factory == "OPQ16_32,IVF32,PQ16x8"
    saved = latest_vector_file(path)
    assert saved is not None
    caplog.set_level("WARNING")
    with Index.open(path) as index:
        info = index.info()
        assert info.faiss_factory == "OPQ16_32,IVF32,PQ16x8" and index.count() == COUNT
        assert index.search_vector(_queries(path, 1)[0], 5)  # answers from the loaded file
    assert latest_vector_file(path) == saved  # trusted as it was: not rebuilt
    assert not [r for r in caplog.records if "damaged" in r.getMessage() or "rebuild" in r.getMessage()]
    assert _recall(ivf_pair[0], path) >= 0.75  # 16-byte codes of 32-d vectors: a real ranking
