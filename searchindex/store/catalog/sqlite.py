"""The SQLite side of the catalog that needs no SQLAlchemy: connections, paths, damage.

Both the SQLAlchemy engine (every write) and the plain :mod:`sqlite3` reader of
:mod:`searchindex.store.catalog.reader` (what a search reads) open the catalog file
through here, so they agree on pragmas, on how a file name that is not UTF-8 is
stored, and on the one error a damaged file raises.  Importing this module costs
nothing beyond the standard library: a search never pays for SQLAlchemy's import.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TypeVar
from urllib.parse import quote, unquote_to_bytes

from ...errors import IndexCorruptError

__all__ = ["CATALOG_FILE", "CHUNK", "ENCODED_FROM", "ENCODED_TO", "apply_pragmas", "catalog_uri", "check_meta",
           "chunks", "connect", "damaged", "decode_path", "encode_path", "glob_bytes", "is_damage",
           "is_operational_error", "marks", "path_bytes"]

log = logging.getLogger(__name__)

#: The catalog's file name inside an index folder.
CATALOG_FILE = "catalog.sqlite"

# -- file names --------------------------------------------------------------------------

_BYTES_PREFIX = "?bytes:"  # no absolute path starts with it


def encode_path(value: str) -> str:
    """A file path as SQLite text, losslessly.

    Python represents undecodable bytes in file names as lone surrogates, which
    SQLite's UTF-8 text cannot hold; such paths are stored percent-encoded behind
    a prefix that no absolute path starts with.
    """
    try:
        value.encode("utf-8")
        return value
    except UnicodeEncodeError:
        return _BYTES_PREFIX + quote(os.fsencode(value), safe="/")


def decode_path(value: str) -> str:
    """The file path that :func:`encode_path` stored as ``value``."""
    if value.startswith(_BYTES_PREFIX):
        return os.fsdecode(unquote_to_bytes(value[len(_BYTES_PREFIX):]))
    return value


#: Every stored path that :func:`encode_path` encoded sorts in [ENCODED_FROM, ENCODED_TO).
ENCODED_FROM, ENCODED_TO = _BYTES_PREFIX, _BYTES_PREFIX[:-1] + chr(ord(_BYTES_PREFIX[-1]) + 1)


def path_bytes(value: str | None) -> str | None:
    """A stored path's bytes as text, one character per byte (SQL function ``path_bytes``), so that
    SQLite's GLOB can match the names :func:`encode_path` had to encode (``None`` for the others)."""
    if value is None or not value.startswith(_BYTES_PREFIX):
        return None
    return unquote_to_bytes(value[len(_BYTES_PREFIX):]).decode("latin-1")


def glob_bytes(pattern: str) -> str:
    """A GLOB pattern in the form :func:`path_bytes` gives paths: its file-system bytes, one
    character per byte (``*``, ``?`` and ``[...]`` are ASCII and keep their meaning)."""
    return os.fsencode(pattern).decode("latin-1")


# -- statements --------------------------------------------------------------------------

#: Values one statement binds at most: under SQLite's limit on bound variables (999 before 3.32).
CHUNK = 500

_T = TypeVar("_T")


def chunks(values: Sequence[_T], size: int = CHUNK) -> Iterator[Sequence[_T]]:
    """``values`` in consecutive slices of at most ``size``: one ``IN (...)`` statement's worth each."""
    for start in range(0, len(values), size):
        yield values[start : start + size]


# -- connections -------------------------------------------------------------------------


def catalog_uri(path: Path, read_only: bool) -> str:
    """The SQLite URI of the catalog at ``path``.

    Read-only is for a folder SQLite cannot write: a WAL database there opens
    only as immutable (it cannot create its -shm file), and as nobody can write
    there, nothing changes under the reader.
    """
    return f"file:{quote(str(path))}" + ("?immutable=1" if read_only else "")


