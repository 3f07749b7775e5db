"""Issue 13's reliability items beyond data loss: every reproduction with real files, real SQLite,
FAISS and Pillow.  Process and signal tests are in test_processes.py (slow)."""

from __future__ import annotations

import io
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image, PngImagePlugin

from searchindex import Index
from searchindex.cli import cli
from searchindex.errors import ImageDecodeError, IndexCorruptError, IndexTypeError, IndexWriteError, QueryError
from searchindex.fileio import FileTooLargeError, NotRegularFileError, read_bounded
from searchindex.ingest.keywords import read_embedded_texts, read_sidecar_texts
from searchindex.ingest.metadata import read_metadata
from searchindex.models.images import decode_image
from searchindex.search.query import Query, parse_term
from searchindex.store.catalog.filters import Filters
from searchindex.store.querycache import CACHE_FILE
from searchindex.store.vectors.kinds import canonical_factory

from .conftest import Shapes


@pytest.fixture()
def runner() -> CliRunner:
    return CliRunner()


def _index(folder: Path, path: Path, **options: object) -> tuple[Index, object]:
    index = Index.create(path, model="tiny-shapes", device="cpu")
    return index, index.add_folder(folder, workers=0, **options)


def _in_thread(fn, timeout: float = 120.0):  # type: ignore[no-untyped-def]
    """Run ``fn`` and fail (instead of hanging the suite) if it does not return."""
    out: dict[str, object] = {}

    def run() -> None:
        try:
            out["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            out["error"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout)
    assert not t.is_alive(), "hung"
    if "error" in out:
        raise out["error"]  # type: ignore[misc]
    return out["value"]


# -- item 6: FIFOs, sockets, devices -------------------------------------------------------------


def test_fifos_named_like_images_or_sidecars_never_block(small_folder: Path, tmp_path: Path) -> None:
    os.mkfifo(small_folder / "pipe.jpg")
    first = sorted(small_folder.glob("*.png"))[0]
    os.mkfifo(first.with_suffix(".txt"))  # a FIFO sidecar of a real image
    index = Index.create(tmp_path / "idx", model="tiny-shapes", device="cpu")
    with index:
        summary = _in_thread(lambda: index.add_folder(small_folder, workers=0))
        assert summary.indexed == 40 and summary.failed == 1
        assert summary.failures[0].path.endswith("pipe.jpg")
        assert summary.failures[0].reason == "not a regular file: a FIFO (named pipe)"
        again = _in_thread(lambda: index.add_folder(small_folder, workers=0))  # the run that used to hang
        assert again.unchanged == 41 and again.indexed == 0
    assert read_sidecar_texts(str(first)) == []


def test_open_regular_refuses_without_opening(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "p")
    with pytest.raises(NotRegularFileError, match="FIFO"):
        _in_thread(lambda: read_bounded(tmp_path / "p"), timeout=10)
    with pytest.raises(NotRegularFileError, match="character device"):
        read_bounded("/dev/zero")
    with pytest.raises(NotRegularFileError, match="folder"):
        read_bounded(tmp_path)


# -- item 7: unbounded reads -------------------------------------------------------------------------


def test_dev_zero_link_and_huge_sparse_file_are_refused_and_the_run_goes_on(small_folder: Path,
                                                                          tmp_path: Path) -> None:
    (small_folder / "zero.jpg").symlink_to("/dev/zero")
    with open(small_folder / "huge.jpg", "wb") as fh:
        fh.truncate(8 << 30)  # 8 GB, sparse: costs nothing on disk
    index, summary = _index(small_folder, tmp_path / "idx")
    with index:
        reasons = {Path(f.path).name: f.reason for f in summary.failures}  # type: ignore[attr-defined]
        assert reasons["zero.jpg"] == "not a regular file: a character device"
        assert reasons["huge.jpg"].startswith("file too large: 8590 MB (limit 1074 MB")
        assert summary.indexed == 40  # type: ignore[attr-defined]
    with Index.open(tmp_path / "idx") as index:
        small = index.add_folder(small_folder, workers=0, max_file_bytes=10_000)
        assert small.failed == 0 and small.unchanged == 42  # unchanged files (failed ones too) are not read again
    with pytest.raises(FileTooLargeError):
        read_bounded(small_folder / "huge.jpg", 1 << 20)


# -- item 8: long queries --------------------------------------------------------------------------------


def test_texts_longer_than_a_file_name_are_texts(shapes_index: Path) -> None:
    long = "a red circle on a plain background " * 20  # 700 bytes: more than NAME_MAX
    assert parse_term(long).text == long.strip()
    assert parse_term("x" * 300 + ".jpg").image is None  # cannot be a file name either
    assert parse_term("/" + "a/" * 3000).image is None  # longer than PATH_MAX
    with Index.open(shapes_index) as index:
        assert len(index.search(long, k=3)) == 3
    with pytest.raises(QueryError, match="not a regular file"):
        Query.parse("x", images=["/dev/null"])


# -- item 9: index types -----------------------------------------------------------------------------------


def test_index_type_validation_allocates_nothing_and_untrainable_types_are_refused(small_folder: Path,
                                                                                  tmp_path: Path) -> None:
    tracemalloc.start()
    with pytest.raises(IndexTypeError, match="between 1 and"):
        canonical_factory("IVF99999999,Flat", 64)
    assert canonical_factory("IVF1048576,Flat", 64) == "IVF1048576,Flat"  # checked on a one-list stand-in
    assert canonical_factory("IVF4096,PQ8", 64) == "IVF4096,PQ8x8"
    tracemalloc.stop()
    index, _ = _index(small_folder, tmp_path / "idx")
    with index:
        with pytest.raises(IndexTypeError, match="needs at least 4,096 images"):
            index.add_folder(small_folder, workers=0, index_type="IVF4096,Flat")
        assert index.info().index_type == "auto"  # nothing recorded
        with pytest.raises(IndexTypeError, match="needs at least 64 images"):
            index.optimize("IVF64,Flat")


# -- item 10 and 16: bounded metadata, one megapixel limit ------------------------------------------------


def _png_with_text(size: int) -> bytes:
    img = Image.new("RGB", (32, 32), (200, 10, 10))
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "x" * size)
    buf = io.BytesIO()
    img.save(buf, "PNG", pnginfo=info)
    return buf.getvalue()


