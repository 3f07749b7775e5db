"""What every part of the :class:`~searchindex.index.Index` facade works on: the open catalog and
what is derived from it (vector store, model session, searcher), reopened when another process
swaps the index folder, and the writer lock.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import IndexNotFoundError
from ..models.cache import tower_key
from ..models.session import ModelSession
from ..models.spec import ModelSpec
from ..search.searcher import Searcher
from ..store.catalog.database import Catalog
from ..store.folder import INNER_SWAP_MARK, file_key, write_errors
from ..store.lock import WriterLock
from ..store.querycache import QueryCache
from ..store.swap import settle_swap
from ..store.vector_store import VectorStore

if TYPE_CHECKING:
    from ..models.encoders import Encoder

__all__ = ["IndexState"]

log = logging.getLogger("searchindex.index")


class IndexState:
    """An index folder's open catalog and its collaborators: :attr:`catalog`, :attr:`vectors`,
    :attr:`models` and the searcher, all derived from one catalog file."""

    path: Path
    catalog: Catalog
    spec: ModelSpec
    dim: int
    models: ModelSession
    vectors: VectorStore

    def __init__(self, path: Path, catalog: Catalog, *, device: str = "auto", precision: str = "auto") -> None:
        self.path = path
        self._device, self._precision = device, precision
        self._lock = threading.RLock()
        self._attach(catalog)

    def _attach(self, catalog: Catalog) -> None:
        """Use ``catalog``; what was derived from a previous one (vectors, a model of other weights) is dropped."""
        old: ModelSession | None = getattr(self, "models", None)
        self.catalog = catalog
        self.spec: ModelSpec = catalog.model_spec()
        self.dim = int(catalog.read.meta()["dim"])
        self.models = ModelSession(self.spec, self.dim, device=self._device, precision=self._precision,
                                   cache=lambda: QueryCache(self.path, tower_key(self.spec), self.dim))
        if old is not None:
            old.close()  # its query cache
            if old.spec.same_weights(self.spec) and old.dim == self.dim:
                self.models.take_models_of(old)  # the same weights: keep what is loaded
        self.vectors = VectorStore(self.path, catalog, self.dim)
        self._searcher = Searcher(catalog, self.vectors, self.models)
        self._catalog_key = file_key(catalog.path)  # another process's reindex swaps the folder's

    def follow_folder(self) -> None:
        """Read and write the catalog now in the index folder: reopen it when another process's
        reindex replaced it, or the folder was put back after being deleted.

        Raises:
            IndexNotFoundError: the folder's catalog is gone.
        """
        self._follow_swap()

    def _follow_swap(self) -> None:
        """Reopen the catalog when the folder's catalog file is no longer the one open here.

        Another process's ``reindex`` replaces the whole index; reading or writing
        on through the old catalog would lose every write.
        """
        with self._lock:
            try:
                if file_key(self.catalog.path) == self._catalog_key:
                    return
            except FileNotFoundError:
                raise IndexNotFoundError(f"the index at {self.path} was removed by another process") from None
            log.warning("the index at %s was replaced by another process (reindex): reopening it", self.path)
            self.catalog.close()
            self._attach(Catalog.open(self.path))

    @property
    def encoder(self) -> Encoder:
        """The index's encoder, loaded once on first use."""
        return self.models.encoder

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """Hold the writer lock on the index as it is now (reopened if another process replaced it);
        turn failures to write the index folder into :class:`IndexWriteError`."""
        with write_errors(self.path), WriterLock(self.path):
            self._settle_inner_swap()
            self._follow_swap()
            yield

    def _settle_inner_swap(self) -> None:
        """Finish a reindex's file-by-file swap (a mount point) that a kill left half-done, before writing:
        written meanwhile, the old catalog's rows would be deleted with it."""
        if not (self.path / INNER_SWAP_MARK).exists():
            return
        with self._lock:
            self.catalog.close()  # its connection keeps the old catalog's WAL open, which the swap must close
            try:
                settle_swap(self.path.resolve())
            finally:
                self._attach(Catalog.open(self.path))
