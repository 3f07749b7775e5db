"""How this process spends its threads, and what it must not carry across ``fork()``.

Two thread pools live in a searching process: ONNX Runtime's (the text tower)
and FAISS's OpenMP team (the vector search).  Left to themselves they fight: an
ONNX Runtime session spins its idle threads after a call, OpenMP spins its team
after a parallel region, and on two cores a warm text query on 1,000 images took
20.8 ms p50 of which the 0.04 ms FAISS search took ~4 ms.  The policy, in one place:

- ONNX Runtime text sessions keep spinning after a call (:func:`spin_text`):
  once FAISS no longer starts a team for one query, nothing in the query needs
  the cores they spin on, and on a quiet machine spinning sessions answered the
  next query faster (docs/performance.md).  ``SEARCHINDEX_THREADS=sleep`` makes
  them sleep, which wins when other processes keep the cores busy.
- A FAISS call gets threads by its size (:func:`faiss_call`): one thread below
  :data:`PARALLEL_WORK` multiply-adds (a single query, a small batch: starting
  and joining a team costs more than it saves, and on a busy machine far more),
  the thread's usual OpenMP count above it (big batch searches, training,
  adding).  The count is set in the calling thread only (OpenMP's thread count
  is per thread) and restored after the call.

``SEARCHINDEX_THREADS=off`` turns the policy off (FAISS keeps its own thread
count), for measuring against it; ``SEARCHINDEX_THREADS=sleep`` adds sleeping
text sessions to it.

**Fork.**  A child made by ``fork()`` (a web server or task queue forking
workers after opening an index) inherits three things it cannot use as they are:

- the forking thread's OpenMP team, whose threads do not exist in the child: the
  child's first parallel FAISS call waits for them forever.  After a fork that
  thread runs FAISS on one thread, and :func:`faiss_call` runs a call that wants
  more on a new thread, which gets a new team;
- ONNX Runtime sessions, whose thread pools are gone: a session still runs (its
  calling thread does the work) but destroying it joins the missing threads and
  hangs, so every session made before the fork is kept alive in the child
  (:func:`keep_across_fork`);
- SQLite connections, which SQLite says a child must neither use nor close:
  their owners open new ones when :func:`forks` has changed and leave the
  inherited ones alone (:func:`abandon`).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["PARALLEL_WORK", "abandon", "faiss_call", "faiss_threads", "forks", "keep_across_fork", "policy_on",
           "spin_text"]

log = logging.getLogger(__name__)

T = TypeVar("T")

#: FAISS calls smaller than this many multiply-adds run on one thread.  2**25 is ~5 ms of one
#: core's work: a flat search of one query over 65,000 512-d vectors, or of 256 queries over
#: 256 vectors (scripts/bench_latency.py --threads measures both sides of it).
PARALLEL_WORK = 1 << 25

_forks = 0
_fork_thread: int | None = None  # the thread that called fork() in this child: its OpenMP team is gone
_live: weakref.WeakSet[Any] = weakref.WeakSet()  # objects that must not be destroyed in a forked child
_kept: list[Any] = []  # ... which the child holds here, for good


def policy_on() -> bool:
    """False when ``SEARCHINDEX_THREADS=off`` (or ``0``/``no``/``false``) switches the thread policy off."""
    return os.environ.get("SEARCHINDEX_THREADS", "").strip().lower() not in ("off", "0", "no", "false")


def spin_text() -> bool:
    """Whether an ONNX Runtime text session's idle threads spin after a call: yes, unless
    ``SEARCHINDEX_THREADS=sleep`` asks them to sleep (a machine where other work needs the cores)."""
    return os.environ.get("SEARCHINDEX_THREADS", "").strip().lower() != "sleep"


def forks() -> int:
    """How many ``fork()`` calls made this process from the one that imported this module: an object
    holding a connection or thread pool records it, and makes a new one when it has changed."""
    return _forks


def keep_across_fork(obj: T) -> T:
    """Register ``obj`` (an ONNX Runtime session) so that a forked child never destroys it; returns it."""
    _live.add(obj)
    return obj


def abandon(obj: Any) -> None:
    """Keep ``obj`` (an inherited connection) alive and unused in this forked child, instead of closing it."""
    _kept.append(obj)


def faiss_threads(work: float) -> int:
    """The OpenMP threads a FAISS call of ``work`` multiply-adds gets in this thread (0: as set)."""
    if not policy_on() or work >= PARALLEL_WORK:
        return 0
    return 1


def faiss_call(work: float, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)``, a FAISS call of about ``work`` multiply-adds, on the threads the policy gives it.

    The thread count is set for this call in this thread only and restored after
    it.  In the thread that forked this process, a call that wants a team runs
    on a new thread instead (the inherited team is gone).
    """
    want = faiss_threads(work)
    if _fork_thread is not None and _fork_thread == threading.get_ident() and want != 1:
        return _on_new_thread(fn, args, kwargs)
    if want == 0:
        return fn(*args, **kwargs)
    import faiss

    before = faiss.omp_get_max_threads()
    if before == want:
        return fn(*args, **kwargs)
    faiss.omp_set_num_threads(want)
    try:
        return fn(*args, **kwargs)
    finally:
        faiss.omp_set_num_threads(before)


def _on_new_thread(fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any]) -> T:
    """Run ``fn`` on a thread of its own (which starts its own OpenMP team) and wait for it."""
    out: list[Any] = []

    def run() -> None:
        try:
            out.append((True, fn(*args, **kwargs)))
        except BaseException as exc:  # handed to the caller as it is
            out.append((False, exc))

    worker = threading.Thread(target=run, name="faiss-after-fork")
    worker.start()
    worker.join()
    ok, value = out[0]
    if not ok:
        raise value
    return value


def _after_fork_in_child() -> None:
    global _forks, _fork_thread
    _forks += 1
    held = {id(obj): obj for obj in [*_kept, *_live]}
    _kept[:] = held.values()
    if "faiss" in sys.modules:  # else no OpenMP team of FAISS's can have been started before the fork
        _fork_thread = threading.get_ident()
        # Any parallel region in this thread would wait for the parent's team: one thread, for every
        # FAISS caller here (ours and the application's own).
        sys.modules["faiss"].omp_set_num_threads(1)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
