"""Issue 13's data-loss reproductions: nothing of the user's is ever deleted, no work is lost.

Real files, real processes and real signals throughout.
"""

from __future__ import annotations

import hashlib
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from searchindex import Index
from searchindex.errors import IndexFolderError
from searchindex.store.catalog.sqlite import CATALOG_FILE
from searchindex.store.vectors.file import VECTOR_MAGIC, latest_vector_file, read_vector_file
from searchindex.store.vectors.index import VectorIndex

from .test_write_errors import drop_root, run_cli

ROOT = Path(__file__).resolve().parent.parent


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def _build(folder: Path, idx: Path) -> None:
    with Index.create(idx, model="tiny-shapes", device="cpu") as index:
        index.add_folder(folder, workers=0)


def _rows(catalog: Path) -> int:
    try:
        con = sqlite3.connect(f"file:{catalog}?mode=ro", uri=True, timeout=5)
        try:
            return int(con.execute("SELECT count(*) FROM images").fetchone()[0])
        finally:
            con.close()
    except sqlite3.Error:
        return 0


# -- 1: an index folder holds only the index; removal deletes only what the index made ---------


def test_a_new_index_refuses_a_folder_with_other_files(small_folder: Path) -> None:
    before = _digests(small_folder)
    with pytest.raises(IndexFolderError, match="not empty"):
        Index.create(small_folder, model="tiny-shapes", device="cpu")
    done = run_cli(["index", str(small_folder), "--index", str(small_folder), "--model", "tiny-shapes",
                 "--device", "cpu"])
    assert done.returncode == 1 and "not empty" in done.stderr and "Traceback" not in done.stderr
    assert _digests(small_folder) == before  # nothing added, nothing removed
    assert sorted(p.name for p in small_folder.iterdir()) == sorted(before)


