"""Worker processes started after an Index was opened and used (a web server or task queue
forking its workers) search like the parent, with every start method, and never hang.

A forked child inherits FAISS's OpenMP team without its threads, ONNX Runtime sessions
without their thread pools and the parent's SQLite connections (see searchindex.threads).
Each child runs under a timeout, so a hang fails the test instead of stopping the suite.
"""

from __future__ import annotations

import math
import multiprocessing
import queue
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from searchindex import Index
from searchindex.threads import PARALLEL_WORK

#: The index a forked child inherits (spawned children open their own).
_OPEN: Index | None = None
_TIMEOUT = 120.0


def _big_batch(index: Index) -> np.ndarray:
    """Queries enough for a search that the thread policy gives an OpenMP team."""
    vecs = index.vectors.current()
    n = math.ceil(PARALLEL_WORK / (vecs.ntotal * vecs.dim)) + 1
    q = np.random.default_rng(0).standard_normal((n, vecs.dim)).astype(np.float32)
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def _child(path: str, out: Any) -> None:
    """Search in a worker: a text query, a batch big enough for threads, then close."""
    try:
        index = _OPEN if _OPEN is not None else Index.open(Path(path), device="cpu")
        hits = [str(r.path) for r in index.search("a blue square", k=5)]
        _, ids = index.vectors.current().search(_big_batch(index), 3)
        count = index.count()
        index.close()
        out.put(("ok", hits, ids.tolist(), count))
    except BaseException as exc:  # reported to the parent, which fails the test with it
        out.put(("error", repr(exc), [], 0))


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_a_worker_started_after_the_index_was_used_searches_like_the_parent(small_index: Path, method: str) -> None:
    global _OPEN
    if method not in multiprocessing.get_all_start_methods():
        pytest.skip(f"no {method} start method here")
    ctx = multiprocessing.get_context(method)
    with Index.open(small_index, device="cpu") as index:
        # The parent has used everything a child inherits: the text tower (one query: its
        # session is remade with repacked weights at the next), FAISS with a thread team in
        # this thread, the catalog's connections.
        index.search("a red circle", k=5)
        batch = _big_batch(index)
        _, want_ids = index.vectors.current().search(batch, 3)
        _OPEN = index
        try:
            out = ctx.Queue()
            proc = ctx.Process(target=_child, args=(str(small_index), out))
            proc.start()
            try:
                result = out.get(timeout=_TIMEOUT)
            except queue.Empty:
                result = None
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()
                proc.join()
        finally:
            _OPEN = None
        assert result is not None, f"the {method} child hung (no answer in {_TIMEOUT:.0f} s)"
        status, hits, ids, count = result
        assert status == "ok", hits
        assert proc.exitcode == 0
        assert hits == [str(r.path) for r in index.search("a blue square", k=5)]
        assert ids == want_ids.tolist()
        assert count == index.count() == 40
        # The parent goes on working after its child is gone.
        assert index.search("a green triangle", k=3)


def test_faiss_calls_get_threads_by_their_size_and_the_count_is_restored(monkeypatch: pytest.MonkeyPatch) -> None:
    import faiss

    from searchindex.threads import faiss_call

    seen: list[int] = []

    def probe() -> None:  # stands for a FAISS call: what OpenMP count would it run with?
        seen.append(faiss.omp_get_max_threads())

    before = faiss.omp_get_max_threads()
    faiss_call(1000 * 512, probe)  # one query over 1,000 vectors
    faiss_call(PARALLEL_WORK * 4, probe)  # a batch search, a build
    monkeypatch.setenv("SEARCHINDEX_THREADS", "off")
    faiss_call(1000 * 512, probe)
    assert seen == [1, before, before]
    assert faiss.omp_get_max_threads() == before


@pytest.mark.parametrize("policy", ["on", "off", "sleep"])
def test_text_sessions_sleep_between_queries_only_when_asked(small_index: Path, policy: str,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEARCHINDEX_THREADS", policy)
    with Index.open(small_index, device="cpu") as index:
        for text in ("a red circle", "a blue square"):  # the second runs on the repacked session
            index.search(text, k=5)
        encoder = index.models._text_encoder
        assert encoder is not None, "the ONNX text tower was not used"
        options = encoder._session.get_session_options()
        try:
            spinning = options.get_session_config_entry("session.intra_op.allow_spinning") != "0"
        except RuntimeError:  # not set: ONNX Runtime's default is to spin
            spinning = True
        assert spinning == (policy != "sleep")
