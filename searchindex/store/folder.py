"""An index folder holds only the index: which files are the index's own, and removing only those.

Everything else found in an index folder is a stranger's and is never deleted
(a mistyped ``--index`` pointing at someone's photos must not lose them): a new
index is refused in a folder holding other files, and a reindex carries such
files over and removes only the old index's own files.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import IndexExistsError, IndexFolderError, IndexWriteError
from .catalog.database import Catalog
from .catalog.sqlite import CATALOG_FILE, is_operational_error
from .lock import LOCK_FILE, WriterLock
from .querycache import CACHE_FILE

if TYPE_CHECKING:
    from ..models.spec import ModelSpec

__all__ = ["DEMO_FOLDER", "INNER_STAGING", "INNER_SWAP_MARK", "SWAP_MARK",
           "create_catalog", "default_index_path", "demo_index_path", "file_key",
           "holds_index", "owned", "refuse_strangers", "remove_index_files", "strangers", "write_errors"]


def holds_index(folder: Path) -> bool:
    """True when ``folder`` holds an index (its catalog)."""
    return (folder / CATALOG_FILE).is_file()


def file_key(path: Path) -> tuple[int, int]:
    """Which file ``path`` is (device, inode): another process's reindex swaps the folder's files."""
    st = os.stat(path)
    return st.st_dev, st.st_ino


def create_catalog(folder: Path, spec: ModelSpec, dim: int, factory: str, index_type: str) -> Catalog:
    """Make ``folder`` (new or empty) hold the catalog of a new index, under the writer lock.

    Of two processes creating the same index, the second finds it locked or made,
    and replaces nothing.

    Raises:
        IndexFolderError: ``folder`` is a file, or holds files that are not an index's.
        IndexExistsError: another process made an index there meanwhile.
        IndexWriteError: the folder or catalog cannot be written (disk full, read-only, /proc).
    """
    try:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise IndexFolderError(f"{folder} exists and is not a folder; give another --index") from None
        with WriterLock(folder):
            if holds_index(folder):
                raise IndexExistsError(f"an index already exists at {folder} (made by another process meanwhile)")
            refuse_strangers(folder)
            return Catalog.create(folder, spec, dim, factory, meta={"faiss_index_type": index_type})
    except Exception as exc:
        if not isinstance(exc, OSError) and not is_operational_error(exc):
            raise
        # A full disk, a read-only place, /proc or /sys: one clear error, nothing half-made left behind.
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else getattr(exc, "orig", exc)
        raise IndexWriteError(f"cannot create an index at {folder}: {reason}") from exc

#: The mark of a reindex's folder swap: written into the new index before the swap, removed once
#: the old index's folder is emptied of other people's files (see :mod:`searchindex.index.reindex`).
SWAP_MARK = "reindex-swap"

#: Where a reindex of an index folder that is a mount point builds its new index: inside the
#: folder (a mount point cannot be exchanged with a folder beside it; see :mod:`searchindex.store.swap`).
INNER_STAGING = ".reindex"

#: The journal of a file-by-file swap inside a mount point: the old index's files to delete.
INNER_SWAP_MARK = "reindex-swap-files"

# The names an index folder's own files have: SQLite's journals, the writer lock, the
# query cache, vector files and the temporary files of killed writers included.
_OWNED_NAMES = frozenset(
    [LOCK_FILE, SWAP_MARK, INNER_SWAP_MARK, f".{INNER_SWAP_MARK}.tmp"]
    + [base + suffix for base in (CATALOG_FILE, CACHE_FILE) for suffix in ("", "-wal", "-shm", "-journal")]
)
_OWNED_PATTERNS = (
    re.compile(r"^vectors-\d{12}\.faiss$"),
    re.compile(r"^\.vectors-\d{12}\.faiss\.\d+\.tmp$"),
    re.compile(r"^\." + re.escape(CATALOG_FILE) + r"\.\d+\.tmp(-wal|-shm|-journal)?$"),
)


#: The thumbnail cache of ``searchindex serve``: ``thumbnails/<sha[:2]>/<sha>-<edge>.<webp|jpg>``.
THUMBNAIL_FOLDER = "thumbnails"
_THUMB_SHARD = re.compile(r"^[0-9a-f]{2}$")
_THUMB_FILE = re.compile(r"^\.?[0-9a-f]{64}-\d+\.(webp|jpg)(\.\d+\.\d+\.tmp)?$")


def owned(name: str) -> bool:
    """True for the names of files an index folder's index made (and may delete)."""
    return (name in _OWNED_NAMES or name in (THUMBNAIL_FOLDER, INNER_STAGING)
            or any(p.match(name) for p in _OWNED_PATTERNS))