@pytest.mark.slow
def test_a_strangers_files_survive_create_reindex_kill_and_resume(small_folder: Path, tmp_path: Path) -> None:
    idx = tmp_path / "idx"
    _build(small_folder, idx)
    # Someone keeps their own files in the index folder after it was made.
    (idx / "notes.txt").write_text("mine")
    (idx / "photo.png").write_bytes((small_folder / sorted(os.listdir(small_folder))[0]).read_bytes())
    (idx / "album").mkdir()
    (idx / "album" / "a.txt").write_text("also mine")
    strangers = {n: d for n, d in _digests(idx).items() if n in ("notes.txt", "photo.png")}

    # A reindex killed with SIGKILL part-way (a real process, a real signal) ...
    cmd = [sys.executable, "-m", "searchindex.cli", "reindex", "--index", str(idx), "--model", "tiny-shapes",
           "--pretrained", "none", "--device", "cpu", "--batch-size", "1", "--workers", "0"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    staging_catalog = tmp_path / ".idx.reindex" / CATALOG_FILE
    deadline = time.monotonic() + 120
    while proc.poll() is None and _rows(staging_catalog) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert {n: d for n, d in _digests(idx).items() if n in strangers} == strangers
    assert (idx / "album" / "a.txt").read_text() == "also mine"

    # ... and resumed to the end: the swap carries the strangers over and deletes none of them.
    summary = Index.reindex(idx, "tiny-shapes", "none", device="cpu", workers=0)
    assert not summary.interrupted and summary.indexed + summary.unchanged == 40
    assert {n: d for n, d in _digests(idx).items() if n in strangers} == strangers
    assert (idx / "album" / "a.txt").read_text() == "also mine"
    assert not (tmp_path / ".idx.reindex").exists()
    with Index.open(idx) as index:
        assert index.spec.pretrained == "none" and index.count() == 40
    assert len(_digests(small_folder)) == 40  # the photos, untouched


def test_a_leftover_staging_folder_with_strangers_is_not_emptied(small_folder: Path, tmp_path: Path) -> None:
    idx = tmp_path / "idx"
    _build(small_folder, idx)
    staging = tmp_path / ".idx.reindex"
    staging.mkdir()
    (staging / "keep.jpg").write_bytes(b"not the index's")
    with pytest.raises(IndexFolderError):
        Index.reindex(idx, "tiny-shapes", "none", device="cpu", workers=0)
    assert (staging / "keep.jpg").read_bytes() == b"not the index's"
    with Index.open(idx) as index:  # the old index is untouched
        assert index.count() == 40 and index.spec.pretrained != "none"


def test_the_thumbnail_cache_is_the_index_s_own_but_nothing_else_in_it(tmp_path: Path) -> None:
    from searchindex.store.folder import THUMBNAIL_FOLDER, remove_index_files, strangers

    folder = tmp_path / "idx"
    shard = folder / THUMBNAIL_FOLDER / "ab"
    shard.mkdir(parents=True)
    thumb = shard / ("ab" + "0" * 62 + "-256.webp")
    thumb.write_bytes(b"thumb")
    assert strangers(folder) == []  # what `serve` made does not block a reindex
    (shard / "holiday.jpg").write_bytes(b"a photo someone put there")
    assert strangers(folder) == [THUMBNAIL_FOLDER]
    assert remove_index_files(folder) == [THUMBNAIL_FOLDER]
    assert not thumb.exists()  # the cache's own file went
    assert (shard / "holiday.jpg").read_bytes() == b"a photo someone put there"  # the stranger stayed


# -- 2: two first-time runs on the same new index ------------------------------------------------


@pytest.mark.slow
def test_two_first_time_index_runs_lose_nothing(small_folder: Path, tmp_path: Path) -> None:
    idx = tmp_path / "new.idx"
    cmd = [sys.executable, "-m", "searchindex.cli", "index", str(small_folder), "--index", str(idx),
           "--model", "tiny-shapes", "--device", "cpu", "--batch-size", "2", "--workers", "0"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for _ in range(2)]
    results = [(p.wait(timeout=300), *p.communicate()) for p in procs]
    for rc, _, err in results:
        assert rc in (0, 1), err
        assert "Traceback" not in err
        if rc == 1:
            assert "another process is writing to this index" in err
    assert any(rc == 0 for rc, _, _ in results)
    with Index.open(idx) as index:
        assert index.count() == 40 and index.failures() == []
        probe = sorted(small_folder.glob("*.png"))[7]
        assert index.search_image(probe, k=1)[0].path == str(probe)


def test_create_happens_under_the_writer_lock(tmp_path: Path) -> None:
    from searchindex.errors import IndexLockedError
    from searchindex.store.lock import WriterLock

    idx = tmp_path / "new.idx"
    idx.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from searchindex.store.lock import WriterLock\n"
        f"lock = WriterLock(Path({str(idx)!r})); lock.acquire(); print('held', flush=True); time.sleep(60)")],
        cwd=ROOT, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(IndexLockedError):
            Index.create(idx, model="tiny-shapes", device="cpu")
        assert not Index.exists(idx)
    finally:
        holder.kill()
        holder.wait()
    with WriterLock(idx):  # released with its dead holder
        pass


# -- 3: identity; an open Index follows another process's reindex -------------------------------


def test_an_open_index_follows_a_reindex_by_another_process(small_folder: Path, tmp_path: Path) -> None:
    photos = sorted(small_folder.glob("*.png"))
    later = tmp_path / "later"
    later.mkdir()
    for p in photos[30:]:
        p.rename(later / p.name)
    idx = tmp_path / "idx"
    _build(small_folder, idx)
    with Index.open(idx) as index:
        old_id = index.id
        assert index.search_image(photos[0], k=1)[0].path == str(photos[0])  # vectors loaded
        done = run_cli(["reindex", "--index", str(idx), "--model", "tiny-shapes", "--pretrained", "none",
                     "--device", "cpu", "--workers", "0"])
        assert done.returncode == 0, done.stderr
        summary = index.add_folder(later, workers=0)  # through the object opened before the swap
        assert summary.indexed == 10
        assert index.id != old_id and index.spec.pretrained == "none"
        for probe in (photos[0], later / photos[35].name):
            hit = index.search_image(probe, k=1)[0]
            assert hit.path == str(probe) and hit.score > 0.99
    with Index.open(idx) as index:  # the writes are in the index as it is now, not in a deleted catalog
        assert index.count() == 40 and index.spec.pretrained == "none"
        found = latest_vector_file(idx)
        assert found is not None
        _, header = read_vector_file(found[0], found[1], index.id, index.dim)
        assert header["count"] == 40


