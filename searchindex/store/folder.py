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

from ..errors import IndexFolderError
from .lock import LOCK_FILE
from .querycache import CACHE_FILE
from .schema import CATALOG_FILE

__all__ = ["owned", "refuse_strangers", "remove_index_files", "strangers"]

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