def _remove_thumbnails(folder: Path) -> None:
    """Delete the thumbnail cache's own files and then its folders, if nothing else is in them."""
    if folder.is_symlink() or not folder.is_dir():
        return
    for shard in os.listdir(folder):
        sub = folder / shard
        if not _THUMB_SHARD.match(shard) or sub.is_symlink() or not sub.is_dir():
            continue
        for name in os.listdir(sub):
            if _THUMB_FILE.match(name) and not (sub / name).is_symlink():
                try:
                    os.unlink(sub / name)
                except FileNotFoundError:
                    pass
        try:
            os.rmdir(sub)
        except OSError:  # something else lives there: leave it
            pass
    try:
        os.rmdir(folder)
    except OSError:
        pass


def strangers(folder: Path) -> list[str]:
    """Names in ``folder`` that are not the index's own files (sorted); none when it does not exist.

    A thumbnail folder holding anything the cache did not make counts as a stranger.
    """
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return []
    except NotADirectoryError:  # lost in the move to store/: --index pointing at a file is a clear error
        raise IndexFolderError(f"{folder} exists and is not a folder; give another --index") from None
    return sorted(n for n in names if not owned(n) or (n == THUMBNAIL_FOLDER and _foreign_thumbnails(folder / n))
                  or (n == INNER_STAGING and _foreign_staging(folder / n)))


def _foreign_staging(folder: Path) -> bool:
    """The inner staging folder counts as the index's own while it holds nothing but an index's files."""
    return folder.is_symlink() or not folder.is_dir() or bool(strangers(folder))


def _demo_index(folder: Path, name: str) -> bool:
    """``searchindex demo`` keeps its index in ``demo`` below the user-data folder, which is also the
    default index's folder: an index may be created beside it (it stays a stranger otherwise: never
    deleted with the index, carried over by a reindex)."""
    return name == DEMO_FOLDER and holds_index(folder / name)


def _foreign_thumbnails(folder: Path) -> bool:
    if folder.is_symlink() or not folder.is_dir():
        return True
    for shard in os.listdir(folder):
        sub = folder / shard
        if not _THUMB_SHARD.match(shard) or sub.is_symlink() or not sub.is_dir():
            return True
        if any(not _THUMB_FILE.match(n) or (sub / n).is_symlink() for n in os.listdir(sub)):
            return True
    return False


def remove_index_files(folder: Path) -> list[str]:
    """Delete the index's own files in ``folder``, and the folder if nothing else is left in it.

    Returns the names left (other people's files, never touched).
    """
    for name in os.listdir(folder):
        if name == THUMBNAIL_FOLDER:
            _remove_thumbnails(folder / name)
        elif name == INNER_STAGING:
            sub = folder / name
            if sub.is_dir() and not sub.is_symlink():
                remove_index_files(sub)  # the new index of an unfinished reindex: its own files only
        elif owned(name):
            try:
                os.unlink(folder / name)
            except FileNotFoundError:
                pass
    left = strangers(folder)
    if not left:
        os.rmdir(folder)
    return left


def refuse_strangers(folder: Path) -> None:
    """Raise :class:`~searchindex.errors.IndexFolderError` when ``folder`` holds files that are not an index's."""
    found = [name for name in strangers(folder) if not _demo_index(folder, name)]
    if found:
        shown = ", ".join(found[:3]) + (", ..." if len(found) > 3 else "")
        raise IndexFolderError(
            f"{folder} is not empty ({len(found)} entries: {shown}); an index needs a folder of its own "
            "(a new or empty folder, or an existing index); give another --index"
        )


@contextmanager
def write_errors(path: Path) -> Iterator[None]:
    """Turn failures to write the index folder (full disk, read-only folder, SQLite refusing a write)
    into :class:`~searchindex.errors.IndexWriteError`."""
    try:
        yield
    except OSError as exc:
        raise IndexWriteError(f"cannot write the index at {path}: {exc.strerror or exc}") from exc
    except Exception as exc:
        if not is_operational_error(exc):
            raise
        raise IndexWriteError(f"cannot write the index at {path}: {getattr(exc, 'orig', exc)}") from exc


#: The default demo index is this folder below the user-data folder (see :func:`demo_index_path`).
DEMO_FOLDER = "demo"


def demo_index_path() -> Path:
    """Where ``searchindex demo`` keeps its index unless told: ``demo`` in the platform's user-data folder."""
    import platformdirs

    return platformdirs.user_data_path("searchindex") / DEMO_FOLDER


def default_index_path() -> Path:
    """``$SEARCHINDEX_HOME`` if set, else the platform's user-data folder for searchindex."""
    home = os.environ.get("SEARCHINDEX_HOME")
    if home:
        return Path(home).expanduser()
    import platformdirs

    return platformdirs.user_data_path("searchindex")
