"""The decode worker processes: safe in any host program, gone when their parent is gone.

Two promises, both tested with real processes (``tests/test_processes.py``):

1. **The library works from any program**: a script with no
   ``if __name__ == "__main__":`` guard, ``python -c``, a notebook, a web
   server.  The ``spawn`` and ``forkserver`` start methods run the parent's main
   script again in every worker (as ``__mp_main__``), so an unguarded script
   would start indexing again inside each worker and the pool would break.  On
   Linux the workers are therefore *forked*: a forked child runs no main module
   again and needs nothing pickled but its tasks.  Forking a process that has
   threads is safe here because a worker only runs this package's readers
   (file I/O, hashlib, Pillow, NumPy array copies): it never touches torch,
   the catalog connection, or a lock some other thread may hold.  Other
   systems keep ``spawn`` (fork is unsafe on macOS), where a script must guard
   its entry point as multiprocessing documents.

2. **Workers never outlive their parent**: each worker asks the kernel to kill
   it when its parent dies (``PR_SET_PDEATHSIG`` on Linux), and elsewhere a
   watchdog thread ends it once its parent process is gone.  So a
   ``kill -9`` of ``searchindex index`` leaves no worker behind (the issue
   found them alive 80 minutes later).  Workers ignore SIGINT and SIGTERM: a
   Ctrl-C or ``kill`` of the process group is the parent's to handle, and it
   finishes the batch in flight, which needs its workers.

A forked child inherits the parent's uncollected garbage, ONNX Runtime sessions
and torch objects included; if the child's garbage collector finalised them,
their destructors would join thread pools that do not exist in the child and
hang or crash it.  So the parent collects and *freezes* its objects
(``gc.freeze``) while it forks the workers, all at once when the pool is made:
the children never collect what they inherited.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any

__all__ = ["start_method", "worker_pool"]

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


def start_method() -> str:
    """How worker processes start here: ``fork`` on Linux, ``spawn`` elsewhere."""
    return "fork" if sys.platform.startswith("linux") else "spawn"


def _die_with_parent(parent: int) -> None:
    """End this process when ``parent`` (the pid that started it) exits."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0:
                if os.getppid() != parent:  # the parent died before the request took effect
                    os._exit(1)
                return
        except (OSError, AttributeError):
            pass
        log.debug("PR_SET_PDEATHSIG unavailable; watching the parent instead")

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()


def _bootstrap(parent: int, initializer: Callable[..., None] | None, initargs: tuple[Any, ...]) -> None:
    gc.freeze()  # what this worker inherited is never finalised here (see the module's docstring)
    _die_with_parent(parent)
    # Ctrl-C and SIGTERM are the parent's to handle (it finishes the batch in flight).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if initializer is not None:
        initializer(*initargs)


def worker_pool(workers: int, initializer: Callable[..., None] | None = None,
                initargs: tuple[Any, ...] = ()) -> ProcessPoolExecutor:
    """A process pool of ``workers`` whose processes die with this one and re-run no main script."""
    method = start_method()
    context = multiprocessing.get_context(method)
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_bootstrap,
                               initargs=(os.getpid(), initializer, initargs))
    if method == "fork":
        # With fork, the pool starts every worker at its first task: start them now, with the
        # parent's garbage collected and the rest frozen, so no child finalises what it inherited.
        gc.collect()
        gc.freeze()
        try:
            pool.submit(_ready).result()
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        finally:
            gc.unfreeze()
    return pool


def _ready() -> None:
    """A first task that makes the pool start its workers."""
