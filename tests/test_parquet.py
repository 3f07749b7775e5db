"""Embeddings as Parquet: export, import into a fresh index, refusals and failures."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from searchindex import EmbeddingFileError, Index, ModelMismatchError
from searchindex.cli import cli

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

QUERIES = ("a red circle", "a blue square", "a green triangle", "a yellow star")


def _hits(index: Index) -> list[list[tuple[str, float]]]:
    return [[(r.path, round(r.score, 5)) for r in index.search(q, k=10)] for q in QUERIES]


@pytest.mark.parametrize("layout", ["parquet", "clip-retrieval"])
def test_round_trip_gives_identical_search_results(small_index: Path, tmp_path: Path, layout: str) -> None:
    out = tmp_path / "export"
    with Index.open(small_index) as a:
        summary = a.export_embeddings(out, layout=layout, rows_per_file=15)
        before = _hits(a)
        count = a.count()
    assert summary.rows == count == 40
    assert len(summary.files) == (3 if layout == "parquet" else 6)  # 15 + 15 + 10 rows
    with Index.create(tmp_path / "b.idx", model="tiny-shapes", device="cpu") as b:
        imported = b.import_embeddings(out)
        assert (imported.imported, imported.failed, b.count()) == (40, 0, 40)
        assert _hits(b) == before
    # The imported rows describe the files on disk: a later indexing run has nothing to encode.
    with Index.open(tmp_path / "b.idx") as b:
        again = b.add_folder(Path(next(iter(before[0]))[0]).parent)
    assert (again.indexed, again.unchanged) == (0, 40)


def test_parquet_schema_is_what_other_tools_read(small_index: Path, tmp_path: Path) -> None:
    with Index.open(small_index) as a:
        a.export_embeddings(tmp_path / "e")
        stored = a.catalog.read.embeddings([1], a.dim)[1]
        dim = a.dim
    table = pq.read_table(tmp_path / "e" / "part-00000.parquet")
    kind = table.schema.field("embedding").type
    assert pa.types.is_fixed_size_list(kind) and kind.list_size == dim and kind.value_type == pa.float32()
    assert {"image_path", "image_id", "sha256", "model", "pretrained", "width", "taken_at"} <= set(table.column_names)
    assert table.column("model")[0].as_py() == "tiny-shapes"
    recorded = json.loads(table.schema.metadata[b"searchindex"])
    assert (recorded["model"], recorded["dim"]) == ("tiny-shapes", dim)
    row = table.column("image_id").to_pylist().index(1)
    np.testing.assert_array_equal(np.asarray(table.column("embedding")[row].as_py(), np.float32), stored)


def test_clip_retrieval_output_needs_its_model_stated(small_index: Path, tmp_path: Path) -> None:
    """clip-retrieval writes img_emb/*.npy and metadata/*.parquet with image_path and no model."""
    with Index.open(small_index) as a:
        ids, vecs = next(a.catalog.read.embeddings_since(0, a.dim))
        paths = [a.catalog.read.records([int(i)])[int(i)].path for i in ids]
    out = tmp_path / "clip"
    (out / "img_emb").mkdir(parents=True)
    (out / "metadata").mkdir()
    np.save(out / "img_emb" / "img_emb_0.npy", vecs.astype(np.float16))  # clip-retrieval saves fp16 by default
    meta = pa.table({"image_path": paths, "caption": ["x"] * len(paths)})
    pq.write_table(meta, out / "metadata" / "metadata_0.parquet")
    with Index.create(tmp_path / "c.idx", model="tiny-shapes", device="cpu") as c:
        with pytest.raises(ModelMismatchError, match="does not say which model"):
            c.import_embeddings(out)
        assert c.count() == 0
        with pytest.raises(ModelMismatchError, match="ViT-B-32"):
            c.import_embeddings(out, model="ViT-B-32", pretrained="none")
        summary = c.import_embeddings(out, model="tiny-shapes")
        assert (summary.imported, summary.failed) == (40, 0)
        got = c.catalog.read.embeddings([1], c.dim)[1]
        assert float(got @ vecs[0]) > 0.999


def test_model_and_dimension_mismatch_refused_before_writing(small_index: Path, tmp_path: Path) -> None:
    with Index.open(small_index) as a:
        a.export_embeddings(tmp_path / "e")
    with Index.create(tmp_path / "other.idx", model="tiny-shapes", pretrained="none", device="cpu") as other:
        with pytest.raises(ModelMismatchError, match="tiny-shapes / builtin"):
            other.import_embeddings(tmp_path / "e")
        assert other.count() == 0
    # Same model name, but 16-d vectors: refused too.
    table = pq.read_table(tmp_path / "e" / "part-00000.parquet")
    short = pa.FixedSizeListArray.from_arrays(pa.array(np.ones(len(table) * 16, np.float32)), 16)
    bad = table.set_column(table.column_names.index("embedding"), "embedding", short).replace_schema_metadata(None)
    pq.write_table(bad, tmp_path / "short.parquet")
    with Index.create(tmp_path / "d.idx", model="tiny-shapes", device="cpu") as d:
        with pytest.raises(ModelMismatchError, match="16-d"):
            d.import_embeddings(tmp_path / "short.parquet", model="tiny-shapes")
        assert d.count() == 0


def test_missing_and_changed_files_recorded_as_failures(small_index: Path, small_folder: Path, tmp_path: Path) -> None:
    with Index.open(small_index) as a:
        a.export_embeddings(tmp_path / "e")
    files = sorted(small_folder.glob("*.png"))
    files[0].unlink()
    shutil.copyfile(files[2], files[1])  # other content under the same name: the hash no longer matches
    with Index.create(tmp_path / "b.idx", model="tiny-shapes", device="cpu") as b:
        summary = b.import_embeddings(tmp_path / "e")
        reasons = {Path(f.path).name: f.reason for f in b.failures()}
    assert (summary.imported, summary.failed) == (38, 2)
    assert "file not found" in reasons[files[0].name]
    assert "sha256 mismatch" in reasons[files[1].name]


def test_not_parquet_and_nonempty_target_are_clear_errors(small_index: Path, tmp_path: Path) -> None:
    junk = tmp_path / "junk.parquet"
    junk.write_bytes(b"not parquet at all")
    with Index.open(small_index) as a:
        with pytest.raises(EmbeddingFileError, match="not a Parquet file"):
            a.import_embeddings(junk, model="tiny-shapes")
        (tmp_path / "full").mkdir()
        (tmp_path / "full" / "x").write_text("keep me")
        with pytest.raises(EmbeddingFileError, match="not an empty folder"):
            a.export_embeddings(tmp_path / "full")
    assert (tmp_path / "full" / "x").read_text() == "keep me"


def test_cli_export_then_import_creates_the_index(small_index: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "e"
    r = runner.invoke(cli, ["export", "--format", "parquet", str(out), "--index", str(small_index), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["rows"] == 40
    fresh = tmp_path / "fresh.idx"
    r = runner.invoke(cli, ["import-embeddings", str(out), "--index", str(fresh)])
    assert r.exit_code == 0, r.output
    assert "Imported 40 embeddings" in r.output
    with Index.open(fresh) as b, Index.open(small_index) as a:
        assert b.spec == a.spec
        assert _hits(b) == _hits(a)
    r = runner.invoke(cli, ["import-embeddings", str(tmp_path / "nothing-here"), "--index", str(fresh)])
    assert r.exit_code == 1 and "no such file or folder" in r.output
    assert os.path.isdir(fresh)


def _rewrite(src: Path, dst: Path, change: dict[int, np.ndarray | None] | None = None,
             paths: dict[int, str | None] | None = None, shas: dict[int, str] | None = None) -> None:
    """``src`` (an export's part) written to ``dst`` with some rows' embedding, path or sha256 changed."""
    table = pq.read_table(src)
    dim = table.schema.field("embedding").type.list_size
    emb = np.asarray(table.column("embedding").combine_chunks().flatten(), np.float32).reshape(-1, dim).copy()
    for row, vec in (change or {}).items():
        emb[row] = vec
    table = table.set_column(table.column_names.index("embedding"), "embedding",
                             pa.FixedSizeListArray.from_arrays(pa.array(emb.reshape(-1)), dim))
    for column, values in (("image_path", paths), ("sha256", shas)):
        if values:
            col = table.column(column).to_pylist()
            for row, value in values.items():
                col[row] = value
            table = table.set_column(table.column_names.index(column), column, pa.array(col, pa.string()))
    pq.write_table(table, dst)


def _stored(index: Index) -> dict[str, bytes]:
    ids, vecs = next(index.catalog.read.embeddings_since(0, index.dim))
    facts = index.catalog.read.records(ids.tolist())
    return {facts[int(i)].path: v.tobytes() for i, v in zip(ids, vecs, strict=True)}


def test_bad_vectors_never_replace_good_rows_nor_block_indexing(small_index: Path, tmp_path: Path) -> None:
    """NaN, infinite and all-zero vectors once replaced the good embeddings of indexed photos
    ("3 replaced"; searches by those photos then returned nothing)."""
    with Index.open(small_index) as a:
        a.export_embeddings(tmp_path / "e")
        before = _stored(a)
    dim = len(next(iter(before.values()))) // 4
    nan, inf, zero, tiny = (np.full(dim, np.nan), np.full(dim, np.inf), np.zeros(dim), np.full(dim, 1e-30))
    half_nan = np.ones(dim)
    half_nan[0] = np.nan
    _rewrite(tmp_path / "e" / "part-00000.parquet", tmp_path / "bad.parquet",
             {0: nan, 1: inf, 2: zero, 3: tiny, 4: half_nan, 5: -np.full(dim, np.finfo(np.float32).max)})
    table = pq.read_table(tmp_path / "bad.parquet")
    bad_paths = table.column("image_path").to_pylist()[:5]
    with Index.open(small_index) as a:
        summary = a.import_embeddings(tmp_path / "bad.parquet", replace=True)
        reasons = {f.path: f.reason for f in summary.failures}
        assert set(reasons) == set(bad_paths)
        assert "not finite" in reasons[bad_paths[0]] and "not finite" in reasons[bad_paths[1]]
        assert "all zeros" in reasons[bad_paths[2]] and "all zeros" in reasons[bad_paths[3]]
        assert summary.failed == 5 and a.failures() == []  # reported, not recorded: the files are fine
        after = _stored(a)
        assert all(after[p] == before[p] for p in bad_paths)  # the good rows stay
        assert a.search_image(bad_paths[0], k=1)[0].path == bad_paths[0]
        # Huge but finite: stored as a unit vector (float32 overflow would have made it NaN).
        huge = np.frombuffer(after[table.column("image_path")[5].as_py()], np.float32)
        assert abs(float(np.linalg.norm(huge)) - 1) < 1e-5
    # Into a fresh index: nothing recorded for the bad rows, so indexing the folder encodes them.
    with Index.create(tmp_path / "b.idx", model="tiny-shapes", device="cpu") as b:
        summary = b.import_embeddings(tmp_path / "bad.parquet")
        assert (summary.imported, summary.failed, b.count(), b.failures()) == (35, 5, 35, [])
        again = b.add_folder(Path(bad_paths[0]).parent)
        assert (again.indexed, again.failed) == (5, 0)


def test_mismatched_row_never_removes_an_indexed_file(small_index: Path, tmp_path: Path) -> None:
    """A row whose sha256 does not match an unchanged indexed file once removed its good row."""
    with Index.open(small_index) as a:
        a.export_embeddings(tmp_path / "e")
        before = _stored(a)
        count = a.count()
    other = np.random.default_rng(0).standard_normal(len(next(iter(before.values()))) // 4)
    _rewrite(tmp_path / "e" / "part-00000.parquet", tmp_path / "x.parquet", {0: other, 1: other},
             shas={0: "0" * 64})
    path0 = pq.read_table(tmp_path / "x.parquet").column("image_path")[0].as_py()
    with Index.open(small_index) as a:
        summary = a.import_embeddings(tmp_path / "x.parquet")
        assert a.count() == count and _stored(a) == before and a.failures() == []
        assert [f.reason for f in summary.failures if f.path == path0] == [
            "content differs from the imported embedding's (sha256 mismatch)"]
        # Valid vectors for files indexed with the same content: kept unless replace is asked for.
        assert (summary.imported, summary.unchanged, summary.replaced) == (0, count - 1, 0)
        replaced = a.import_embeddings(tmp_path / "x.parquet", replace=True)
        assert (replaced.unchanged, replaced.replaced) == (count - 1, count - 1)
        after = _stored(a)
    assert after[path0] == before[path0]
    path1 = pq.read_table(tmp_path / "x.parquet").column("image_path")[1].as_py()
    unit = (other / np.linalg.norm(other)).astype(np.float32)
    np.testing.assert_allclose(np.frombuffer(after[path1], np.float32), unit, atol=1e-6)


def test_referenced_files_are_read_like_indexing_reads_them(small_index: Path, tmp_path: Path) -> None:
    """image_path=/dev/zero was read without limit (24 GB resident); FIFOs, folders, files over the
    size limit, empty or duplicate paths are rows that fail with their reason."""
    with Index.open(small_index) as a:
        a.export_embeddings(tmp_path / "e")
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    (tmp_path / "folder.png").mkdir()
    big = tmp_path / "big.png"
    with open(big, "wb") as fh:
        fh.truncate(3 * 1024 * 1024)
    first = pq.read_table(tmp_path / "e" / "part-00000.parquet").column("image_path")[0].as_py()
    _rewrite(tmp_path / "e" / "part-00000.parquet", tmp_path / "x.parquet",
             paths={1: "/dev/zero", 2: str(fifo), 3: str(tmp_path / "folder.png"), 4: str(big), 5: None, 6: "",
                    7: first, 8: "a\x00b.png"})
    with Index.create(tmp_path / "b.idx", model="tiny-shapes", device="cpu") as b:
        summary = b.import_embeddings(tmp_path / "x.parquet", max_file_bytes=2 * 1024 * 1024)
    reasons = [f.reason for f in summary.failures]
    assert summary.failed == 8 and summary.imported == 32
    for expected in ("not a regular file: a character device", "not a regular file: a FIFO (named pipe)",
                     "not a regular file: a folder", "file too large: 3 MB (limit 2 MB"):
        assert any(r.startswith(expected) for r in reasons), (expected, reasons)
    assert reasons.count("row without a usable image_path") == 3
    assert reasons.count("a second row for this file (the first was imported)") == 1
