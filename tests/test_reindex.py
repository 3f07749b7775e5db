"""`reindex` re-embeds an index with another model and swaps it in atomically; it resumes."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from searchindex import Index
from searchindex.cli import cli
from searchindex.results import IndexProgress


def _build(folder: Path, idx: Path) -> None:
    with Index.create(idx, model="tiny-shapes", device="cpu") as index:
        index.add_folder(folder)


def _stored(idx: Path) -> dict[str, np.ndarray]:
    with Index.open(idx) as index:
        rows = index.catalog.read.image_states()
        vecs = index.catalog.read.embeddings([r[0] for r in rows.values()], index.dim)
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
        labels = {lab.name: lab for lab in index.catalog.read.tag_labels()}  # rebuilt with the new text tower
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


# -- a reindex killed at each step of its folder swap ------------------------------------------------

ROOT = Path(__file__).resolve().parents[1]
_REINDEX = ("import sys; from searchindex import Index; "
            "Index.reindex(sys.argv[1], 'tiny-shapes', sys.argv[2], device='cpu', workers=0)")


def _killed_reindex(idx: Path, pretrained: str, at: str | None) -> int:
    """Reindex ``idx`` in a child process killed (SIGKILL) at the step ``at``; returns its exit code."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if at is not None:
        env["SEARCHINDEX_CRASH_AT"] = at
    return subprocess.run([sys.executable, "-c", _REINDEX, str(idx), pretrained], env=env, cwd=ROOT,
                          capture_output=True, check=False).returncode


def _user_files(idx: Path) -> dict[str, bytes]:
    return {str(p.relative_to(idx)): p.read_bytes() for p in sorted(idx.rglob("*"))
            if p.is_file() and p.relative_to(idx).parts[0] in ("photos", "notes.txt")}


@pytest.fixture()
def index_with_photos_inside(small_folder: Path, tmp_path: Path) -> tuple[Path, dict[str, bytes]]:
    """An index whose folder also holds the user's ``photos/`` (indexed) and ``notes.txt``."""
    idx = tmp_path / "idx"
    _fill_with_photos_inside(idx, small_folder)
    return idx, _user_files(idx)


def _fill_with_photos_inside(idx: Path, small_folder: Path) -> None:
    """Make ``idx`` an index that also holds the user's ``photos/`` (6 of them, indexed) and ``notes.txt``."""
    Index.create(idx, model="tiny-shapes", device="cpu").close()
    photos = idx / "photos"
    photos.mkdir()
    for src in sorted(small_folder.glob("*.png"))[:6]:
        shutil.copy2(src, photos / src.name)
    (idx / "notes.txt").write_text("mine")
    with Index.open(idx, device="cpu") as index:
        assert index.add_folder(photos, workers=0).indexed == 6


@pytest.mark.parametrize("at", ["staged", "marked", "swapped", "carried", "cleaned"])
@pytest.mark.parametrize("then", ["reindex", "repair", "other-model"])
def test_a_reindex_killed_at_any_step_keeps_the_users_files(
        index_with_photos_inside: tuple[Path, dict[str, bytes]], at: str, then: str) -> None:
    idx, files = index_with_photos_inside
    staging = idx.parent / ".idx.reindex"
    assert _killed_reindex(idx, "none", at) == -signal.SIGKILL
    if at in ("staged", "marked"):  # before the exchange: nothing of the user's moved
        assert _user_files(idx) == files
    report = Index.check(idx)
    assert report.ok, report.findings
    unfinished = [f for f in report.findings if f.area == "reindex"]
    assert unfinished and "searchindex" in unfinished[0].message
    assert not [f for f in report.findings if f.area == "files"]  # nothing called missing
    if then == "repair":
        Index.repair(idx)
    else:  # the same model resumes; another one starts over: both first settle the swap
        assert _killed_reindex(idx, "none" if then == "reindex" else "builtin", None) == 0
    assert _user_files(idx) == files
    assert not staging.exists() and not (idx / "reindex-swap").exists()
    with Index.open(idx, device="cpu") as index:
        assert index.count() == 6
        assert index.spec.pretrained == ("builtin" if then == "other-model" or (then == "repair" and at in (
            "staged", "marked")) else "none")
    assert Index.check(idx).ok and not [f for f in Index.check(idx).findings if f.area in ("reindex", "files")]


