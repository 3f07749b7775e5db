"""The FAISS vector index of one index folder, kept in step with its catalog.

The catalog is the truth; the FAISS file is a cache of its embeddings that
records the catalog generation it reflects.  :class:`VectorStore` owns that
cache for one open index: it loads the saved file, catches it up from the rows
changed since, saves it at the end of every indexing run, and rebuilds it as
another index type when the recorded choice (or, for ``auto``, the size policy
of :mod:`searchindex.store.vectors.kinds`) wants one.

A saved file is used only when it carries the catalog's identity (``index_id``),
generation, dimension and count, and (flat) a sample of its vectors equals the
catalog's embeddings: a damaged file, or one from another index, is rebuilt
from the catalog instead.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import numpy as np

from .catalog.database import Catalog
from .vectors.build import BuildReport, build_index
from .vectors.file import VectorFileError, latest_vector_file, read_vector_file
from .vectors.index import VectorIndex
from .vectors.kinds import DEFAULT_FACTORY, canonical_factory, check_trainable, planned_factory, train_size

__all__ = ["VectorStore"]

log = logging.getLogger(__name__)


class VectorStore:
    """The vector index of the index folder ``folder``, derived from ``catalog``'s embeddings."""

    #: Vectors of a loaded (flat) file compared with the catalog's embeddings.
    SAMPLE = 32

    def __init__(self, folder: Path, catalog: Catalog, dim: int) -> None:
        self.folder = folder
        self.catalog = catalog
        self.dim = dim
        meta = catalog.read.meta()
        self.index_id = meta.get("index_id", "")
        self._factory = meta.get("faiss_factory", DEFAULT_FACTORY)
        self._index_type = meta.get("faiss_index_type") or "auto"
        self._current: VectorIndex | None = None
        self._saved = False  # whether the folder's vector file was checked and is current
        self._lock = threading.RLock()
        #: Shards an IVF rebuild fills in parallel (trained once, merged).  1: on the 2-core reference
        #: box 2 and 4 threaded shards added 1M vectors 1.4-2.5x slower than one index
        #: (scripts/bench_scale.py), as FAISS already spreads one add over the cores.
        self.build_shards = 1

    @property
    def index_type(self) -> str:
        """The recorded index type: ``auto`` or a canonical factory string."""
        return self._index_type

    def current(self) -> VectorIndex:
        """The vector index, caught up with the catalog's latest generation."""
        with self._lock:
            generation = self.catalog.read.generation()
            vecs = self._current
            if vecs is None:
                # Without a usable file, start exact: it needs no training, and the
                # next indexing run rebuilds the recorded type from the catalog.
                loaded = VectorIndex.load(self.folder, self.index_id, self.dim, self.catalog.read.state)
                if loaded is not None and loaded.generation > generation:
                    log.warning("vector file of generation %d is newer than the catalog (%d); rebuilding from "
                                "the catalog", loaded.generation, generation)
                    loaded = None
                vecs = loaded or VectorIndex.empty(self.dim)
                vecs.fetch = self.fetch
                if vecs.generation < generation:
                    self._catch_up(vecs, generation)
                if loaded is not None and not self._matches_catalog(vecs):
                    vecs = VectorIndex.empty(self.dim)
                    vecs.fetch = self.fetch
                    loaded = None
                self._saved = loaded is not None  # else the next save must write a file
                meta = self.catalog.read.meta()
                if meta.get("faiss_nprobe") and meta.get("faiss_factory") == vecs.factory:
                    vecs.nprobe = int(meta["faiss_nprobe"])
            if vecs.generation < generation:
                self._catch_up(vecs, generation)
            self._current = vecs
            return vecs

    def _matches_catalog(self, vecs: VectorIndex) -> bool:
        """True when ``vecs`` holds exactly the catalog's ids (and, flat, a sample of its vectors)."""
        ids = self.catalog.read.image_ids()
        have = vecs.ids()
        why = None
        if len(have) != len(ids):
            why = f"{len(have)} vectors for {len(ids)} images"
        elif not np.array_equal(have, ids):
            why = "its ids are not the catalog's"
        elif vecs.nprobe is None and len(ids):  # flat: the stored vectors are the catalog's exactly
            sample = np.random.default_rng(0).choice(ids, min(self.SAMPLE, len(ids)), replace=False)
            if not np.allclose(vecs.vectors(sample), self.fetch(sample), atol=1e-4):
                why = "its vectors are not the catalog's embeddings"
        if why is not None:
            log.warning("the vector file in %s does not match the catalog (%s); rebuilding from the catalog",
                        self.folder, why)
        return why is None

    def fetch(self, ids: np.ndarray) -> np.ndarray:
        """Exact vectors of ``ids`` from the catalog (zeros for ids removed meanwhile)."""
        stored = self.catalog.read.embeddings([int(i) for i in ids], self.dim)
        out = np.zeros((len(ids), self.dim), dtype=np.float32)
        for row, i in enumerate(ids):
            vec = stored.get(int(i))
            if vec is not None:
                out[row] = vec
        return out

    def cosines(self, vector: np.ndarray, ids: np.ndarray) -> np.ndarray:
        """Cosine similarity of ``vector`` to the stored vectors of ``ids`` (0 for ids not in the index)."""
        vecs = self.current()
        ids = np.asarray(ids, dtype=np.int64)
        out = np.zeros(len(ids), dtype=np.float32)
        present = vecs.contains(ids) if len(ids) else np.zeros(0, bool)
        if present.any():
            out[present] = vecs.vectors(ids[present]) @ vector
        return out

    def _catch_up(self, vecs: VectorIndex, generation: int) -> None:
        since = vecs.generation
        vecs.remove(self.catalog.read.removed_since(since))
        n = 0
        for ids, chunk in self.catalog.read.embeddings_since(since, self.dim):
            vecs.upsert(ids, chunk)
            n += len(ids)
        vecs.generation = generation
        log.debug("vector index caught up from generation %d to %d (%d vectors)", since, generation, n)

    # -- index type ---------------------------------------------------------

    def check_index_type(self, index_type: str | None, most: int | None = None) -> str | None:
        """``index_type`` in canonical form (``None`` and ``auto`` as they are), checked without
        building it; ``most``: the most vectors the index can hold once the operation is done
        (default: the catalog's count), refused when too few to ever train the type.

        Raises:
            IndexTypeError: FAISS cannot build it, or the collection cannot train it.
        """
        if index_type is None or index_type == "auto":
            return index_type
        factory = canonical_factory(index_type, self.dim)
        check_trainable(factory, self.catalog.read.image_count() if most is None else most)
        return factory

    def set_index_type(self, index_type: str | None) -> None:
        """Record another index type (a checked one; ``None`` keeps it).  Call under the writer lock."""
        if index_type is not None and index_type != self._index_type:
            self.catalog.set_meta(faiss_index_type=index_type)
            self._index_type = index_type

    # -- saving and rebuilding (under the writer lock) ----------------------

    def save(self, shards: int | None = None) -> BuildReport | None:
        """Save the caught-up vector index, then rebuild it if the index-type policy wants another type.

        Called under the writer lock at the end of every indexing run.  ``shards``: an IVF
        rebuild trains once and fills this many shards in parallel threads, merged before the
        atomic save (default :attr:`build_shards`).
        """
        found = latest_vector_file(self.folder)
        if (self._current is None and found is not None and found[1] == self.catalog.read.generation()
                and self._planned() is None and self._file_verifies(found[0], found[1])):
            return None  # nothing changed: FAISS need not even be loaded
        vecs = self.current()
        if found is None or found[1] != vecs.generation or not self._saved:
            self._save(vecs)
            self._saved = True
        if vecs.factory != self._factory:  # the saved file is the truth (a crash may have left meta behind)
            self._record(vecs, built_at=vecs.ntotal, recall=None)
        target = self._planned()
        return self.rebuild(target, shards) if target is not None else None

    def _file_verifies(self, path: Path, generation: int) -> bool:
        """The cheap check of a vector file: header, checksum, identity, dimension and count (no FAISS)."""
        try:
            _, header = read_vector_file(path, generation, self.index_id, self.dim, self.catalog.read.state)
        except (OSError, VectorFileError):
            return False
        return bool(header["count"] == self.catalog.read.image_count())

    def _save(self, vecs: VectorIndex) -> None:
        """Write ``vecs`` with the catalog's token of its generation; drop the tokens of older
        generations (no vector file of theirs is left to compare)."""
        vecs.save(self.folder, self.index_id, self.catalog.read.state(vecs.generation))
        self.catalog.prune_states(vecs.generation)

    def _planned(self) -> str | None:
        meta = self.catalog.read.meta()
        return planned_factory(self._factory, int(meta.get("faiss_built_at") or 0), self.catalog.read.image_count(),
                               self.dim, self._index_type)

    def _record(self, vecs: VectorIndex, built_at: int, recall: float | None) -> None:
        nprobe = vecs.nprobe
        self.catalog.set_meta(faiss_factory=vecs.factory, faiss_nprobe="" if nprobe is None else str(nprobe),
                              faiss_built_at=str(built_at), faiss_recall="" if recall is None else f"{recall:.4f}")
        self._factory = vecs.factory

    def rebuild(self, factory: str, shards: int | None = None) -> BuildReport | None:
        """Build a ``factory`` index from the catalog's embeddings and swap it in atomically.

        The new index is written under a temporary name and renamed over the old
        file of the same generation, so readers see the old or the new index, and
        a crash (or a FAISS error) before the rename leaves the old one in use.
        FAISS errors and lack of memory are logged and keep the old index.
        """
        with self._lock:
            old = self.current()
            ids = old.ids()
            rng = np.random.default_rng(old.generation)
            sample_ids = rng.choice(ids, train_size(factory, len(ids)), replace=False)
            try:
                new, report = build_index(factory, self.dim, self.catalog.read.embeddings_since(0, self.dim),
                                          (sample_ids, self.fetch(sample_ids)), shards=shards or self.build_shards)
            except (RuntimeError, MemoryError) as exc:
                log.warning("could not rebuild the vector index as %s (%s); keeping %s", factory,
                            str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__,
                            old.factory)
                return None
            new.generation, new.fetch = old.generation, self.fetch
            self._save(new)
            self._current = new
            self._record(new, built_at=new.ntotal, recall=report.recall)
            log.info("vector index rebuilt as %s (%d vectors, nprobe %s)", report.factory, report.vectors,
                     report.nprobe)
            return report