def apply_pragmas(conn: sqlite3.Connection, *, writer: bool = True) -> None:
    """Settings every connection to a catalog gets.

    WAL: readers never wait for the writer and the writer never waits for
    readers.  NORMAL is durable across process crashes in WAL mode (only an OS
    crash can lose the last commits, and never corrupts the file).  A reader
    (``writer=False``) only waits for locks and refuses to write.  A read-only
    connection may refuse any of these; the WAL mode is stored in the file anyway.
    """
    pragmas = ("busy_timeout=30000", "journal_mode=WAL", "synchronous=NORMAL") if writer else (
        "busy_timeout=30000", "query_only=1")
    cur = conn.cursor()
    for pragma in pragmas:
        try:
            cur.execute(f"PRAGMA {pragma}")
        except sqlite3.OperationalError as exc:
            log.debug("PRAGMA %s refused: %s", pragma, exc)
        except sqlite3.DatabaseError as exc:  # a damaged file: the first real statement reports it
            log.debug("PRAGMA %s failed: %s", pragma, exc)
            break
    cur.close()


def connect(path: Path, read_only: bool = False) -> sqlite3.Connection:
    """A plain reading connection to the catalog at ``path`` (autocommit, usable from any thread
    that holds it alone); a missing file is an error, never created."""
    # mode=rw: a reader never creates the catalog (a folder being put back would get an empty one).
    uri = catalog_uri(path, read_only) + ("" if read_only else "?mode=rw")
    conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
    apply_pragmas(conn, writer=False)
    conn.create_function("path_bytes", 1, path_bytes, deterministic=True)
    return conn


# -- errors ------------------------------------------------------------------------------

# SQLite's primary result codes for a damaged file (sqlite3 errors carry them since Python 3.11).
_SQLITE_CORRUPT, _SQLITE_NOTADB = 11, 26
_DAMAGE_WORDS = ("malformed", "not a database", "corrupt")


def is_damage(exc: BaseException) -> bool:
    """True when ``exc`` (sqlite3 or SQLAlchemy) says the database file itself is damaged."""
    orig = getattr(exc, "orig", exc)
    code = getattr(orig, "sqlite_errorcode", None)
    if code is not None and code & 0xFF in (_SQLITE_CORRUPT, _SQLITE_NOTADB):
        return True
    return isinstance(orig, sqlite3.DatabaseError) and any(w in str(orig).lower() for w in _DAMAGE_WORDS)


def damaged(path: Path, detail: object) -> IndexCorruptError:
    """The one error users see for a damaged catalog: which file, and what to run."""
    folder = path.parent
    text = str(detail).strip()
    return IndexCorruptError(
        f"the catalog {path} is damaged ({text.splitlines()[0] if text else 'unreadable'}); "
        f"run `searchindex check --index {folder}` for details and `searchindex repair --index {folder}` "
        "to recover what can be read (the damaged file is kept aside)"
    )


def is_operational_error(exc: BaseException) -> bool:
    """True for SQLite refusing an operation (locked, read-only, disk full, I/O), whether it came
    through sqlite3 or through SQLAlchemy (checked without importing SQLAlchemy: if it was never
    imported, none of its errors can have been raised)."""
    if isinstance(exc, sqlite3.OperationalError):
        return True
    sa_exc = sys.modules.get("sqlalchemy.exc")
    return sa_exc is not None and isinstance(exc, sa_exc.OperationalError)


def check_meta(db: sqlite3.Connection) -> None:
    """Raise :class:`IndexCorruptError` unless the records every index has are there and well-formed."""
    try:
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
    except sqlite3.OperationalError as exc:  # an empty file is a valid, empty SQLite database
        raise IndexCorruptError(f"it has no readable meta table ({exc})") from None
    missing = [k for k in ("model", "pretrained", "dim") if k not in meta]
    if missing:
        raise IndexCorruptError(f"the {', '.join(missing)} record(s) are missing")
    for key in ("dim", "generation"):
        value = str(meta.get(key, "0"))
        if not value.isdigit() or (key == "dim" and int(value) == 0):
            raise IndexCorruptError(f"the {key} record is {value[:40]!r}, not a valid number")


def marks(n: int) -> str:
    """``n`` SQL parameter marks, ``?,?,...``, for an ``IN (...)`` of ``n`` values."""
    return ",".join("?" * n)