def test_a_huge_png_text_chunk_is_not_read(tmp_path: Path) -> None:
    data = _png_with_text(30 << 20)
    tracemalloc.start()
    decoded = decode_image(data, "big-text.png")
    meta = read_metadata(data, 0)
    texts = read_embedded_texts(data)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert decoded.image.size == (32, 32) and decoded.image.getpixel((0, 0)) == (200, 10, 10)
    assert meta.date_source == "mtime" and texts == []
    assert peak < 2 * len(data)  # Pillow alone made several 30 MB copies


def test_a_compressed_text_bomb_does_not_cost_the_image() -> None:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (0, 0, 255)).save(buf, "PNG")
    png = buf.getvalue()
    body = b"Comment\0\0" + zlib.compress(b"x" * (64 << 20), 9)  # 64 KB that inflate to 64 MB
    chunk = len(body).to_bytes(4, "big") + b"zTXt" + body + zlib.crc32(b"zTXt" + body).to_bytes(4, "big")
    data = png[:33] + chunk + png[33:]
    assert decode_image(data, "bomb.png").image.getpixel((0, 0)) == (0, 0, 255)
    assert read_embedded_texts(data) == []


def _png_header(width: int, height: int) -> bytes:
    """A PNG that claims ``width`` x ``height`` (greyscale) with one tiny, truncated IDAT."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return len(body).to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")
    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 0, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 100)) + \
        chunk(b"IEND", b"")


def test_our_megapixel_limit_is_the_one_that_applies() -> None:
    data = _png_header(15_000, 13_000)  # 195 MP: above Pillow's own ~179 MP, below our 250
    # Past the size check, to the (truncated) pixels: the decode error of a truncated file, not "too large".
    with pytest.raises(ImageDecodeError, match="corrupt image: image file is truncated"):
        decode_image(data, "big.png")
    with pytest.raises(ImageDecodeError, match="too large: 15000x13000 is 195 megapixels \\(limit 100\\)"):
        decode_image(data, "big.png", max_megapixels=100)
    for bad in (float("nan"), float("inf"), 0, -1):
        with pytest.raises(ValueError, match="megapixel limit"):
            decode_image(data, "big.png", max_megapixels=bad)


def test_cli_refuses_nan_megapixels(runner: CliRunner, small_folder: Path, tmp_path: Path) -> None:
    result = runner.invoke(cli, ["index", str(small_folder), "--index", str(tmp_path / "i"),
                                 "--max-megapixels", "nan"])
    assert result.exit_code == 2 and "nan is not a finite number" in result.output
    assert not (tmp_path / "i").exists()


# -- item 12: query cache ----------------------------------------------------------------------------------------


def test_bad_query_cache_entries_are_dropped(small_folder: Path, tmp_path: Path) -> None:
    index, _ = _index(small_folder, tmp_path / "idx")
    with index:
        good = [r.path for r in index.search("a red circle", k=5)]
    db = sqlite3.connect(tmp_path / "idx" / CACHE_FILE)
    (model,) = db.execute("SELECT model FROM queries WHERE text = 'a red circle'").fetchone()
    dim = 64
    bad = {"a red circle": np.full(dim, np.nan, np.float32), "a blue square": np.zeros(dim, np.float32),
           "a green star": np.ones(dim, np.float32), "a red square": np.ones(dim // 2, np.float32) / 4}
    db.executemany("INSERT OR REPLACE INTO queries VALUES (?, ?, ?)",
                   [(model, t, v.tobytes()) for t, v in bad.items()])
    db.commit()
    with Index.open(tmp_path / "idx") as index:
        assert [r.path for r in index.search("a red circle", k=5)] == good
        for text in bad:
            assert len(index.search(text, k=5)) == 5
    left = dict(db.execute("SELECT text, vector FROM queries").fetchall())
    db.close()
    for text in bad:
        vec = np.frombuffer(left[text], np.float32)
        assert vec.shape == (dim,) and abs(np.linalg.norm(vec) - 1) < 1e-3  # re-encoded, not the bad entry


# -- item 13: damaged catalogs ------------------------------------------------------------------------------------


def _damage(path: Path, how: str) -> None:
    catalog = path / "catalog.sqlite"
    data = bytearray(catalog.read_bytes())
    if how == "truncate":
        catalog.write_bytes(bytes(data[: len(data) // 3]))
    elif how == "random":
        catalog.write_bytes(np.random.default_rng(1).bytes(len(data)))
    elif how == "pages":
        data[4096 * 3: 4096 * 6] = np.random.default_rng(2).bytes(4096 * 3)
        catalog.write_bytes(bytes(data))
    elif how == "empty":
        catalog.write_bytes(b"")  # a valid, empty SQLite database
    else:
        db = sqlite3.connect(catalog)
        db.execute({
            "garbage-version": "UPDATE meta SET value = 'x1' WHERE key = 'schema_version'",
            "missing-version": "DELETE FROM meta WHERE key = 'schema_version'",
            "garbage-dim": "UPDATE meta SET value = 'sixty' WHERE key = 'dim'",
            "missing-model": "DELETE FROM meta WHERE key = 'model'",
        }[how])
        db.commit()
        db.close()


@pytest.fixture()
def built(small_folder: Path, tmp_path: Path) -> Path:
    index, _ = _index(small_folder, tmp_path / "idx")
    index.close()
    return tmp_path / "idx"


@pytest.mark.parametrize("how", ["truncate", "random", "pages", "empty", "garbage-version", "missing-version",
                                 "garbage-dim", "missing-model"])
def test_a_damaged_catalog_is_one_clear_error(built: Path, how: str, runner: CliRunner) -> None:
    _damage(built, how)
    with pytest.raises(IndexCorruptError) as caught:
        with Index.open(built) as index:
            index.search("a red circle", k=40)  # "pages" can leave the first pages readable
            index.info()
            index.failures()
    message = str(caught.value)
    assert str(built / "catalog.sqlite") in message and "searchindex repair" in message
    result = runner.invoke(cli, ["search", "a red circle", "--index", str(built), "-k", "40"])
    assert result.exit_code == 1 and result.output.count("\n") == 1 and "is damaged" in result.output
    check = runner.invoke(cli, ["check", "--index", str(built)])
    assert check.exit_code == 1 and "DAMAGED" in check.output


# -- item 14: times out of range ------------------------------------------------------------------------------------


@pytest.mark.parametrize("seconds", [2**63 // 10**9 + 10_000, 300_000_000_000, -100_000_000_000])
def test_out_of_range_mtimes_never_end_a_run(small_folder: Path, tmp_path: Path, seconds: int) -> None:
    odd = sorted(small_folder.glob("*.png"))[0]
    try:
        os.utime(odd, ns=(seconds * 10**9, seconds * 10**9))
    except (OSError, OverflowError, ValueError) as exc:
        pytest.skip(f"this filesystem refuses the time: {exc}")
    index, summary = _index(small_folder, tmp_path / "idx")
    with index:
        assert summary.indexed == 40 and summary.failed == 0  # type: ignore[attr-defined]
        again = index.add_folder(small_folder, workers=0)
        assert again.unchanged == 40  # the clamped time compares equal next run
    assert Index.check(tmp_path / "idx").ok


# -- item 15: clear errors --------------------------------------------------------------------------------------------


def test_cli_errors_are_one_line(runner: CliRunner, built: Path, small_folder: Path, tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("x")
    cases = [  # a bad value typed on the command line is a usage error (2), as click's own (docs/cli.md)
        (["index", str(small_folder), "--index", str(afile)], "exists and is not a folder", 1),
        (["index", str(small_folder), "--index", "/dev/null"], "exists and is not a folder", 1),
        (["search", "x", "--index", str(built), "--like", "99999999999999999999999"], "no image with id", 2),
        (["search", "x", "--index", str(built), "--min-width", "99999999999999999999"], "larger than any image", 2),
        (["tag", "--index", str(built), "--labels-file", "/dev/zero"], "not a regular file: a character device", 2),
        (["search", "x", "--index", str(built), "--image", "/dev/null"], "not a regular file (a character device)", 2),
        (["index", str(small_folder), "--index", str(built), "--index-type", "IVF99999999,Flat"], "between 1 and", 2),
    ]
    for args, expected, code in cases:
        result = runner.invoke(cli, args)
        assert result.exit_code == code, (args, result.output)
        assert expected in result.output, (args, result.output)
        assert result.output.startswith("Error: " if code == 1 else "Usage: "), (args, result.output)
        assert result.exception is None or isinstance(result.exception, SystemExit)
    with pytest.raises(QueryError):
        Filters(min_width=2**64)


def _tmpfs(path: Path, size: str) -> None:
    path.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs for disk-full cases (needs root): {done.stderr.decode().strip()}")


def test_disk_full_is_a_clear_error_and_loses_nothing(small_folder: Path, tmp_path: Path) -> None:
    disk = tmp_path / "disk"
    _tmpfs(disk, "2m")
    try:
        with Index.create(disk / "idx", model="tiny-shapes", device="cpu") as index:
            filler = disk / "filler"
            with open(filler, "wb") as fh:  # leave about 8 KB free
                free = shutil.disk_usage(disk).free
                fh.write(b"\0" * max(0, free - 8192))
            with pytest.raises(IndexWriteError, match="cannot write the index"):
                index.add_folder(small_folder, workers=0, batch_size=8)
            kept = index.count()
            filler.unlink()
            summary = index.add_folder(small_folder, workers=0, batch_size=8)
            assert summary.indexed + kept == 40 and index.count() == 40
        assert Index.check(disk / "idx").ok
        # Full while the catalog is being created: one clear error, no half-made index.
        with open(disk / "filler", "wb") as fh:
            fh.write(b"\0" * shutil.disk_usage(disk).free)
        with pytest.raises(IndexWriteError, match="cannot create an index"):
            Index.create(disk / "idx2", model="tiny-shapes", device="cpu")
        assert not (disk / "idx2" / "catalog.sqlite").exists()
    finally:
        if subprocess.run(["umount", str(disk)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(disk)], check=False)  # busy: detach now, freed when closed


# -- check and repair ----------------------------------------------------------------------------------------------


def test_check_finds_nothing_on_a_healthy_index_and_json(built: Path, runner: CliRunner) -> None:
    report = Index.check(built)
    assert report.ok and report.findings == () and report.images == report.vectors == 40
    result = runner.invoke(cli, ["check", "--index", str(built), "--json"])
    assert result.exit_code == 0 and json.loads(result.output)["ok"] is True


def test_flipped_vector_bytes_are_found_and_repaired(built: Path, small_folder: Path) -> None:
    (vector_file,) = built.glob("vectors-*.faiss")
    data = bytearray(vector_file.read_bytes())
    rng = np.random.default_rng(3)
    for pos in rng.choice(np.arange(200, len(data) - 400), 200, replace=False):
        data[pos] ^= 0xFF
    vector_file.write_bytes(bytes(data))
    report = Index.check(built)
    assert not report.ok
    assert any(f.area == "vectors" and f.severity == "error" for f in report.findings), report.findings
    repaired = Index.repair(built)
    assert repaired.vectors_rebuilt == 40 and repaired.check is not None and repaired.check.ok
    with Index.open(built) as index:
        first = sorted(small_folder.glob("*.png"))[0]
        assert index.search_image(first, k=1)[0].path == str(first)


def test_repair_recovers_a_catalog_keeps_the_damaged_file_and_touches_no_photo(built: Path, small_folder: Path,
                                                                              runner: CliRunner) -> None:
    photos = {p.name: p.read_bytes() for p in small_folder.iterdir()}
    stranger = built / "notes.txt"
    stranger.write_text("mine")
    (built / ".catalog.sqlite.123.tmp").write_bytes(b"left by a killed writer")
    _damage(built, "garbage-version")
    result = runner.invoke(cli, ["repair", "--index", str(built)])
    assert result.exit_code == 0, result.output
    assert "Catalog recovered: 40 images" in result.output and "Removed 1 leftover" in result.output
    assert not (built / ".catalog.sqlite.123.tmp").exists()
    (aside,) = built.glob("catalog.sqlite.damaged-*")
    assert sqlite3.connect(aside).execute("SELECT value FROM meta WHERE key='schema_version'").fetchone() == ("x1",)
    assert stranger.read_text() == "mine"
    assert {p.name: p.read_bytes() for p in small_folder.iterdir()} == photos
    with Index.open(built) as index:
        assert index.count() == 40 and len(index.search("a red circle", k=5)) == 5
        assert index.add_folder(small_folder, workers=0).unchanged == 40


def test_repair_infers_a_garbage_dimension_from_the_embeddings(built: Path) -> None:
    _damage(built, "garbage-dim")
    report = Index.repair(built)
    assert report.catalog_recovered and report.rows_recovered["images"] == 40
    with Index.open(built) as index:
        assert index.dim == 64 and len(index.search("a red circle", k=3)) == 3


def test_repair_of_overwritten_pages_recovers_what_it_can(built: Path, small_folder: Path) -> None:
    _damage(built, "pages")
    report = Index.repair(built)
    assert report.catalog_recovered and report.check is not None and report.check.ok
    with Index.open(built) as index:
        recovered = index.count()
        assert report.images_lost_exact and report.images_lost == 40 - recovered
        summary = index.add_folder(small_folder, workers=0)  # indexing again restores what was lost
        assert index.count() == 40 and summary.indexed + summary.duplicates + summary.unchanged >= 40 - recovered


def _grown(built: Path, small_folder: Path, total: int) -> None:
    """Add synthetic rows (copies of the first row's embedding, other paths) up to ``total`` images,
    with a vector file of the catalog's generation, as an indexing run leaves it."""
    from searchindex.store.catalog.database import Catalog
    from searchindex.store.catalog.records import NewImage

    catalog = Catalog.open(built)
    try:
        first = catalog.read.embeddings([1], 64)[1]
        for start in range(40, total, 500):
            catalog.commit_batch([NewImage(str(small_folder / f"more_{i:05d}.png"), 100, 1, f"{i:064x}", 64, 64,
                                           "PNG", first) for i in range(start, min(start + 500, total))])
    finally:
        catalog.close()
    Index.repair(built)  # an exact vector file of the new generation
    assert Index.check(built, files=False).ok


@pytest.mark.parametrize("how", ["random", "zeros", "stale-copy", "interior-stale-copy"])
def test_repair_counts_the_images_lost_with_damaged_pages(built: Path, small_folder: Path, runner: CliRunner,
                                                          how: str) -> None:
    _grown(built, small_folder, 1500)
    catalog = built / "catalog.sqlite"
    db = sqlite3.connect(catalog)
    pages = db.execute("SELECT pageno, pagetype FROM dbstat WHERE name = 'images' ORDER BY pageno").fetchall()
    db.close()
    leaves = [p for p, kind in pages if kind == "leaf"]
    interior = [p for p, kind in pages if kind == "internal"]
    data = bytearray(catalog.read_bytes())

    def page(n: int) -> slice:
        return slice(4096 * (n - 1), 4096 * n)

    # Two pages of the images table: garbage, zeros, or a stale copy of another page (a torn or
    # misdirected write: valid-looking, so the rows on it vanish without any read error).
    for n in (interior[:1] if how == "interior-stale-copy" else leaves[10:12]):
        data[page(n)] = {"random": np.random.default_rng(n).bytes(4096), "zeros": bytes(4096)}.get(
            how, bytes(data[page(leaves[40])]))
    catalog.write_bytes(bytes(data))
    result = runner.invoke(cli, ["repair", "--index", str(built), "--json"])
    report = json.loads(result.output)
    recovered = sqlite3.connect(catalog).execute("SELECT count(*) FROM images").fetchone()[0]
    assert 0 < recovered < 1500
    assert report["images_lost"] == 1500 - recovered and report["images_lost_exact"] is True
    assert report["rows_lost"]["images"] == 1500 - recovered
    assert report["rows_recovered"]["images"] == recovered
    assert report["reindex_folders"] == [str(small_folder)]
    db = sqlite3.connect(catalog)  # damaged again, elsewhere: the text report this time
    (n,) = db.execute("SELECT pageno FROM dbstat WHERE name = 'images' AND pagetype = 'leaf' "
                      "ORDER BY pageno LIMIT 1").fetchone()
    db.close()
    data = bytearray(catalog.read_bytes())
    data[page(n)] = np.random.default_rng(50).bytes(4096)
    catalog.write_bytes(bytes(data))
    result = runner.invoke(cli, ["repair", "--index", str(built)])
    text = result.output
    lost = sqlite3.connect(catalog).execute("SELECT count(*) FROM images").fetchone()[0]
    assert f"Catalog recovered: {lost} images; {recovered - lost} images lost" in text, text
    folder = str(small_folder) if lost else "YOUR-PHOTO-FOLDERS"  # no row left to say where they were
    assert f"searchindex index {folder} --index {built}" in text, text


def test_repair_after_a_truncated_wal_counts_what_it_lost(built: Path, small_folder: Path,
                                                           runner: CliRunner) -> None:
    _grown(built, small_folder, 1500)
    catalog = built / "catalog.sqlite"
    # Rows committed to the WAL only (no checkpoint), then the WAL cut short, as a full disk or a
    # copy taken mid-write leaves it.
    db = sqlite3.connect(catalog)
    db.execute("PRAGMA wal_autocheckpoint = 0")
    db.execute("UPDATE images SET width = width + 1")
    db.commit()
    wal = built / "catalog.sqlite-wal"
    kept = catalog.read_bytes(), wal.read_bytes()
    db.close()  # checkpoints: put the un-checkpointed state back
    catalog.write_bytes(kept[0])
    wal.write_bytes(kept[1][: len(kept[1]) // 2 + 123])
    result = runner.invoke(cli, ["repair", "--index", str(built), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    recovered = sqlite3.connect(catalog).execute("SELECT count(*) FROM images").fetchone()[0]
    assert report["images_lost"] == 1500 - recovered
    assert all(0 <= n <= 1500 for n in report["rows_lost"].values()), report["rows_lost"]


@pytest.mark.parametrize("how", ["random", "missing-model"])
def test_repair_of_an_unrecoverable_catalog_changes_nothing(built: Path, how: str) -> None:
    _damage(built, how)
    before = (built / "catalog.sqlite").read_bytes()
    with pytest.raises(IndexCorruptError, match="cannot be recovered"):
        Index.repair(built)
    assert (built / "catalog.sqlite").read_bytes() == before
    assert not list(built.glob("catalog.sqlite.damaged-*")) and not list(built.glob(".catalog*"))


def test_check_reports_files_changed_or_missing_on_disk(built: Path, small_folder: Path) -> None:
    photos = sorted(small_folder.glob("*.png"))
    photos[0].unlink()
    photos[1].write_bytes(photos[2].read_bytes() + b"x")
    os.chmod(photos[3], 0)
    # Run as a user that permissions apply to (root reads anything: drop its override capabilities).
    code = ("import json, sys; from searchindex import Index; r = Index.check(sys.argv[1]); "
            "print(json.dumps(r.to_dict()))")
    out = subprocess.run([*_permissions_apply(), sys.executable, "-c", code, str(built)], capture_output=True,
                         text=True, env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
                         check=False)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["ok"]  # out of date is not damage
    by_message = {f["message"].split(" (")[0]: f for f in report["findings"] if f["area"] == "files"}
    assert by_message["1 indexed files are missing"]["paths"] == [str(photos[0])]
    assert by_message["1 indexed files changed since"]["paths"] == [str(photos[1])]
    assert by_message["1 indexed files are unreadable or no longer regular files"]["paths"] == [str(photos[3])]


def _permissions_apply() -> list[str]:
    """A command prefix under which file permissions apply, even when the tests run as root."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    assert setpriv is not None, "running as root needs util-linux setpriv to test permissions"
    caps = "-dac_override,-dac_read_search,-fowner"
    return [setpriv, f"--bounding-set={caps}", f"--inh-caps={caps}"]


def test_check_of_an_ivf_index_and_of_photos_gone(built: Path, small_folder: Path) -> None:
    with Index.open(built) as index:
        assert index.optimize("IVF4,Flat") is not None
    report = Index.check(built)
    assert report.ok and report.vectors == 40, report.findings  # no false alarm from lossy IVF codes
    shutil.rmtree(small_folder)
    report = Index.check(built)
    assert report.ok  # out of date, not damaged
    (missing,) = [f for f in report.findings if f.area == "files"]
    assert missing.severity == "warning" and missing.count == 40 and len(missing.paths) == 10


def test_check_finds_a_vector_file_of_another_index(built: Path, small_folder: Path, tmp_path: Path) -> None:
    other, _ = _index(small_folder, tmp_path / "other.idx")  # same photos, so the same ids and vectors
    other.close()
    (mine,) = built.glob("vectors-*.faiss")
    (theirs,) = (tmp_path / "other.idx").glob("vectors-*.faiss")
    shutil.copy(theirs, mine)
    report = Index.check(built)
    assert not report.ok
    (finding,) = [f for f in report.findings if f.area == "vectors"]
    assert "belongs to another index" in finding.message
    assert Index.repair(built).check.ok  # type: ignore[union-attr]


@pytest.mark.parametrize("index_type", ["flat", "IVF2,Flat"])
def test_a_vector_file_of_a_copy_that_changed_apart_is_not_used(built: Path, shapes: Shapes, tmp_path: Path,
                                                                index_type: str) -> None:
    if index_type != "flat":
        with Index.open(built) as index:
            assert index.optimize(index_type) is not None
    copy = tmp_path / "copy.idx"
    shutil.copytree(built, copy)  # `cp -a`: the same identity, generation and ids
    extra = sorted(shapes.folder.glob("*.png"))[40:42]
    assert not np.array_equal(np.asarray(Image.open(extra[0])), np.asarray(Image.open(extra[1])))
    for idx, photo in ((built, extra[0]), (copy, extra[1])):  # each copy adds another photo
        with Index.open(idx) as index:
            assert index.add_files([str(photo)], workers=0).indexed == 1
    (theirs,) = built.glob("vectors-*.faiss")
    (mine,) = copy.glob("vectors-*.faiss")
    assert theirs.name == mine.name  # same generation
    shutil.copy(theirs, mine)
    with Index.open(copy) as index:  # rebuilt from the catalog on open: the copy's own vectors
        (hit,) = index.search_image(extra[1], k=1)
        assert hit.path == str(extra[1]) and hit.score > 0.999
        assert all(r.path != str(extra[1]) or r.score < 0.999 for r in index.search_image(extra[0], k=3))
    report = Index.check(copy)
    assert not report.ok
    (finding,) = [f for f in report.findings if f.area == "vectors"]
    assert "another state" in finding.message, finding
    assert Index.repair(copy).check.ok  # type: ignore[union-attr]
    assert Index.check(copy).ok and Index.check(built).ok


def test_an_empty_vector_file_is_damage_and_an_old_one_is_not(built: Path) -> None:
    import faiss

    from searchindex.store.vectors.file import VECTOR_MAGIC

    (vector_file,) = built.glob("vectors-*.faiss")
    data = vector_file.read_bytes()
    payload = data[data.index(b"\n", len(VECTOR_MAGIC)) + 1:]  # the FAISS data after the header line
    vector_file.write_bytes(b"")
    (finding,) = Index.check(built).findings
    assert finding.severity == "error" and "no identity header" in finding.message
    faiss.write_index(faiss.deserialize_index(np.frombuffer(payload, np.uint8)), str(vector_file))
    (finding,) = Index.check(built).findings  # as written before vector files had a header
    assert finding.severity == "warning"


def test_rows_of_a_renamed_top_folder_can_be_dropped_and_check_says_how(built: Path, small_folder: Path,
                                                                        runner: CliRunner) -> None:
    renamed = small_folder.with_name("Photos")
    small_folder.rename(renamed)
    (missing,) = [f for f in Index.check(built).findings if f.area == "files"]
    assert f"`searchindex index {small_folder} --gone`" in missing.message, missing.message
    res = runner.invoke(cli, ["index", str(renamed), "--index", str(built), "--gone"])
    assert res.exit_code == 1 and "exists: index it" in res.output  # a folder still there is never forgotten
    res = runner.invoke(cli, ["index", str(small_folder), "--index", str(built), "--gone"])
    assert res.exit_code == 0, res.output
    assert f"40 images below {small_folder} forgotten. {built} holds 0 images." in res.output
    res = runner.invoke(cli, ["index", str(renamed), "--index", str(built), "--json"])
    assert res.exit_code == 0 and json.loads(res.output)["images_in_index"] == 40
    assert not [f for f in Index.check(built).findings if f.area == "files"]
    with Index.open(built) as index:
        assert all(r.path.startswith(str(renamed)) for r in index.search("a red circle", k=40))
