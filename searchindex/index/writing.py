"""The facade's indexing methods: bring the index in line with folders or files, rebuild the vector index."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from .state import IndexState

if TYPE_CHECKING:
    from ..ingest.produce import Producer
    from ..ingest.scan import FileEntry
    from ..results import IndexSummary
    from ..store.index_build import BuildReport
    from ..store.records import FailureRecord

__all__ = ["Writing"]


class Writing(IndexState):
    """:meth:`add_folder`, :meth:`add_files` and :meth:`optimize` of :class:`~searchindex.index.Index`."""

    def add_folder(self, folder: str | os.PathLike[str] | Iterable[str | os.PathLike[str]], *,
                   index_type: str | None = None, engine: str | Producer = "local",
                   **options: Any) -> IndexSummary:
        """Bring the index in line with every image below ``folder`` (or several folders).

        New and modified files are encoded; unchanged ones are skipped; touched, moved and
        duplicated files reuse their stored embedding; files gone from below the folders
        leave the index (see :mod:`searchindex.ingest`).  The model loads only if needed.

        Args:
            index_type: change the recorded FAISS index type (``auto`` or a factory string;
                ``None`` keeps it); rebuilt at the end of the run when it should change.
            engine: ``local`` (worker pool), ``ray`` (a local Ray) or an engine object such as
                :class:`~searchindex.ingest.ray_engine.RayEngine` (see :mod:`searchindex.ingest.engines`).
            options: ``progress``, ``batch_size``, ``workers``, ``max_megapixels``,
                ``max_file_bytes``, ``stop``, as for :func:`searchindex.ingest.indexer.index_entries`.

        Raises:
            FolderNotFoundError, IndexLockedError, IndexWriteError (disk full, read-only),
            IndexTypeError, ModelMismatchError (an engine's workers load other weights),
            MissingExtraError (``engine="ray"`` without ``searchindex[ray]``).
        """
        t0 = time.perf_counter()
        from ..ingest.engines import engine_options
        from ..ingest.scan import path_list, scan_folders

        folders = path_list(folder, "a folder to index")

        options = engine_options(engine, options, self.models)
        skipped: list[str] = []
        unread: list[FailureRecord] = []  # what the scan could not read: failures of this run
        entries = list(scan_folders(folders, skipped, unread))
        # Refused (without building it) when even this run could not give it enough vectors to train.
        wanted = self.vectors.check_index_type(index_type, self.catalog.images.count() + len(entries))
        with self._writing():
            self.vectors.set_index_type(wanted)
            return self._run(entries, [os.fspath(f) for f in folders], t0, skipped=skipped, unread=unread,
                             **options)

    def add_files(self, paths: Iterable[str | os.PathLike[str]], **options: Any) -> IndexSummary:
        """Index exactly these image files (no folder scan; nothing else leaves the index).

        Options and errors as for :meth:`add_folder`; a missing file is a failure.  ``paths`` may
        be a single path.

        Raises:
            PathTypeError: ``paths`` (or an item) is not a path.
        """
        t0 = time.perf_counter()
        from ..ingest import reindex as re_index
        from ..ingest.scan import path_list

        entries = re_index.entries_of(os.path.abspath(p) for p in path_list(paths, "a file to index"))
        with self._writing():
            return self._run(entries, [], t0, **options)

    def _run(self, entries: list[FileEntry], roots: list[str], t0: float, **options: Any) -> IndexSummary:
        from ..enrich.tagging import tag_new_images
        from ..ingest.indexer import index_entries

        summary = index_entries(self.catalog, lambda: self.models.encoder, self.dim, entries, roots, t0=t0,
                                **options)
        self.vectors.save()
        if not summary.interrupted:
            tag_new_images(self.catalog, self.dim)
        self.models.after_indexing()
        return summary

    def optimize(self, index_type: str | None = None, *, shards: int | None = None) -> BuildReport | None:
        """Bring the vector index up to date and rebuild it if its type should change, as every
        indexing run does at its end; returns how it was rebuilt, or ``None`` when it kept its type.

        Args:
            index_type: first change the recorded choice (``auto`` or a factory string).
            shards: IVF shards filled in parallel (see :meth:`~searchindex.store.vector_store.VectorStore.save`).

        Raises:
            IndexTypeError, IndexLockedError, IndexWriteError.
        """
        wanted = self.vectors.check_index_type(index_type)
        with self._writing():
            self.vectors.set_index_type(wanted)
            return self.vectors.save(shards)