def test_a_swap_killed_inside_the_three_rename_exchange_is_settled(
        index_with_photos_inside: tuple[Path, dict[str, bytes]]) -> None:
    """Without renameat2 the swap is three renames through ``NAME.old``: killed after the first
    (the index folder missing) or the second (the old index still aside)."""
    idx, files = index_with_photos_inside
    staging, aside = idx.parent / ".idx.reindex", idx.parent / "idx.old"
    for step in ("exchange-1", "exchange-2"):
        Index.create(staging, model="tiny-shapes", pretrained="none", device="cpu").close()
        (staging / "reindex-swap").write_bytes(b"")
        os.rename(idx, aside)
        if step == "exchange-2":
            os.rename(staging, idx)
        Index.repair(idx)  # undoes the first case (then drops the unfinished new index), finishes the second
        assert _user_files(idx) == files and not aside.exists() and not staging.exists()
        assert not (idx / "reindex-swap").exists()
        with Index.open(idx) as index:
            # The new index here is an empty stand-in; the old one holds the six photos.
            assert (index.spec.pretrained, index.count()) == (("none", 0) if step == "exchange-2" else ("builtin", 6))


def test_a_mount_point_is_recognised(tmp_path: Path) -> None:
    from searchindex.store.swap import is_mount_point, staging_folder

    assert is_mount_point(Path("/proc"))  # a mount point every Linux has
    assert not is_mount_point(tmp_path)
    assert staging_folder(tmp_path / "idx") == tmp_path / ".idx.reindex"  # the ordinary swap: beside it
    assert staging_folder(Path("/proc")) == Path("/proc/.reindex")


def test_the_inner_staging_folder_is_the_index_s_own_and_never_scanned(small_folder: Path, tmp_path: Path) -> None:
    from searchindex.ingest.scan import scan_folders
    from searchindex.store.folder import remove_index_files, strangers

    idx = tmp_path / "idx"
    _build(small_folder, idx)
    shutil.copy2(sorted(small_folder.glob("*.png"))[0], idx / "mine.png")
    Index.create(idx / ".reindex", model="tiny-shapes", pretrained="none", device="cpu").close()
    shutil.copy2(sorted(small_folder.glob("*.png"))[1], idx / ".reindex" / "x.png")  # as a thumbnail would be
    assert [Path(e.path).name for e in scan_folders([idx])] == ["mine.png"]
    assert strangers(idx) == [".reindex", "mine.png"]  # a staging folder holding a stranger's file is one too
    (idx / ".reindex" / "x.png").unlink()
    assert strangers(idx) == ["mine.png"]
    assert remove_index_files(idx) == ["mine.png"] and sorted(os.listdir(idx)) == ["mine.png"]


