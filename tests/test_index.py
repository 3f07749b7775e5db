"""The Index life cycle: create, add, re-run, failures, vector-file catch-up."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from searchindex import (
    FolderNotFoundError,
    Index,
    IndexExistsError,
    IndexNotFoundError,
    IndexProgress,
    ModelMismatchError,
    QueryError,
)
from searchindex.demo.synthetic import iter_scenes, render
from searchindex.store.vectors.file import latest_vector_file


def _create(path: Path) -> Index:
    return Index.create(path, model="tiny-shapes", device="cpu")


def test_add_folder_then_rerun_skips_unchanged(small_folder: Path, tmp_path: Path) -> None:
    events: list[IndexProgress] = []
    with _create(tmp_path / "idx") as index:
        first = index.add_folder(small_folder, progress=events.append, batch_size=16)
        assert (first.scanned, first.indexed, first.unchanged, first.failed) == (40, 40, 0, 0)
        assert index.count() == 40
        assert [e.done for e in events] == [16, 32, 40]
        assert events[-1].total == 40
        second = index.add_folder(small_folder)
        assert (second.indexed, second.unchanged, second.failed) == (0, 40, 0)
        assert index.count() == 40


def test_unchanged_rerun_does_not_load_the_model(small_folder: Path, tmp_path: Path) -> None:
    with _create(tmp_path / "idx") as index:
        index.add_folder(small_folder)
    reopened = Index.open(tmp_path / "idx", device="cpu")
    summary = reopened.add_folder(small_folder)
    assert summary.unchanged == 40
    assert reopened.models.loaded is None  # no decode or encode happened


def test_modified_file_is_reencoded_in_place(small_folder: Path, tmp_path: Path) -> None:
    with _create(tmp_path / "idx") as index:
        index.add_folder(small_folder)
        victim, other = sorted(small_folder.glob("*.png"))[:2]
        before = index.search_image(victim, k=1)[0]
        # New content never seen before: decoded and encoded again, same row.
        render(next(iter_scenes(1, seed=31337))).save(victim)
        summary = index.add_folder(small_folder)
        assert (summary.indexed, summary.modified, summary.unchanged) == (1, 1, 39)
        hit = index.search_image(victim, k=1)[0]
        assert (hit.path, hit.image_id) == (str(victim.absolute()), before.image_id)
        assert hit.sha256 != before.sha256 and hit.score > 0.99
        # Content that another file already has: the stored embedding is copied, nothing is encoded.
        shutil.copyfile(other, victim)
        summary = index.add_folder(small_folder)
        assert (summary.indexed, summary.modified, summary.unchanged) == (0, 1, 39)
        assert index.count() == 40
        after = index.search_image(other, k=2)
        assert {r.path for r in after} == {str(victim.absolute()), str(other.absolute())}
        assert next(r for r in after if r.path == str(victim.absolute())).image_id == before.image_id


def test_corrupt_file_is_recorded_and_skipped(small_folder: Path, tmp_path: Path) -> None:
    (small_folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 a JPEG header, then nothing useful")
    (small_folder / "random.jpg").write_bytes(bytes(range(256)) * 4)
    (small_folder / "empty.png").write_bytes(b"")
    good = sorted(small_folder.glob("*.png"))[1].read_bytes()
    (small_folder / "truncated.png").write_bytes(good[: len(good) // 2])
    with _create(tmp_path / "idx") as index:
        summary = index.add_folder(small_folder)
        assert (summary.indexed, summary.failed) == (40, 4)
        reasons = {Path(f.path).name: f.reason for f in index.failures()}
        assert set(reasons) == {"broken.jpg", "random.jpg", "empty.png", "truncated.png"}
        assert reasons["empty.png"] == "empty file"
        assert reasons["random.jpg"] == "not a recognised image format"
        assert reasons["broken.jpg"].startswith("corrupt image")
        assert reasons["truncated.png"].startswith("corrupt image")
        # Failed files that did not change are not retried.
        again = index.add_folder(small_folder)
        assert (again.indexed, again.failed, again.unchanged) == (0, 0, 44)
        # A fixed file is picked up and leaves the failure list.
        (small_folder / "empty.png").write_bytes(good)
        fixed = index.add_folder(small_folder)
        # Its bytes equal a file already indexed: a duplicate, not re-encoded.
        assert (fixed.new, fixed.duplicates, fixed.indexed, fixed.failed) == (1, 1, 0, 0)
        assert len(index.failures()) == 3


def test_vector_file_is_rebuilt_or_caught_up_from_the_catalog(small_folder: Path, tmp_path: Path) -> None:
    path = tmp_path / "idx"
    files = sorted(small_folder.glob("*.png"))
    later = tmp_path / "later"
    later.mkdir()
    for f in files[30:]:
        f.rename(later / f.name)
    with _create(path) as index:
        index.add_folder(small_folder)
    stale, stale_gen = latest_vector_file(path)  # type: ignore[misc]
    saved = stale.read_bytes()
    with Index.open(path, device="cpu") as index:
        index.add_folder(later)
    newest, newest_gen = latest_vector_file(path)  # type: ignore[misc]
    assert newest_gen > stale_gen and not stale.exists()

    # A stale vector file (as left by a crash before the save) is caught up on open.
    newest.unlink()
    stale.write_bytes(saved)
    with Index.open(path, device="cpu") as index:
        hit = index.search_image(later / files[35].name, k=1)[0]
        assert hit.path == str((later / files[35].name).absolute())
    # No vector file at all: rebuilt from the catalog.
    stale.unlink()
    with Index.open(path, device="cpu") as index:
        assert index.search_image(files[3], k=1)[0].path == str(files[3].absolute())
        assert len(index.search("a circle", k=100)) == 40


def test_errors(tmp_path: Path, small_folder: Path) -> None:
    with pytest.raises(IndexNotFoundError):
        Index.open(tmp_path / "nothing-here")
    with _create(tmp_path / "idx") as index:
        with pytest.raises(FolderNotFoundError):
            index.add_folder(tmp_path / "missing")
        with pytest.raises(QueryError):
            index.search("   ")
        with pytest.raises(QueryError):
            index.search_image(tmp_path / "missing.png")
        (tmp_path / "bad.png").write_text("not an image")
        with pytest.raises(QueryError, match="not a recognised image format"):
            index.search_image(tmp_path / "bad.png")
        assert index.search("a red circle") == []  # empty index: no results, no error
        with pytest.raises(ModelMismatchError):
            index.check_model("ViT-B-32", "none")
        index.check_model("tiny-shapes", None)
    with pytest.raises(IndexExistsError):
        _create(tmp_path / "idx")


def test_index_paths_are_absolute_and_info_is_complete(small_folder: Path, tmp_path: Path) -> None:
    cwd = os.getcwd()
    os.chdir(small_folder.parent)
    try:
        with _create(Path("rel-idx")) as index:
            index.add_folder(Path(small_folder.name))
            hit = index.search("a star", k=1)[0]
            info = index.info()
    finally:
        os.chdir(cwd)
    assert Path(hit.path).is_absolute()
    assert (info.model, info.pretrained, info.dim, info.images) == ("tiny-shapes", "builtin", 64, 40)
    assert info.checkpoint_sha256 and len(info.checkpoint_sha256) == 64
    assert info.vector_bytes > 40 * 64 * 4 and info.catalog_bytes > 0
