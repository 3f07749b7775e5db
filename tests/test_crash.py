"""Crash safety: SIGKILL at random moments never corrupts the index, and a re-run
finishes with exactly the state of a clean run.  Searching from another process
while indexing runs never fails."""

from __future__ import annotations

import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from searchindex import Index

from .conftest import Shapes

ROOT = Path(__file__).resolve().parent.parent
N_IMAGES = 240
TRIALS = 10


def _indexer(folder: Path, index: Path, batch_size: int = 4) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "searchindex.cli", "index", str(folder), "--index", str(index),
           "--model", "tiny-shapes", "--device", "cpu", "--batch-size", str(batch_size), "--workers", "2"]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})


def catalog_rows(index: Path) -> int:
    try:
        con = sqlite3.connect(f"file:{index / 'catalog.sqlite'}?mode=ro", uri=True, timeout=5)
        try:
            return con.execute("SELECT count(*) FROM images").fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error:
        return 0


def catalog_state(index_path: Path) -> dict[str, tuple[object, ...]]:
    """Catalog content a clean run must reproduce, after checking the invariants."""
    with Index.open(index_path, device="cpu") as index:
        cat = index.catalog
        states = cat.read.image_states()
        ids = sorted(i for i, *_ in states.values())
        assert len(set(ids)) == len(ids) == cat.read.image_count()
        vectors = index.vectors.current()  # caught up from the catalog
        np.testing.assert_array_equal(vectors.ids(), np.array(ids, dtype=np.int64))
        stored = cat.read.embeddings(ids, index.dim)
        for i in ids[:: max(1, len(ids) // 20)]:
            np.testing.assert_allclose(vectors.reconstruct(i), stored[i], atol=1e-6)
        facts = cat.read.records(ids)
        return {p: (sz, mt, sha, facts[i].width, facts[i].height, tuple(np.round(stored[i], 4)))
                for p, (i, sz, mt, sha) in states.items()}


@pytest.fixture(scope="module")
def corpus(shapes: Shapes, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("crash-corpus")
    for src in sorted(shapes.folder.glob("*.png"))[:N_IMAGES]:
        shutil.copy2(src, out / src.name)
    (out / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0garbage")
    return out


@pytest.fixture(scope="module")
def clean_state(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[object, ...]]:
    path = tmp_path_factory.mktemp("clean") / "idx"
    with Index.create(path, model="tiny-shapes", device="cpu") as index:
        summary = index.add_folder(corpus, batch_size=4)
    assert (summary.indexed, summary.failed) == (N_IMAGES, 1)
    return catalog_state(path)


def test_sigkill_at_random_points_then_resume(corpus: Path, clean_state: dict, tmp_path: Path) -> None:
    rng = random.Random(20261123)
    outcomes = []
    for trial in range(TRIALS):
        path = tmp_path / f"trial{trial}"
        if trial % 2 == 0:
            # Kill once a random number of rows is committed (mid-run, between or during commits).
            Index.create(path, model="tiny-shapes", device="cpu").close()
            target = rng.randrange(1, N_IMAGES)
            proc = _indexer(corpus, path)
            deadline = time.monotonic() + 120
            while catalog_rows(path) < target and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.002)
        elif trial == 1:
            # Kill during start-up: possibly while the subprocess creates the index.
            target = -1
            proc = _indexer(corpus, path)
            time.sleep(rng.uniform(0.2, 3.0))
        else:
            # Kill a random time after the first commit: mid-batch, during the deletion
            # pass, while the vector file is written, or just after.
            target = -2
            Index.create(path, model="tiny-shapes", device="cpu").close()
            proc = _indexer(corpus, path)
            while catalog_rows(path) < 1 and proc.poll() is None:
                time.sleep(0.002)
            time.sleep(rng.uniform(0.0, 1.5))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        committed = catalog_rows(path)
        outcomes.append((trial, target, committed, proc.returncode))
        if Index.exists(path):
            catalog_state(path)  # openable and consistent right after the kill
            index = Index.open(path, device="cpu")
        else:
            index = Index.create(path, model="tiny-shapes", device="cpu")
        with index:
            index.add_folder(corpus, batch_size=4)
        assert catalog_state(path) == clean_state, f"trial {trial} differs from a clean run"
    print("\n(trial, kill at rows, rows committed at kill, exit code):", outcomes)
    killed_mid_run = [o for o in outcomes if 0 < o[2] < N_IMAGES]
    assert len(killed_mid_run) >= TRIALS // 2, outcomes


def test_search_from_another_process_while_indexing(corpus: Path, tmp_path: Path) -> None:
    path = tmp_path / "idx"
    first = tmp_path / "first"
    first.mkdir()
    for f in sorted(corpus.glob("*.png"))[:20]:
        shutil.copy2(f, first / f.name)
    with Index.create(path, model="tiny-shapes", device="cpu") as index:
        index.add_folder(first)
    proc = _indexer(corpus, path, batch_size=2)
    searches, errors, sizes = 0, [], []
    with Index.open(path, device="cpu") as reader:
        while proc.poll() is None or searches < 5:
            try:
                sizes.append(len(reader.search("a red circle", k=500)))
                searches += 1
            except Exception as exc:  # noqa: BLE001 - any failure counts
                errors.append(repr(exc))
        assert proc.wait() == 0, proc.stderr.read().decode() if proc.stderr else ""
        assert errors == []
        assert searches >= 5 and sizes[0] == 20 and sizes[-1] == 20 + N_IMAGES
        assert sizes == sorted(sizes)  # the reader sees the index grow, never shrink