# -- 11: vector files are verified against the catalog ------------------------------------------


def _search_ok(idx: Path, probes: list[Path]) -> None:
    with Index.open(idx) as index:
        for probe in probes:
            hit = index.search_image(probe, k=1)[0]
            assert hit.path == str(probe) and hit.score > 0.99


def _file_ok(idx: Path) -> None:
    with Index.open(idx) as index:
        found = latest_vector_file(idx)
        assert found is not None and found[1] == index.catalog.read.generation()
        _, header = read_vector_file(found[0], found[1], index.id, index.dim)
        assert header["count"] == index.count()


def _flip_bytes(path: Path) -> None:
    data = bytearray(path.read_bytes())
    rng = np.random.default_rng(3)
    start = len(VECTOR_MAGIC) + data[len(VECTOR_MAGIC):].index(b"\n") + 1
    for pos in rng.choice(np.arange(start, len(data)), 200, replace=False):
        data[pos] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", ["flipped", "foreign", "dimension", "fewer", "legacy"])
def test_a_vector_file_that_does_not_match_is_rebuilt_from_the_catalog(
    damage: str, small_folder: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    idx = tmp_path / "idx"
    _build(small_folder, idx)
    found = latest_vector_file(idx)
    assert found is not None
    with Index.open(idx) as index:
        index_id, generation = index.id, found[1]
    if damage == "flipped":
        _flip_bytes(found[0])
    elif damage == "foreign":  # another index's file of the same generation, same model
        other = tmp_path / "other"
        (tmp_path / "otherphotos").mkdir()
        for p in sorted(small_folder.glob("*.png"))[::2]:
            (tmp_path / "otherphotos" / p.name).write_bytes(p.read_bytes())
        _build(tmp_path / "otherphotos", other)
        theirs = latest_vector_file(other)
        assert theirs is not None
        found[0].unlink()
        (idx / f"vectors-{generation:012d}.faiss").write_bytes(theirs[0].read_bytes())
    elif damage == "dimension":
        vecs = VectorIndex.empty(16)
        vecs.upsert(np.arange(1, 41), np.eye(40, 16, dtype=np.float32))
        vecs.generation = generation
        vecs.save(idx, index_id)
    elif damage == "fewer":  # our own identity and generation, but vectors missing
        vecs = VectorIndex.load(idx, index_id)
        assert vecs is not None
        vecs.remove(vecs.ids()[:5])
        vecs.save(idx, index_id)
    else:  # a file as an older searchindex wrote it: no header
        import faiss

        data = found[0].read_bytes()
        body = data[data.index(b"\n", len(VECTOR_MAGIC)) + 1:]
        found[0].write_bytes(body)
        assert faiss.read_index(str(found[0])).ntotal == 40
    probes = sorted(small_folder.glob("*.png"))[:40:7]
    with caplog.at_level(logging.WARNING, logger="searchindex"):
        _search_ok(idx, probes)
    assert any("rebuilding" in r.getMessage() for r in caplog.records)
    # `index` with nothing changed must not keep (or save) the bad file as current.
    done = run_cli(["index", str(small_folder), "--index", str(idx), "--workers", "0"])
    assert done.returncode == 0, done.stderr
    _file_ok(idx)
    _search_ok(idx, probes)


# -- 4: folders reached through links ------------------------------------------------------------


def test_linked_folders_are_followed_once_and_never_taken_for_deleted(small_folder: Path, tmp_path: Path) -> None:
    top = tmp_path / "top"
    (top / "own").mkdir(parents=True)
    photos = sorted(small_folder.glob("*.png"))
    for p in photos[:10]:
        p.rename(top / "own" / p.name)
    (top / "album").symlink_to(small_folder, target_is_directory=True)  # 30 photos, outside the tree
    (top / "own" / "loop").symlink_to(top, target_is_directory=True)  # a cycle
    (top / "again").symlink_to(top / "own", target_is_directory=True)  # a second way to a folder
    idx = tmp_path / "idx"
    with Index.create(idx, model="tiny-shapes", device="cpu") as index:
        first = index.add_folder(top, workers=0)
        assert (first.indexed, first.failed) == (40, 0)  # the linked album is indexed, the cycle ends
        paths = {r for r in index.catalog.read.all_paths()}
        assert str(top / "album" / photos[20].name) in paths
        assert not any("/loop/" in p for p in paths)
        album = index.add_folder(top / "album", workers=0)
        assert (album.indexed, album.deleted, album.unchanged) == (0, 0, 30)
        again = index.add_folder(top, workers=0)
        assert (again.deleted, again.unchanged) == (0, 40)
        # Indexed through the second way in (own's 10, and through own/loop the rest of the tree, 30 more:
        # from top/again, top is a folder not walked yet), then the tree, which walks "own" as itself and
        # skips the link "again": what was indexed through it is kept, not taken for deleted.
        via = index.add_folder(top / "again", workers=0)
        assert (via.deleted, via.duplicates, via.indexed) == (0, 40, 0)
        assert index.add_folder(top, workers=0).deleted == 0
        assert index.count() == 80
        assert {p for p in paths if p.startswith(str(top / "album"))} <= set(index.catalog.read.all_paths())


def test_an_unlistable_folder_is_not_taken_for_deleted(small_folder: Path, tmp_path: Path) -> None:
    prefix = drop_root()
    top = tmp_path / "top"
    sub = top / "sub"
    sub.mkdir(parents=True)
    for p in sorted(small_folder.glob("*.png"))[:6]:
        p.rename(sub / p.name)
    idx = tmp_path / "idx"
    _build(top, idx)
    sub.chmod(0o000)
    try:
        done = run_cli(["index", str(top), "--index", str(idx), "--workers", "0", "--json"], prefix=prefix)
    finally:
        sub.chmod(0o755)
    assert done.returncode == 0, done.stderr
    import json

    assert json.loads(done.stdout)["deleted"] == 0
    with Index.open(idx) as index:
        assert index.count() == 6


# -- 5: failures whose cause can change are retried; corrupt files are not re-decoded ------------


def test_a_file_made_readable_is_retried_and_a_corrupt_one_is_not(small_folder: Path, tmp_path: Path) -> None:
    import json

    prefix = drop_root()
    locked = sorted(small_folder.glob("*.png"))[3]
    locked.chmod(0o000)
    (small_folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 100)
    idx = tmp_path / "idx"
    args = ["index", str(small_folder), "--index", str(idx), "--workers", "0", "--json"]
    first = run_cli([*args, "--model", "tiny-shapes", "--device", "cpu"], prefix=prefix)
    assert first.returncode == 0, first.stderr
    reasons = {f["path"]: f["reason"] for f in json.loads(first.stdout)["failures"]}
    assert "Permission denied" in reasons[str(locked)] and str(small_folder / "corrupt.png") in reasons
    locked.chmod(0o644)  # fixed without changing the file's size or mtime
    second = json.loads(run_cli(args, prefix=prefix).stdout)
    assert (second["indexed"], second["failed"]) == (1, 0)  # the fixed file; the corrupt one is not re-read
    assert second["unchanged"] == 40
    with Index.open(idx) as index:
        assert index.count() == 40
        assert [f.path for f in index.failures()] == [str(small_folder / "corrupt.png")]


# -- 20: reindex through a link to the index -----------------------------------------------------


def test_reindex_through_a_linked_index_path(small_folder: Path, tmp_path: Path) -> None:
    real = tmp_path / "real.idx"
    _build(small_folder, real)
    link = tmp_path / "link.idx"
    link.symlink_to(real, target_is_directory=True)
    summary = Index.reindex(link, "tiny-shapes", "none", device="cpu", workers=0)
    assert not summary.interrupted
    assert link.is_symlink() and link.resolve() == real.resolve()
    assert real.is_dir() and not real.is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir() if ".reindex" in p.name) == []
    for opened in (link, real):
        with Index.open(opened) as index:
            assert index.spec.pretrained == "none" and index.count() == 40