@pytest.fixture()
def mounted_index(small_folder: Path, tmp_path: Path) -> Iterator[tuple[Path, dict[str, bytes]]]:
    """An index whose folder is a mount point (tmpfs), holding the user's ``photos/`` (indexed) and ``notes.txt``."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    idx = tmp_path / "idx"
    idx.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "none", str(idx)], capture_output=True, text=True, check=False)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.strip()}")
    try:
        _fill_with_photos_inside(idx, small_folder)
        yield idx, _user_files(idx)
    finally:
        subprocess.run(["umount", "-l", str(idx)], check=False)


def _consistent_and_searchable(idx: Path, files: dict[str, bytes], pretrained: str, count: int = 6) -> None:
    assert _user_files(idx) == files
    from searchindex.store.folder import strangers

    assert strangers(idx) == ["notes.txt", "photos"] and not (idx / ".reindex").exists()
    assert len([n for n in os.listdir(idx) if n.startswith("vectors-")]) <= 1
    with Index.open(idx, device="cpu") as index:
        assert index.count() == count and index.spec.pretrained == pretrained
        probe = sorted((idx / "photos").glob("*.png"))[3]
        assert index.search_image(probe, k=1)[0].path == str(probe)
        assert index.search("a photo of a red circle", k=3)
    report = Index.check(idx)
    assert report.ok and not [f for f in report.findings if f.area in ("reindex", "files", "vectors")], \
        report.findings


def test_reindex_of_a_mount_point_stages_inside_it(mounted_index: tuple[Path, dict[str, bytes]]) -> None:
    from searchindex.store.swap import is_mount_point

    idx, files = mounted_index
    assert is_mount_point(idx)
    before = _stored(idx)
    summary = Index.reindex(idx, "tiny-shapes", "none", device="cpu", workers=0)
    assert (summary.indexed, summary.failed, summary.interrupted) == (6, 0, False)
    assert not (idx.parent / ".idx.reindex").exists()
    _consistent_and_searchable(idx, files, "none")
    after = _stored(idx)
    assert after.keys() == before.keys() and all(not np.allclose(after[p], before[p]) for p in after)


def test_a_mount_point_s_swap_waits_for_an_open_index_and_then_needs_no_work(
        mounted_index: tuple[Path, dict[str, bytes]]) -> None:
    """The file-by-file swap needs every WAL closed: an index held open (as `serve` holds it) stops
    it with a clear error before anything moves, and the next run swaps the finished new index in."""
    from searchindex.errors import IndexLockedError

    idx, files = mounted_index
    with Index.open(idx, device="cpu") as served:
        assert served.search("a photo of a red circle", k=3)
        with pytest.raises(IndexLockedError, match="has the index .* open"):
            Index.reindex(idx, "tiny-shapes", "none", device="cpu", workers=0)
        assert served.info().pretrained == "builtin" and served.search("a photo of a red circle", k=3)
    assert (idx / ".reindex").is_dir() and not (idx / "reindex-swap-files").exists()
    assert _user_files(idx) == files
    second = Index.reindex(idx, "tiny-shapes", "none", device="cpu", workers=0)
    assert (second.indexed, second.unchanged) == (0, 6)  # nothing re-embedded
    _consistent_and_searchable(idx, files, "none")


@pytest.mark.parametrize("at", ["mount-marked", "mount-moved"])
def test_an_index_run_after_a_killed_mount_point_swap_finishes_it_first(
        mounted_index: tuple[Path, dict[str, bytes]], small_folder: Path, at: str) -> None:
    """Written into the old catalog, a new photo's row would be deleted with it by the swap's end."""
    idx, files = mounted_index
    assert _killed_reindex(idx, "none", at) == -signal.SIGKILL
    extra = sorted(small_folder.glob("*.png"))[10]
    shutil.copy2(extra, idx / "photos" / extra.name)
    with Index.open(idx, device="cpu") as index:
        summary = index.add_folder(idx / "photos", workers=0)
        assert (summary.indexed, summary.unchanged) == (1, 6)
    assert not (idx / "reindex-swap-files").exists() and not (idx / ".reindex").exists()
    _consistent_and_searchable(idx, _user_files(idx), "none", count=7)


# Two kills run by default (mid-move, settled by repair; catalog replaced, settled by the next reindex);
# every step with both ways of finishing runs with -m slow.
_MOUNT_KILLS = [pytest.param(at, then, marks=() if (at, then) in {("mount-moved", "repair"),
                                                                   ("mount-replaced", "reindex")} else pytest.mark.slow)
                for at in ("staged", "mount-closed", "mount-marked", "mount-moved", "mount-replaced", "mount-cleaned")
                for then in ("reindex", "repair")]


@pytest.mark.parametrize(("at", "then"), _MOUNT_KILLS)
def test_a_reindex_of_a_mount_point_killed_at_any_step_is_finished(
        mounted_index: tuple[Path, dict[str, bytes]], at: str, then: str) -> None:
    idx, files = mounted_index
    assert _killed_reindex(idx, "none", at) == -signal.SIGKILL
    assert _user_files(idx) == files  # nothing of the user's ever moves inside a mount point
    report = Index.check(idx)
    assert report.ok, report.findings
    unfinished = [f for f in report.findings if f.area == "reindex"]
    assert unfinished and "searchindex" in unfinished[0].message
    assert not [f for f in report.findings if f.area == "files"]  # nothing called missing
    with Index.open(idx, device="cpu") as index:  # readable meanwhile, with the old or the new model's vectors
        probe = sorted((idx / "photos").glob("*.png"))[3]
        assert index.count() == 6 and index.search_image(probe, k=1)[0].path == str(probe)
    if then == "repair":
        Index.repair(idx)
    else:
        assert _killed_reindex(idx, "none", None) == 0
    assert not (idx / ".reindex").exists() and not (idx / "reindex-swap-files").exists()
    # Killed before its journal was written, the new index is unfinished: repair drops it, a reindex swaps it in.
    _consistent_and_searchable(idx, files, "builtin" if then == "repair" and at in ("staged", "mount-closed")
                               else "none")


def test_an_open_index_describes_the_model_of_another_instances_reindex(small_folder: Path, tmp_path: Path) -> None:
    idx = tmp_path / "idx"
    _build(small_folder, idx)
    with Index.open(idx) as served:  # as `serve` holds it: /api/info is served.info()
        assert served.info().pretrained == "builtin"
        Index.reindex(idx, "tiny-shapes", "none", device="cpu", workers=0)
        assert served.info().pretrained == "none" and served.count() == 40 and served.failures() == []
