"""The vector index: FAISS over L2-normalised vectors, a cache of the catalog.

Each saved file carries in its name the catalog generation it reflects
(``vectors-000000000042.faiss``).  A file is written under a temporary name and
renamed into place, so a reader sees either the old complete file or the new
complete file, never a partial one; older generations are deleted afterwards.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["DEFAULT_FACTORY", "VectorIndex", "latest_vector_file"]

log = logging.getLogger(__name__)

# Exact inner-product search with our own int64 ids (the catalog's image ids).
DEFAULT_FACTORY = "IDMap2,Flat"

_FILE_RE = re.compile(r"^vectors-(\d{12})\.faiss$")


def _faiss() -> Any:
    import faiss

    return faiss


def latest_vector_file(folder: Path) -> tuple[Path, int] | None:
    """The newest saved vector file in ``folder`` and its generation, if any."""
    best: tuple[Path, int] | None = None
    for entry in os.scandir(folder):
        m = _FILE_RE.match(entry.name)
        if m and (best is None or int(m.group(1)) > best[1]):
            best = (Path(entry.path), int(m.group(1)))
    return best


class VectorIndex:
    """A FAISS index keyed by catalog image ids."""

    def __init__(self, index: Any, generation: int = 0) -> None:
        self._index = index
        self.generation = generation

    @classmethod
    def empty(cls, dim: int, factory: str = DEFAULT_FACTORY) -> VectorIndex:
        faiss = _faiss()
        return cls(faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT))

    @classmethod
    def load(cls, folder: Path) -> VectorIndex | None:
        """Load the newest saved file in ``folder``; ``None`` when there is none."""
        faiss = _faiss()
        for _ in range(3):  # a writer may delete the file between listing and reading it
            found = latest_vector_file(folder)
            if found is None:
                return None
            try:
                return cls(faiss.read_index(str(found[0])), found[1])
            except RuntimeError:
                if found[0].exists():
                    log.warning("unreadable vector file %s; rebuilding from the catalog", found[0])
                    return None
        return None

    @property
    def ntotal(self) -> int:
        return int(self._index.ntotal)

    @property
    def dim(self) -> int:
        return int(self._index.d)

    def ids(self) -> np.ndarray:
        """The ids of every stored vector (sorted)."""
        return np.sort(_faiss().vector_to_array(self._index.id_map).astype(np.int64))

    def reconstruct(self, image_id: int) -> np.ndarray:
        return self._index.reconstruct(int(image_id))

    def reconstruct_many(self, ids: np.ndarray) -> np.ndarray:
        """The stored vectors of ``ids`` as an (n, dim) array."""
        out = np.empty((len(ids), self.dim), dtype=np.float32)
        for row, image_id in enumerate(ids):
            out[row] = self._index.reconstruct(int(image_id))
        return out

    def upsert(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Add vectors, replacing any already stored under the same ids."""
        if len(ids) == 0:
            return
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        self.remove(ids)
        self._index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), ids)

    def remove(self, ids: np.ndarray) -> None:
        if len(ids):
            self._index.remove_ids(np.ascontiguousarray(ids, dtype=np.int64))

    def search(
        self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` (scores, ids) per query row; missing slots have id -1.

        Args:
            allowed: when given, only these ids can be returned (a FAISS id selector).
        """
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        k = max(1, min(k, self.ntotal)) if self.ntotal else 1
        if allowed is None:
            return self._index.search(queries, k)
        faiss = _faiss()
        allowed = np.ascontiguousarray(allowed, dtype=np.int64)
        k = max(1, min(k, len(allowed)))
        selector = faiss.IDSelectorBatch(len(allowed), faiss.swig_ptr(allowed))
        return self._index.search(queries, k, params=faiss.SearchParameters(sel=selector))

    def save(self, folder: Path) -> Path:
        """Write atomically as ``vectors-<generation>.faiss`` and drop older files."""
        faiss = _faiss()
        final = folder / f"vectors-{self.generation:012d}.faiss"
        tmp = folder / f".{final.name}.{os.getpid()}.tmp"
        try:
            faiss.write_index(self._index, str(tmp))
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, final)
        finally:
            if tmp.exists():
                tmp.unlink()
        for entry in os.scandir(folder):
            m = _FILE_RE.match(entry.name)
            if m and int(m.group(1)) < self.generation:
                try:
                    os.unlink(entry.path)
                except FileNotFoundError:
                    pass
        return final
