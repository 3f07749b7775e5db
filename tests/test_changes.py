"""Change detection: every kind of change is classified, and none is re-encoded needlessly."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from searchindex import Index, IndexLockedError, QueryError
from searchindex.demo.synthetic import iter_scenes, render
from searchindex.store.lock import WriterLock


def _counts(s):  # noqa: ANN001, ANN202
    return dict(new=s.new, modified=s.modified, touched=s.touched, moved=s.moved, duplicates=s.duplicates,
                deleted=s.deleted, indexed=s.indexed, unchanged=s.unchanged, failed=s.failed)


ZERO = dict(new=0, modified=0, touched=0, moved=0, duplicates=0, deleted=0, indexed=0, unchanged=0, failed=0)


@pytest.fixture()
def index(small_folder: Path, tmp_path: Path) -> Index:
    idx = Index.create(tmp_path / "idx", model="tiny-shapes", device="cpu")
    first = idx.add_folder(small_folder)
    assert _counts(first) == {**ZERO, "new": 40, "indexed": 40}
    return idx


@pytest.fixture()
def encoded(index: Index, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The number of images the index's real encoder is given, per call (a spy on the
    loaded encoder, not a stand-in): what "not re-encoded" means, counted where it happens."""
    calls: list[int] = []
    depth = [0]
    encoder = index.models.encoder
    # Every way in (a prepared int8 tower encodes pixels itself); nested calls count once.
    for name in ("encode_batch", "encode_pixels", "encode_images"):
        real = getattr(encoder, name)

        def counting(batch, real=real):  # noqa: ANN001, ANN202
            if not depth[0]:
                calls.append(len(batch))
            depth[0] += 1
            try:
                return real(batch)
            finally:
                depth[0] -= 1

        monkeypatch.setattr(encoder, name, counting)
    return calls


def _vector(index: Index, path: Path) -> np.ndarray:
    hit = index.search_image(path, k=1)[0]
    assert hit.path == str(path.absolute())
    return index.catalog.read.embeddings([hit.image_id], index.dim)[hit.image_id]


def test_touched_file_is_not_reencoded(index: Index, small_folder: Path, encoded: list[int]) -> None:
    f = sorted(small_folder.glob("*.png"))[0]
    os.utime(f, ns=(f.stat().st_atime_ns, f.stat().st_mtime_ns + 10**9))
    s = index.add_folder(small_folder)
    assert _counts(s) == {**ZERO, "touched": 1, "unchanged": 39}
    assert encoded == []
    assert index.add_folder(small_folder).unchanged == 40


def test_moved_and_renamed_files_keep_their_rows(index: Index, small_folder: Path, encoded: list[int]) -> None:
    files = sorted(small_folder.glob("*.png"))
    ids = {r.path: r.image_id for r in index.search("a shape", k=40)}
    (small_folder / "sub").mkdir()
    files[0].rename(small_folder / "sub" / files[0].name)
    files[1].rename(small_folder / "renamed.png")
    s = index.add_folder(small_folder)
    assert _counts(s) == {**ZERO, "moved": 2, "unchanged": 38}
    assert encoded == []  # the encoder saw no image
    assert index.count() == 40
    new_ids = {r.path: r.image_id for r in index.search("a shape", k=40)}
    assert new_ids[str((small_folder / "renamed.png").absolute())] == ids[str(files[1].absolute())]
    assert str(files[0].absolute()) not in new_ids


def test_duplicates_are_encoded_once_and_both_paths_found(index: Index, small_folder: Path,
                                                          encoded: list[int]) -> None:
    files = sorted(small_folder.glob("*.png"))
    shutil.copy(files[0], small_folder / "copy-of-existing.png")
    scene = render(next(iter_scenes(1, seed=4711)))
    scene.save(small_folder / "brand-new-a.png")
    shutil.copy(small_folder / "brand-new-a.png", small_folder / "brand-new-b.png")
    s = index.add_folder(small_folder)
    # One encode for the two new copies; the copy of an indexed file is not encoded at all.
    assert _counts(s) == {**ZERO, "new": 3, "duplicates": 2, "indexed": 1, "unchanged": 40}
    assert sum(encoded) == 1  # one image given to the encoder, in all
    found = {r.path for r in index.search_image(small_folder / "brand-new-a.png", k=2)}
    assert found == {str((small_folder / n).absolute()) for n in ("brand-new-a.png", "brand-new-b.png")}
    np.testing.assert_array_equal(_vector(index, files[0]), index.catalog.read.embeddings(
        [next(r.image_id for r in index.search_image(files[0], k=2) if r.path.endswith("copy-of-existing.png"))],
        index.dim).popitem()[1])


def test_deleted_files_leave_catalog_and_vectors(index: Index, small_folder: Path) -> None:
    files = sorted(small_folder.glob("*.png"))
    for f in files[:5]:
        f.unlink()
    (small_folder / "junk.jpg").write_bytes(b"junk")
    s = index.add_folder(small_folder)
    assert _counts(s) == {**ZERO, "deleted": 5, "failed": 1, "unchanged": 35}
    (small_folder / "junk.jpg").unlink()
    assert _counts(index.add_folder(small_folder)) == {**ZERO, "unchanged": 35}
    assert index.count() == 35 and index.failures() == []  # the vanished failure is forgotten too
    assert len(index.search("a shape", k=100)) == 35
    reopened = Index.open(index.path, device="cpu")
    assert reopened.vectors.current().ntotal == 35


def test_files_outside_the_scanned_folder_are_kept(index: Index, small_folder: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    render(next(iter_scenes(1, seed=5))).save(other / "x.png")
    assert index.add_folder(other).new == 1
    assert index.add_folder(small_folder).deleted == 0
    assert index.count() == 41


def test_one_writer_at_a_time(index: Index, small_folder: Path) -> None:
    with WriterLock(index.path):
        with pytest.raises(IndexLockedError, match=rf"pid {os.getpid()} on "):
            index.add_folder(small_folder)
    assert index.add_folder(small_folder).unchanged == 40  # released: usable again


def test_a_query_image_changed_since_it_was_indexed_is_encoded_afresh(index: Index, small_folder: Path,
                                                                       encoded: list[int]) -> None:
    """search --image F (and --like F) answered with F's old embedding after F had changed."""
    files = sorted(small_folder.glob("*.png"))
    f, other = files[0], files[5]
    assert index.search_image(f, k=1)[0].path == str(f.absolute())
    assert encoded == []  # unchanged and indexed: its stored embedding, no encoding
    f.write_bytes(other.read_bytes())  # new content (and size, mtime) under the indexed name
    hits = index.search_image(f, k=2)
    assert sum(encoded) == 1
    assert hits[0].path == str(other.absolute()) and hits[0].score > 0.999  # what F shows now
    liked = index.search("a shape", k=3, like=[f])
    assert sum(encoded) == 2 and str(f.absolute()) not in {r.path for r in liked}
    # Same content, new mtime only: encoded afresh too (the stat is what is compared; no hashing).
    os.utime(other, ns=(other.stat().st_atime_ns, other.stat().st_mtime_ns + 10**9))
    assert index.search_image(other, k=1)[0].path == str(other.absolute()) and sum(encoded) == 3
    f.unlink()
    with pytest.raises(QueryError, match="cannot read query image"):
        index.search_image(f, k=1)  # gone since: said so, not answered with the old embedding
