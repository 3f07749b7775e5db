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

An index folder that is a mount point (or on another device than its parent)
cannot be exchanged with a folder beside it.  There the new index is built
inside it, in :data:`~searchindex.store.folder.INNER_STAGING`, and swapped in
file by file (:func:`swap_in_mount`), journalled by
:data:`~searchindex.store.folder.INNER_SWAP_MARK`:

1. both catalogs are checkpointed and left in rollback-journal mode, so no
   ``-wal``/``-shm`` file is left beside either (a stale ``-wal`` beside a replaced
   catalog would be read into it); the staged query cache and thumbnails are dropped;
2. the mark is written into the index folder, listing the staged files to move
   and the old index's files that none of them replaces;
3. the staged files are moved in (``os.replace``), vector files first and the
   catalog last: until the catalog is replaced a reader sees the old catalog, and
   the vector file's identity (the catalog's ``index_id``, generation and state
   token) makes it rebuild the old vectors from the old catalog rather than use a
   new vector file; after it, the new catalog with its own vectors;
4. the listed old files are deleted, then the staging folder's own files and the folder;
5. the mark is deleted.

Other people's files in the index folder never move.  :func:`settle_swap` redoes
steps 3 to 5 when it finds the mark (each step is idempotent); without it, the
staging folder is a resumable new index, as beside the folder.
"""

from __future__ import annotations

import ctypes
import errno
import json
import logging
import os
import re
import signal
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from ..errors import IndexFolderError, IndexLockedError
from .catalog.sqlite import CATALOG_FILE
from .folder import (
    INNER_STAGING,
    INNER_SWAP_MARK,
    SWAP_MARK,
    THUMBNAIL_FOLDER,
    holds_index,
    owned,
    remove_index_files,
    strangers,
)
from .lock import LOCK_FILE
from .querycache import CACHE_FILE

__all__ = ["Unfinished", "crash_point", "exchange", "is_mount_point", "settle_swap", "staging_folder",
           "swap_in", "swap_in_mount", "unfinished_reindex"]

log = logging.getLogger(__name__)

#: Set to a step's name (see :func:`crash_point`), this kills the process there: how the tests
#: interrupt a reindex at each step of its swap, as a power cut or ``kill -9`` would.
CRASH_ENV = "SEARCHINDEX_CRASH_AT"


def crash_point(name: str) -> None:
    """Die at once (SIGKILL, no clean-up) when ``$SEARCHINDEX_CRASH_AT`` names this step."""
    if os.environ.get(CRASH_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


def staging_folder(folder: Path) -> Path:
    """Where the new index of ``folder`` is built: ``.NAME.reindex`` beside it, or
    ``.reindex`` inside it when ``folder`` is a mount point (:func:`is_mount_point`)."""
    if is_mount_point(folder):
        return folder / INNER_STAGING
    return folder.parent / f".{folder.name}.reindex"


def is_mount_point(folder: Path) -> bool:
    """True when ``folder`` is a mount point, or on another device than its parent: it cannot be
    exchanged with a folder beside it (``rename`` fails with "Device or resource busy" or across devices)."""
    try:
        mine, parent = os.stat(folder).st_dev, os.stat(folder.parent).st_dev
    except OSError:
        return False
    return mine != parent or os.path.ismount(folder)


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


# -- the file-by-file swap inside a mount point -------------------------------------------------------

_JOURNALS = ("-wal", "-shm", "-journal")
_VECTOR_FILE = re.compile(r"^vectors-\d{12}\.faiss$")


def _rollback_mode(catalog: Path) -> None:
    """Checkpoint ``catalog``'s WAL into it and leave it in rollback-journal mode, so that no
    ``-wal``/``-shm`` file stays beside it (nothing stale is left to be read into another file
    moved to its name).  The next writer turns WAL on again.

    Raises:
        IndexLockedError: another process has the catalog open (its WAL cannot be closed).
    """
    if not catalog.is_file():
        return
    db = sqlite3.connect(catalog, isolation_level=None)
    try:
        db.execute("PRAGMA busy_timeout=5000")
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        mode = db.execute("PRAGMA journal_mode=DELETE").fetchone()[0]
    except sqlite3.OperationalError as exc:
        mode = str(exc)
    finally:
        db.close()
    if mode != "delete" or any(os.path.lexists(f"{catalog}{j}") for j in ("-wal", "-shm")):
        raise IndexLockedError(
            f"another process has the index at {catalog.parent} open (searchindex serve?); stop it and run the "
            "same reindex again: the new index is kept and is swapped in at once")


def _staged_entries(staging: Path) -> list[str]:
    """The staged files to move into the index folder: vector files first, the catalog last."""
    return sorted(n for n in os.listdir(staging) if _VECTOR_FILE.match(n)) + [CATALOG_FILE]


def swap_in_mount(staging: Path, folder: Path) -> None:
    """Make ``staging`` (a complete new index inside ``folder``, both closed) the index at ``folder``
    file by file (steps 1 to 5 of the module docstring); call under the writer lock of ``folder``.

    Raises:
        IndexLockedError: another process has the old or new catalog open (nothing was moved).
    """
    _rollback_mode(staging / CATALOG_FILE)
    _rollback_mode(folder / CATALOG_FILE)
    for name in (CACHE_FILE, *(CACHE_FILE + j for j in _JOURNALS)):  # a cache: the old one's stays, for now
        (staging / name).unlink(missing_ok=True)
    crash_point("mount-closed")
    moves = _staged_entries(staging)
    keep = {LOCK_FILE, INNER_SWAP_MARK, SWAP_MARK, INNER_STAGING, THUMBNAIL_FOLDER, *moves}
    # The old index's own files none of the new ones replaces (the thumbnails show pictures, not vectors: kept).
    old = sorted(n for n in os.listdir(folder) if owned(n) and n not in keep)
    mark = folder / INNER_SWAP_MARK
    tmp = folder / f".{INNER_SWAP_MARK}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump({"move": moves, "delete": old}, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, mark)  # the mark is whole or absent
    _fsync_dir(folder)
    crash_point("mount-marked")
    _finish_in_mount(folder, staging)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _finish_in_mount(folder: Path, staging: Path) -> None:
    """Steps 3 to 5, each safe to redo: move what is still staged, delete the listed old files,
    the staging folder's own files, then the mark."""
    mark = folder / INNER_SWAP_MARK
    try:
        plan = json.loads(mark.read_text(encoding="utf-8"))
        moves, old = [str(n) for n in plan["move"]], [str(n) for n in plan["delete"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise IndexFolderError(f"the swap journal {mark} of an interrupted reindex cannot be read ({exc}); "
                               "move it away and run `searchindex repair`") from exc
    if (staging / CATALOG_FILE).is_file():
        # A reader, or a writer after a kill, may have opened the old catalog since (WAL on again).
        _rollback_mode(folder / CATALOG_FILE)
    for name in moves:
        if name != CATALOG_FILE and not _VECTOR_FILE.match(name):
            continue  # a journal moves the index's catalog and vector files only
        if os.path.lexists(staging / name):
            os.replace(staging / name, folder / name)
            crash_point("mount-moved" if name != CATALOG_FILE else "mount-replaced")
    _fsync_dir(folder)
    for name in old:
        if owned(name) and "/" not in name and name not in (INNER_STAGING, THUMBNAIL_FOLDER, LOCK_FILE):
            (folder / name).unlink(missing_ok=True)
    crash_point("mount-cleaned")
    if staging.is_dir() and not staging.is_symlink():
        left = remove_index_files(staging)
        if left:
            log.warning("left %s in place: it holds files that are not the index's (%s)", staging, ", ".join(left))
    mark.unlink(missing_ok=True)


def settle_swap(folder: Path) -> str | None:
    """Finish or undo a swap that a killed reindex left half-done; call under the writer lock.

    Returns what was done (for the log and ``repair``'s report), ``None`` when nothing was pending.
    """
    if (folder / INNER_SWAP_MARK).exists():
        _finish_in_mount(folder, folder / INNER_STAGING)
        log.info("finished the file-by-file swap of an interrupted reindex of %s", folder)
        return "finished the file-by-file swap of an interrupted reindex (the index folder is a mount point)"
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
    if (folder / INNER_SWAP_MARK).exists():
        return Unfinished(folder / INNER_STAGING, True, ())
    mid = (folder / SWAP_MARK).exists() or _step_aside(folder).is_dir()
    if not mid and not (staging.is_dir() and not staging.is_symlink()):
        return None
    try:
        stray = tuple(strangers(staging)) if staging.is_dir() else ()
    except (OSError, IndexFolderError):
        stray = ()
    return Unfinished(staging, mid, stray)
