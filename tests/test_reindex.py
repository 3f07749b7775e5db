"""`reindex` re-embeds an index with another model and swaps it in atomically; it resumes."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from searchindex import Index
from searchindex.cli import cli
from searchindex.ingest.indexer import IndexProgress


def _build(folder: Path, idx: Path) -> None:
    with Index.create(idx, model="tiny-shapes", device="cpu") as index:
        index.add_folder(folder)


def _stored(idx: Path) -> dict[str, np.ndarray]:
    with Index.open(idx) as index:
        rows = index.catalog.images.states()
        vecs = index.catalog.images.embeddings([r[0] for r in rows.values()], index.dim)
        return {p: vecs[r[0]] for p, r in rows.items()}


def test_reindex_swaps_in_the_new_model(small_folder: Path, tmp_path: Path) -> None:
    idx = tmp_path / "idx"
    _build(small_folder, idx)
    before = _stored(idx)
    gone = sorted(small_folder.glob("*.png"))[0]
    gone.unlink()

    with Index.open(idx) as index:
        index.tag(["circle", "red"], templates=["a photo of a {}."])
    summary = Index.reindex(idx, "tiny-shapes", "none", device="cpu", batch_size=8)
    assert (summary.indexed, summary.failed, summary.interrupted) == (39, 1, False)
    assert summary.failures[0].path == str(gone)
    assert not (tmp_path / ".idx.reindex").exists()  # the old index is gone, the new one is in place
    with Index.open(idx) as index:
        assert index.spec.pretrained == "none" and index.count() == 39
        assert [f.path for f in index.failures()] == [str(gone)]
        labels = {lab.name: lab for lab in index.catalog.tags.labels()}  # rebuilt with the new text tower
        assert set(labels) == {"circle", "red"} and labels["red"].templates == ("a photo of a {}.",)
        assert np.allclose(labels["red"].classifier, index.encoder.encode_texts(["a photo of a red."])[0], atol=1e-5)
        probe = sorted(small_folder.glob("*.png"))[5]
        assert index.search_image(probe, k=1)[0].path == str(probe)  # vectors made by the new model
    after = _stored(idx)
    assert set(after) == set(before) - {str(gone)}
    assert all(not np.allclose(after[p], before[p]) for p in after)  # every vector was re-embedded


def test_interrupted_reindex_leaves_the_old_index_and_resumes(small_folder: Path, tmp_path: Path) -> None:
    idx = tmp_path / "idx"
    _build(small_folder, idx)
    before = _stored(idx)
    stop = threading.Event()

    def after_first_batch(p: IndexProgress) -> None:
        stop.set()

    first = Index.reindex(idx, "tiny-shapes", "none", device="cpu", batch_size=8, progress=after_first_batch,
                          stop=stop)
    assert first.interrupted and first.indexed == 8
    assert (tmp_path / ".idx.reindex").is_dir()
    with Index.open(idx) as index:  # untouched and searchable
        assert index.spec.pretrained == "builtin"
        assert index.search("a photo of a red circle", k=3)
    assert _stored(idx).keys() == before.keys()

    second = Index.reindex(idx, "tiny-shapes", "none", device="cpu", batch_size=8)
    assert not second.interrupted and second.unchanged == 8 and second.indexed == 32  # nothing redone
    with Index.open(idx) as index:
        assert index.spec.pretrained == "none" and index.count() == 40
    assert not (tmp_path / ".idx.reindex").exists()


def test_reindex_with_another_leftover_starts_over(small_folder: Path, tmp_path: Path) -> None:
    idx = tmp_path / "idx"
    _build(small_folder, idx)
    _build(small_folder, tmp_path / ".idx.reindex")  # a leftover made with a different model than asked for
    summary = Index.reindex(idx, "tiny-shapes", "none", device="cpu")
    assert summary.indexed == 40 and summary.unchanged == 0
    with Index.open(idx) as index:
        assert index.spec.pretrained == "none"


def test_cli_reindex_and_mismatch_hint(small_folder: Path, tmp_path: Path) -> None:
    idx = tmp_path / "idx"
    _build(small_folder, idx)
    runner = CliRunner()
    res = runner.invoke(cli, ["index", str(small_folder), "--index", str(idx), "--model", "tiny-shapes",
                              "--pretrained", "none"])
    assert res.exit_code == 1 and "searchindex reindex --model" in res.output
    res = runner.invoke(cli, ["reindex", "--index", str(idx), "--model", "tiny-shapes", "--pretrained", "none"])
    assert res.exit_code == 0, res.output
    assert "40 indexed" in res.output and "now uses tiny-shapes / none" in res.output
    res = runner.invoke(cli, ["reindex", "--index", str(tmp_path / "nothing"), "--model", "tiny-shapes"])
    assert res.exit_code == 1 and "no index at" in res.output
