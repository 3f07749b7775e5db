"""Text-query embeddings kept in the index folder, so a repeated query in a new process needs no model.

A small SQLite file beside the catalog (``query_cache.sqlite``), not a catalog
table: it is a disposable cache with no migrations and no part in the
catalog's generations, and losing it (or failing to write it, on a read-only
index or a full disk) only costs one text encoding.  Rows are keyed by the
model's :func:`~searchindex.models.onnx.tower_key` and the exact query text; the
oldest rows go first once :data:`MAX_ENTRIES` is passed (first in, first out:
a hit then costs no write).  Every failure is logged at debug level and
ignored.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ..threads import abandon, forks

__all__ = ["CACHE_FILE", "MAX_ENTRIES", "QueryCache"]

log = logging.getLogger(__name__)

CACHE_FILE = "query_cache.sqlite"
#: Rows kept on disk (512-d float32: ~2 KB each, so a few MB at most).
MAX_ENTRIES = 2000
_MEMORY_ENTRIES = 256


#: A cached embedding is used only if its norm is this close to 1 (the encoders return unit vectors).
UNIT_TOLERANCE = 1e-3


def _valid(blob: object, dim: int) -> np.ndarray | None:
    """The stored vector if it can be a query embedding of this model: a ``dim``-long, finite,
    unit-length float32 vector (a NaN, zero or tampered entry would silently empty or skew results)."""
    if not isinstance(blob, bytes) or len(blob) != 4 * dim:
        return None
    vec = np.frombuffer(blob, dtype=np.float32)
    if not np.all(np.isfinite(vec)) or abs(float(np.linalg.norm(vec)) - 1.0) > UNIT_TOLERANCE:
        return None
    return vec


class QueryCache:
    """Query text -> unit embedding for one model, in memory and in ``folder/query_cache.sqlite``."""

    def __init__(self, folder: Path, model_key: str, dim: int) -> None:
        self._file = folder / CACHE_FILE
        self._key = model_key
        self._dim = dim
        self._memory: OrderedDict[str, np.ndarray] = OrderedDict()
        self._db: sqlite3.Connection | None = None
        self._forks = forks()  # the fork() count _db was opened at (a forked child opens its own)
        self._broken = False
        self._guard = threading.Lock()  # Index.search may be called from several threads

    def _connect(self, create: bool) -> sqlite3.Connection | None:
        if self._forks != forks():  # opened by the parent of this forked process: not ours to use or close
            if self._db is not None:
                abandon(self._db)
            self._db, self._forks = None, forks()
        if self._db is not None or self._broken:
            return self._db
        if not create and not self._file.is_file():
            return None
        try:
            # A short timeout: a search never waits long on another process's write.
            db = sqlite3.connect(self._file, timeout=0.2, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA synchronous=OFF")  # a cache: a lost row is re-encoded, nothing else
            db.execute("CREATE TABLE IF NOT EXISTS queries (model TEXT NOT NULL, text TEXT NOT NULL, "
                       "vector BLOB NOT NULL, PRIMARY KEY (model, text))")
            self._db = db
        except sqlite3.Error as exc:
            log.debug("query cache %s unavailable: %s", self._file, exc)
            self._broken = True
        return self._db

    def get_many(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """The cached embeddings among ``texts`` (a missing or unreadable cache is empty)."""
        with self._guard:
            return self._get_many(texts)

    def _get_many(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        found = {t: self._memory[t] for t in texts if t in self._memory}
        wanted = [t for t in dict.fromkeys(texts) if t not in found]
        db = self._connect(create=False) if wanted else None
        if db is not None:
            try:
                marks = ",".join("?" * len(wanted))
                rows = db.execute(f"SELECT text, vector FROM queries WHERE model = ? AND text IN ({marks})",
                                  [self._key, *wanted]).fetchall()
            except sqlite3.Error as exc:
                log.debug("query cache %s unreadable: %s", self._file, exc)
                rows = []
            bad = []
            for text, blob in rows:
                vec = _valid(blob, self._dim)
                if vec is None:
                    bad.append(text)
                    continue
                found[text] = vec
                self._remember(text, vec)
            if bad:
                log.warning("query cache %s: dropping %d invalid entries", self._file, len(bad))
                self._drop(db, bad)
        return found

    def _drop(self, db: sqlite3.Connection, texts: Sequence[str]) -> None:
        try:
            db.executemany("DELETE FROM queries WHERE model = ? AND text = ?", [(self._key, t) for t in texts])
        except sqlite3.Error as exc:
            log.debug("query cache %s: invalid entries not removed: %s", self._file, exc)

    def put_many(self, vectors: Mapping[str, np.ndarray]) -> None:
        """Store new embeddings; failures (read-only folder, locked file) are ignored."""
        with self._guard:
            self._put_many(vectors)

    def _put_many(self, vectors: Mapping[str, np.ndarray]) -> None:
        vectors = {t: np.asarray(v, dtype=np.float32) for t, v in vectors.items()
                   if _valid(np.asarray(v, dtype=np.float32).tobytes(), self._dim) is not None}
        for text, vec in vectors.items():
            self._remember(text, vec)
        db = self._connect(create=True)
        if db is None or not vectors:
            return
        try:
            with db:
                db.execute("BEGIN IMMEDIATE")
                db.executemany("INSERT OR REPLACE INTO queries (model, text, vector) VALUES (?, ?, ?)",
                               [(self._key, t, np.asarray(v, dtype=np.float32).tobytes())
                                for t, v in vectors.items()])
                # rowid grows with every insert, so the smallest rowids are the oldest rows.
                db.execute("DELETE FROM queries WHERE rowid <= (SELECT max(rowid) FROM queries) - ?",
                           (MAX_ENTRIES,))
        except sqlite3.Error as exc:
            log.debug("query cache %s not written: %s", self._file, exc)

    def _remember(self, text: str, vec: np.ndarray) -> None:
        self._memory[text] = vec
        self._memory.move_to_end(text)
        while len(self._memory) > _MEMORY_ENTRIES:
            self._memory.popitem(last=False)

    def close(self) -> None:
        with self._guard:
            if self._db is not None:
                if self._forks == forks():
                    self._db.close()
                else:
                    abandon(self._db)
                self._db = None
