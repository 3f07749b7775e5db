"""A full disk or a read-only index folder gives a clear error and loses nothing."""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from searchindex import Index

from .conftest import Shapes
from .test_crash import catalog_state

ROOT = Path(__file__).resolve().parent.parent


def run_cli(args: list[str], prefix: list[str] | None = None, preexec=None) -> subprocess.CompletedProcess[str]:  # noqa: ANN001
    return subprocess.run([*(prefix or []), sys.executable, "-m", "searchindex.cli", *args], cwd=ROOT,
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
                          preexec_fn=preexec, check=False)


def drop_root() -> list[str]:
    """A command prefix under which permissions apply, even when the tests run as root."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without util-linux setpriv")
    caps = "-dac_override,-dac_read_search,-fowner"  # root ignores permissions unless it drops these
    return [setpriv, f"--bounding-set={caps}", f"--inh-caps={caps}"]


@pytest.fixture()
def two_folders(shapes: Shapes, tmp_path: Path) -> tuple[Path, Path]:
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    files = sorted(shapes.folder.glob("*.png"))
    for f in files[:40]:
        shutil.copy2(f, first / f.name)
    for f in files[40:400]:
        shutil.copy2(f, second / f.name)
    return first, second


def test_full_disk_is_a_clear_error_and_keeps_what_was_committed(two_folders: tuple[Path, Path],
                                                                  tmp_path: Path) -> None:
    first, second = two_folders
    idx = tmp_path / "idx"
    with Index.create(idx, model="tiny-shapes", device="cpu") as index:
        index.add_folder(first)
    before = catalog_state(idx)
    limit = max(p.stat().st_size for p in idx.iterdir() if p.is_file()) + 16_384

    def small_disk() -> None:  # every file the indexer writes may grow only this far
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    res = run_cli(["index", str(second), "--index", str(idx), "--batch-size", "16"], preexec=small_disk)
    assert res.returncode == 1, res.stdout + res.stderr
    assert f"cannot write the index at {idx}" in res.stderr
    assert "Traceback" not in res.stderr
    after = catalog_state(idx)  # openable and consistent
    assert {p: v for p, v in after.items() if p in before} == before  # nothing lost
    res = run_cli(["index", str(second), "--index", str(idx)])  # space again: finishes
    assert res.returncode == 0, res.stderr
    assert len(catalog_state(idx)) == 400


def test_read_only_index_folder_is_a_clear_error(two_folders: tuple[Path, Path], tmp_path: Path) -> None:
    first, second = two_folders
    idx = tmp_path / "idx"
    with Index.create(idx, model="tiny-shapes", device="cpu") as index:
        index.add_folder(first)
    before = catalog_state(idx)
    prefix = drop_root()
    os.chmod(idx, 0o555)
    for p in idx.iterdir():
        os.chmod(p, 0o444)
    try:
        res = run_cli(["index", str(second), "--index", str(idx)], prefix=prefix)
        assert res.returncode == 1, res.stdout + res.stderr
        assert f"cannot write the index at {idx}" in res.stderr and "Traceback" not in res.stderr
        res = run_cli(["repair", "--index", str(idx)], prefix=prefix)  # the writer lock cannot be made
        assert res.returncode == 1, res.stdout + res.stderr
        assert f"cannot write the index at {idx}" in res.stderr and "Traceback" not in res.stderr
        res = run_cli(["search", "a red circle", "--index", str(idx), "--paths"], prefix=prefix)
        assert res.returncode == 0 and len(res.stdout.splitlines()) == 10  # still searchable
    finally:
        os.chmod(idx, 0o755)
        for p in idx.iterdir():
            os.chmod(p, 0o644)
    assert catalog_state(idx) == before


def test_a_reindex_stopped_by_a_full_disk_is_reported_and_removed_by_repair(two_folders: tuple[Path, Path],
                                                                           tmp_path: Path) -> None:
    first, _ = two_folders
    idx = tmp_path / "idx"
    with Index.create(idx, model="tiny-shapes", device="cpu") as index:
        index.add_folder(first)
    before = catalog_state(idx)
    limit = 64_000

    def small_disk() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    res = run_cli(["reindex", "--index", str(idx), "--model", "tiny-shapes", "--pretrained", "none",
                "--batch-size", "8"], preexec=small_disk)
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stdout + res.stderr
    staging = tmp_path / ".idx.reindex"
    assert staging.is_dir()
    res = run_cli(["check", "--index", str(idx), "--json"])
    assert res.returncode == 0, res.stdout + res.stderr
    (finding,) = [f for f in __import__("json").loads(res.stdout)["findings"] if f["area"] == "reindex"]
    assert str(staging) in finding["message"] and "searchindex repair" in finding["message"]
    res = run_cli(["repair", "--index", str(idx)])
    assert res.returncode == 0 and f"unfinished reindex left in {staging}" in res.stdout, res.stdout + res.stderr
    assert not staging.exists() and catalog_state(idx) == before


def test_indexed_photos_under_a_folder_that_cannot_be_entered_are_kept(shapes: Shapes, tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    sub = photos / "sub"
    sub.mkdir(parents=True)
    for f in sorted(shapes.folder.glob("*.png"))[:6]:
        shutil.copy2(f, (sub if int(f.stem[-1]) % 2 else photos) / f.name)
    idx = tmp_path / "idx"
    with Index.create(idx, model="tiny-shapes", device="cpu") as index:
        index.add_folder(photos, workers=0)
        total = index.count()
    prefix = drop_root()
    for mode in (0o444, 0o000):  # listed but not enterable; neither listed nor entered
        os.chmod(sub, mode)
        try:
            res = run_cli(["index", str(photos), "--index", str(idx)], prefix=prefix)
            assert res.returncode == 0, res.stdout + res.stderr
        finally:
            os.chmod(sub, 0o755)
        with Index.open(idx) as index:
            assert index.count() == total, mode
