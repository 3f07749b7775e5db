"""The folder swap of a reindex, made safe to interrupt at any point.

A reindex builds the new index in a staging folder beside the old one
(:func:`staging_folder`), then exchanges the two folders.  Other people's files
kept in the index folder travel with the old folder in that exchange and must
be carried back, one rename each; a kill in between would leave them in the
hidden staging folder.  So the swap is journalled by a mark file
(:data:`~searchindex.store.folder.SWAP_MARK`):

1. the mark is written into the new index (the staging folder);
2. the folders are exchanged, so the mark is now in the index folder;
3. other people's files are carried from the staging folder back into the index folder;
4. the old index's own files are deleted, then the staging folder if empty;
5. the mark is deleted.

:func:`settle_swap` (run by every reindex and ``repair`` before anything else)
finishes steps 3 to 5 when the mark is in the index folder, and drops a mark
still in the staging folder (killed before the exchange: the staging folder is a
resumable new index and the user's files never moved).
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import signal
from dataclasses import dataclass
from pathlib import Path

from ..errors import IndexFolderError
from .folder import SWAP_MARK, holds_index, remove_index_files, strangers

__all__ = ["Unfinished", "crash_point", "exchange", "refuse_mount_point", "settle_swap", "staging_folder",
           "unfinished_reindex"]

log = logging.getLogger(__name__)

#: Set to a step's name (see :func:`crash_point`), this kills the process there: how the tests
#: interrupt a reindex at each step of its swap, as a power cut or ``kill -9`` would.
CRASH_ENV = "SEARCHINDEX_CRASH_AT"


def crash_point(name: str) -> None:
    """Die at once (SIGKILL, no clean-up) when ``$SEARCHINDEX_CRASH_AT`` names this step."""
    if os.environ.get(CRASH_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


def staging_folder(folder: Path) -> Path:
    """Where the new index of ``folder`` is built: ``.NAME.reindex`` beside it."""
    return folder.parent / f".{folder.name}.reindex"


def refuse_mount_point(folder: Path) -> None:
    """Raise :class:`~searchindex.errors.IndexFolderError` when ``folder`` is a mount point (or on
    another device than its parent): its folder cannot be swapped with one beside it."""
    try:
        mine, parent = os.stat(folder).st_dev, os.stat(folder.parent).st_dev
    except OSError:
        return
    if mine != parent or os.path.ismount(folder):
        raise IndexFolderError(
            f"{folder} is a mount point: a reindex builds the new index beside it and swaps the two folders, "
            "which a mount point cannot do; keep the index in a folder inside the mount "
            "(move its files into a sub-folder and give that as --index), then reindex"
        )


def _step_aside(folder: Path) -> Path:
    return folder.with_name(folder.name + ".old")


def exchange(a: Path, b: Path) -> None:
    """Swap two folders: atomically where the OS can (Linux renameat2), else by three renames
    (through ``B.old``, which :func:`settle_swap` knows)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        renameat2 = None
    if renameat2 is not None:
        at_fdcwd, rename_exchange = -100, 2
        if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
            return
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
            raise OSError(err, os.strerror(err), str(b))
    aside = _step_aside(b)
    os.rename(b, aside)
    crash_point("exchange-1")
    os.rename(a, b)
    crash_point("exchange-2")
    os.rename(aside, a)


def swap_in(staging: Path, folder: Path) -> None:
    """Steps 1 to 5 of the module docstring: make ``staging`` (a complete new index) the index at
    ``folder``, carrying other people's files over; returns once nothing of the old index is left."""
    mark = staging / SWAP_MARK
    with open(mark, "wb") as fh:
        fh.write(b"a reindex is swapping this folder in; searchindex repair finishes it\n")
        fh.flush()
        os.fsync(fh.fileno())
    crash_point("marked")
    exchange(staging, folder)
    crash_point("swapped")
    _finish(folder, staging)


def _finish(folder: Path, staging: Path) -> None:
    """Steps 3 to 5: carry other people's files home, delete the old index, then the mark."""
    if staging.is_dir() and not staging.is_symlink():
        for name in strangers(staging):
            if os.path.lexists(folder / name):  # never overwrite: a file of the same name came meanwhile
                log.warning("left %s in %s: %s already holds a file of that name", name, staging, folder)
                continue
            try:
                os.rename(staging / name, folder / name)
            except FileNotFoundError:  # carried by another process finishing the same swap
                continue
            crash_point("carried")
        try:
            left = remove_index_files(staging)  # the old index: only its own files go
        except FileNotFoundError:  # removed by another process finishing the same swap
            left = []
        crash_point("cleaned")
        if left:
            log.warning("left %s in place: it holds files that are not the index's (%s)", staging, ", ".join(left))
    (folder / SWAP_MARK).unlink(missing_ok=True)


def settle_swap(folder: Path) -> str | None:
    """Finish or undo a swap that a killed reindex left half-done; call under the writer lock.

    Returns what was done (for the log and ``repair``'s report), ``None`` when nothing was pending.
    """
    staging = staging_folder(folder)
    aside = _step_aside(folder)
    if aside.is_dir() and holds_index(aside) and not aside.is_symlink():
        # Killed inside the three-rename exchange (no renameat2).
        if not os.path.lexists(folder):  # the old index stepped aside, the new one not yet in: undo
            os.rename(aside, folder)
        elif not os.path.lexists(staging) and (folder / SWAP_MARK).exists():  # the new one is in: go on
            os.rename(aside, staging)
    if (folder / SWAP_MARK).exists():
        _finish(folder, staging)
        log.info("finished the folder swap of an interrupted reindex of %s", folder)
        return "finished the folder swap of an interrupted reindex (other files carried back into the index folder)"
    if (staging / SWAP_MARK).exists():
        # Killed before the exchange: nothing moved; the staging folder stays a resumable new index.
        (staging / SWAP_MARK).unlink()
        return None
    return None


@dataclass(frozen=True)
class Unfinished:
    """A reindex that did not finish: where, and whether it was stopped inside its folder swap."""

    staging: Path
    mid_swap: bool  # other people's files may be in the staging folder until the swap is finished
    stray: tuple[str, ...]  # names in the staging folder that are not an index's


def unfinished_reindex(folder: Path) -> Unfinished | None:
    """What an interrupted reindex of ``folder`` left, if anything (read-only)."""
    staging = staging_folder(folder)
    mid = (folder / SWAP_MARK).exists() or _step_aside(folder).is_dir()
    if not mid and not (staging.is_dir() and not staging.is_symlink()):
        return None
    try:
        stray = tuple(strangers(staging)) if staging.is_dir() else ()
    except (OSError, IndexFolderError):
        stray = ()
    return Unfinished(staging, mid, stray)
