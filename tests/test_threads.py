"""One Index shared by threads: concurrent searches agree with one thread; two writers at once do not run."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from searchindex import Filters, Index, IndexLockedError
from searchindex.results import IndexProgress

QUERIES = [f"a photo of a {c} {s}" for c in ("red", "blue", "green", "yellow") for s in ("circle", "square", "star")]


def _key(results: list) -> list[tuple[str, float]]:
    return [(r.path, round(r.score, 5)) for r in results]


def test_threads_searching_one_index_get_what_one_thread_gets(shapes_index: Path) -> None:
    with Index.open(shapes_index, device="cpu") as index:
        expected = {q: _key(index.search(q, k=20)) for q in QUERIES}
        filtered = {q: _key(index.search(q, k=5, filters=Filters(min_width=1))) for q in QUERIES}
        vector = index.embed(QUERIES[0])
        by_vector = _key(index.search_vector(vector, k=10))
    # A fresh Index: the threads also race to load the text model and open the vector file.
    with Index.open(shapes_index, device="cpu") as shared:
        barrier = threading.Barrier(6)

        def work(i: int) -> list[tuple[str, object]]:
            barrier.wait()  # every thread starts at once, on a cold index
            out: list[tuple[str, object]] = []
            for n in range(3):
                q = QUERIES[(i + n) % len(QUERIES)]
                out.append((q, _key(shared.search(q, k=20))))
                out.append(("filtered " + q, _key(shared.search(q, k=5, filters=Filters(min_width=1)))))
                out.append(("vector", _key(shared.search_vector(vector, k=10))))
            return out

        with ThreadPoolExecutor(6) as pool:
            answers = [a for batch in pool.map(work, range(6)) for a in batch]
    assert len(answers) == 54
    for what, got in answers:
        if what == "vector":
            assert got == by_vector
        elif what.startswith("filtered "):
            assert got == filtered[what.removeprefix("filtered ")], what
        else:
            assert got == expected[what], what
    assert np.isfinite(vector).all()


def test_a_second_writer_thread_is_refused_while_one_writes(small_folder: Path, tmp_path: Path) -> None:
    path = tmp_path / "idx"
    Index.create(path, model="tiny-shapes", device="cpu").close()
    writing, release = threading.Event(), threading.Event()

    def progress(p: IndexProgress) -> None:  # called under the writer lock: hold it until told
        writing.set()
        release.wait(30)

    with Index.open(path, device="cpu") as index:
        with ThreadPoolExecutor(1) as pool:
            first = pool.submit(index.add_folder, small_folder, progress=progress, batch_size=8, workers=0)
            assert writing.wait(60)
            try:
                with pytest.raises(IndexLockedError):  # the same Index, another thread
                    index.add_folder(small_folder, workers=0)
                with Index.open(path, device="cpu") as other, pytest.raises(IndexLockedError):
                    other.add_files([next(small_folder.glob("*.png"))], workers=0)
            finally:
                release.set()
            summary = first.result(timeout=120)
        assert summary.indexed == 40 and index.count() == 40
