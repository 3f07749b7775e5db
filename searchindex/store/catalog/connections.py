"""Plain :mod:`sqlite3` reading connections to a catalog file, one per thread.

SQLite connections must not be shared by threads working at once: each thread opens its own on
first use; closing the catalog from another thread waits for a statement running on one; a forked
child sets the parent's aside (it must neither use nor close them).

A thread's connection reads the catalog file the others read: when the file at the path is no
longer that one (the folder was deleted, put back, or replaced by another process's reindex),
opening it raises :class:`~searchindex.errors.IndexNotFoundError` instead of answering from
another file, or from a half-copied one (a folder being put back has its catalog before its
write-ahead log: its newest rows are not there yet).  The index follows a replacement
(:meth:`searchindex.Index.search` and the writes reopen the catalog).
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ...errors import IndexNotFoundError
from ...threads import abandon, forks
from .sqlite import connect, damaged, is_damage

__all__ = ["ThreadConnections"]


class _Connection:
    """One thread's connection; its lock is held while a statement runs, so that closing the
    catalog from another thread waits for the statement instead of breaking it."""

    __slots__ = ("db", "lock", "closed", "forks")

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        self.lock = threading.Lock()
        self.closed = False
        self.forks = forks()  # made in this process, not inherited through fork()


class ThreadConnections:
    """Plain reading connections to one catalog file, one per thread (see the module docstring)."""

    def __init__(self, path: Path, read_only: bool = False) -> None:
        self.path = path
        self._read_only = read_only
        self._local = threading.local()
        self._open: list[_Connection] = []
        self._guard = threading.Lock()
        self._file: tuple[int, int] | None = _file_key(path)  # None: made by the first connection

    def _open_one(self) -> sqlite3.Connection:
        """A new connection to the catalog file the others read (see the module docstring)."""
        gone = IndexNotFoundError(f"the index at {self.path.parent} was removed or replaced since it was "
                                  "opened; open it again")
        try:
            db = connect(self.path, self._read_only)
        except sqlite3.OperationalError as exc:
            if _file_key(self.path) is None:
                raise gone from exc
            raise
        key = _file_key(self.path)
        if self._file is None:
            self._file = key
        if key is None or key != self._file:
            db.close()
            raise gone
        return db

    def _connection(self) -> _Connection:
        conn: _Connection | None = getattr(self._local, "conn", None)
        if conn is not None and conn.forks != forks():
            self._drop_inherited()
            conn = None
        if conn is None or conn.closed:
            conn = _Connection(self._open_one())
            with self._guard:
                self._open.append(conn)
            self._local.conn = conn
        return conn

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """All rows of one statement; a damaged file raises the catalog's one damage error."""
        while True:
            conn = self._connection()
            with conn.lock:
                if conn.closed:  # closed by another thread since: open a new one
                    continue
                try:
                    return conn.db.execute(sql, params).fetchall()
                except sqlite3.DatabaseError as exc:
                    if is_damage(exc):
                        raise damaged(self.path, exc) from exc
                    raise

    def _drop_inherited(self) -> None:
        """In a forked child: set aside the connections the parent opened (SQLite: a child must
        neither use nor close them); each thread here opens its own."""
        with self._guard:
            mine = forks()
            for conn in self._open:
                if conn.forks != mine:
                    conn.closed = True
                    abandon(conn.db)
            self._open = [c for c in self._open if c.forks == mine]

    def close(self) -> None:
        """Close every thread's connection (waiting for a statement running on it); a later read
        opens a new one."""
        self._drop_inherited()
        with self._guard:
            conns, self._open = self._open, []
        for conn in conns:
            with conn.lock:
                conn.closed = True
                conn.db.close()


def _file_key(path: Path) -> tuple[int, int] | None:
    """Which file ``path`` is (device, inode); ``None`` when there is none."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino
