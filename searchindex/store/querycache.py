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

__all__ = ["CACHE_FILE", "MAX_ENTRIES", "QueryCache"]

log = logging.getLogger(__name__)

CACHE_FILE = "query_cache.sqlite"
#: Rows kept on disk (512-d float32: ~2 KB each, so a few MB at most).
MAX_ENTRIES = 2000
_MEMORY_ENTRIES = 256


class QueryCache:
    """Query text -> unit embedding for one model, in memory and in ``folder/query_cache.sqlite``."""

    def __init__(self, folder: Path, model_key: str, dim: int) -> None:
        self._file = folder / CACHE_FILE
        self._key = model_key
        self._dim = dim
        self._memory: OrderedDict[str, np.ndarray] = OrderedDict()
        self._db: sqlite3.Connection | None = None
        self._broken = False
        self._guard = threading.Lock()  # Index.search may be called from several threads

    def _connect(self, create: bool) -> sqlite3.Connection | None:
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
            for text, blob in rows:
                vec = np.frombuffer(blob, dtype=np.float32)
                if vec.shape[0] == self._dim:
                    found[text] = vec
                    self._remember(text, vec)
        return found

    def put_many(self, vectors: Mapping[str, np.ndarray]) -> None:
        """Store new embeddings; failures (read-only folder, locked file) are ignored."""
        with self._guard:
            self._put_many(vectors)

    def _put_many(self, vectors: Mapping[str, np.ndarray]) -> None:
        for text, vec in vectors.items():
            self._remember(text, np.asarray(vec, dtype=np.float32))
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
                self._db.close()
                self._db = None
