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
        stored = a.catalog.images.embeddings([1], a.dim)[1]
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
        ids, vecs = next(a.catalog.images.embeddings_since(0, a.dim))
        paths = [a.catalog.images.by_id([int(i)])[int(i)].path for i in ids]
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
        got = c.catalog.images.embeddings([1], c.dim)[1]
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
