"""An index folder holds only the index: which files are the index's own, and removing only those.

Everything else found in an index folder is a stranger's and is never deleted
(a mistyped ``--index`` pointing at someone's photos must not lose them): a new
index is refused in a folder holding other files, and a reindex carries such
files over and removes only the old index's own files.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import IndexExistsError, IndexFolderError
from .catalog import Catalog
from .lock import LOCK_FILE, WriterLock
from .querycache import CACHE_FILE
from .schema import CATALOG_FILE

if TYPE_CHECKING:
    from ..models.spec import ModelSpec

__all__ = ["create_catalog", "file_key", "holds_index", "owned", "refuse_strangers", "remove_index_files",
           "strangers"]


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
    """
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise IndexFolderError(f"{folder} exists and is not a folder; give another --index") from None
    with WriterLock(folder):
        if holds_index(folder):
            raise IndexExistsError(f"an index already exists at {folder} (made by another process meanwhile)")
        refuse_strangers(folder)
        return Catalog.create(folder, spec, dim, factory, meta={"faiss_index_type": index_type})

# The names an index folder's own files have: SQLite's journals, the writer lock, the
# query cache, vector files and the temporary files of killed writers included.
_OWNED_NAMES = frozenset(
    [LOCK_FILE] + [base + suffix for base in (CATALOG_FILE, CACHE_FILE) for suffix in ("", "-wal", "-shm", "-journal")]
)
_OWNED_PATTERNS = (
    re.compile(r"^vectors-\d{12}\.faiss$"),
    re.compile(r"^\.vectors-\d{12}\.faiss\.\d+\.tmp$"),
    re.compile(r"^\." + re.escape(CATALOG_FILE) + r"\.\d+\.tmp(-wal|-shm|-journal)?$"),
)


def owned(name: str) -> bool:
    """True for the names of files an index folder's index made (and may delete)."""
    return name in _OWNED_NAMES or any(p.match(name) for p in _OWNED_PATTERNS)


def strangers(folder: Path) -> list[str]:
    """Names in ``folder`` that are not the index's own files (sorted); none when it does not exist."""
    try:
        return sorted(n for n in os.listdir(folder) if not owned(n))
    except FileNotFoundError:
        return []


def remove_index_files(folder: Path) -> list[str]:
    """Delete the index's own files in ``folder``, and the folder if nothing else is left in it.

    Returns the names left (other people's files, never touched).
    """
    for name in os.listdir(folder):
        if owned(name):
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
    found = strangers(folder)
    if found:
        shown = ", ".join(found[:3]) + (", ..." if len(found) > 3 else "")
        raise IndexFolderError(
            f"{folder} is not empty ({len(found)} entries: {shown}); an index needs a folder of its own "
            "(a new or empty folder, or an existing index); give another --index"
        )
