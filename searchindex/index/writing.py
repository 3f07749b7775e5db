"""The facade's indexing methods: bring the index in line with folders or files, rebuild the vector index."""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ..defaults import DEFAULT_MAX_MEGAPIXELS
from ..errors import ParameterError
from ..fileio import DEFAULT_MAX_FILE_BYTES
from .state import IndexState

if TYPE_CHECKING:
    from ..ingest.indexer import ProgressCallback
    from ..ingest.produce import Producer
    from ..ingest.scan import FileEntry
    from ..results import FailureRecord, IndexSummary
    from ..store.vectors.build import BuildReport

__all__ = ["DEFAULT_BATCH_SIZE", "Writing"]

#: Images per model call and per catalog commit, unless an indexing call says otherwise.
DEFAULT_BATCH_SIZE = 64


def _run_options(*, progress: ProgressCallback | None, batch_size: int, workers: int | None,
                 max_megapixels: float, max_file_bytes: int, stop: threading.Event | None) -> dict[str, Any]:
    """An indexing run's options, checked at the public boundary (a bad value is a :class:`ParameterError`)."""
    for name, value, least in (("batch_size", batch_size, 1), ("workers", workers, 0),
                               ("max_file_bytes", max_file_bytes, 1)):
        if value is None and name == "workers":
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ParameterError(f"{name} must be a whole number of at least {least}, not {value!r}", name)
    if (isinstance(max_megapixels, bool) or not isinstance(max_megapixels, (int, float))
            or not math.isfinite(max_megapixels) or max_megapixels <= 0):
        raise ParameterError(f"max_megapixels must be a positive finite number, not {max_megapixels!r}",
                             "max_megapixels")
    if progress is not None and not callable(progress):
        raise ParameterError(f"progress must be a callable or None, not {progress!r}", "progress")
    if stop is not None and not callable(getattr(stop, "is_set", None)):
        raise ParameterError(f"stop must be a threading.Event (or have is_set()) or None, not {stop!r}", "stop")
    return {"progress": progress, "batch_size": batch_size, "workers": workers, "max_megapixels": max_megapixels,
            "max_file_bytes": max_file_bytes, "stop": stop}


class Writing(IndexState):
    """:meth:`add_folder`, :meth:`add_files` and :meth:`optimize` of :class:`~searchindex.index.Index`."""

    def add_folder(self, folder: str | os.PathLike[str] | Iterable[str | os.PathLike[str]], *,
                   index_type: str | None = None, engine: str | Producer = "local",
                   progress: ProgressCallback | None = None, batch_size: int = DEFAULT_BATCH_SIZE,
                   workers: int | None = None, max_megapixels: float = DEFAULT_MAX_MEGAPIXELS,
                   max_file_bytes: int = DEFAULT_MAX_FILE_BYTES, stop: threading.Event | None = None,
                   videos: bool | None = None) -> IndexSummary:
        """Bring the index in line with every image (and video) below ``folder`` (or several folders).

        New and modified files are encoded; unchanged ones are skipped; touched, moved and
        duplicated files reuse their stored embedding; files gone from below the folders
        leave the index (see :mod:`searchindex.ingest`).  The model loads only if needed.

        Args:
            index_type: change the recorded FAISS index type (``auto`` or a factory string;
                ``None`` keeps it); rebuilt at the end of the run when it should change.
            engine: ``local`` (worker pool), ``ray`` (a local Ray) or an engine object such as
                :class:`~searchindex.ingest.ray_engine.RayEngine` (see :mod:`searchindex.ingest.engines`).
            progress: called with an :class:`~searchindex.results.IndexProgress` as the run goes.
            batch_size: images per model call and per catalog commit (default 64).
            workers: decoding processes (default: one per CPU, at most 8); 0 decodes in threads.
            max_megapixels: larger images are recorded as failures (a decompression-bomb guard).
            max_file_bytes: larger files are recorded as failures without being read (default 1 GiB).
            stop: set it (from another thread, a signal handler) to stop after the batch in
                flight is committed; the summary then says ``interrupted``.
            videos: index the videos too (see :mod:`searchindex.models.video`); default: when
                the ``video`` extra is installed.  When false, videos indexed before are kept.

        Raises:
            ParameterError: a bad option value.
            FolderNotFoundError, IndexLockedError, IndexWriteError (disk full, read-only),
            IndexTypeError, ModelMismatchError (an engine's workers load other weights),
            MissingExtraError (``engine="ray"`` without ``searchindex[ray]``).
        """
        t0 = time.perf_counter()
        options = _run_options(progress=progress, batch_size=batch_size, workers=workers,
                               max_megapixels=max_megapixels, max_file_bytes=max_file_bytes, stop=stop)
        from ..ingest.engines import engine_options
        from ..ingest.scan import path_list, scan_folders
        from ..ingest.videos import scan_extensions

        folders = path_list(folder, "a folder to index")

        options = engine_options(engine, options, self.models)
        skipped: list[str] = []
        unread: list[FailureRecord] = []  # what the scan could not read: failures of this run
        extensions, kept = scan_extensions(videos)
        entries = list(scan_folders(folders, skipped, unread, extensions))
        # Refused (without building it) when even this run could not give it enough vectors to train.
        wanted = self.vectors.check_index_type(index_type, self.catalog.read.image_count() + len(entries))
        with self._writing():
            self.vectors.set_index_type(wanted)
            summary = self._run(entries, [os.fspath(f) for f in folders], t0, skipped=skipped, unread=unread,
                                kept=kept, **options)
            self._record_folders(add=folders)
            return summary

    def forget_folder(self, folder: str | os.PathLike[str] | Iterable[str | os.PathLike[str]]) -> IndexSummary:
        """Drop every indexed image below ``folder`` (or several), a folder that no longer exists:
        renamed, moved or deleted.  (A missing folder is otherwise taken for offline, and its
        images are kept.)  Their count is the summary's ``deleted``; nothing is encoded.

        Raises:
            FolderExistsError: a folder exists (``add_folder`` brings its images in line).
            IndexLockedError, IndexWriteError.
        """
        t0 = time.perf_counter()
        folders = [folder] if isinstance(folder, (str, os.PathLike)) else list(folder)
        roots = [os.path.abspath(os.fspath(f)) for f in folders]
        from ..errors import FolderExistsError

        for given, root in zip(folders, roots, strict=True):
            if os.path.lexists(root):
                raise FolderExistsError(f"{given} exists: index it to bring its images in line "
                                          "(only the images of a folder that no longer exists are forgotten)")
        with self._writing():
            summary = self._run([], roots, t0, workers=0)
            self._record_folders(remove=roots)
            return summary

    def indexed_folders(self) -> list[str]:
        """The folders :meth:`add_folder` has indexed (absolute paths; what ``searchindex watch`` watches)."""
        from ..store.info import recorded_folders

        return recorded_folders(self.catalog.read.meta())

    def _record_folders(self, *, add: Iterable[str] = (), remove: Iterable[str] = ()) -> None:
        """Keep the list of indexed folders (under the writer lock)."""
        known = self.indexed_folders()
        gone = {os.path.abspath(f) for f in remove}
        wanted = [f for f in dict.fromkeys([*known, *(os.path.abspath(f) for f in add)]) if f not in gone]
        if wanted != known:
            self.catalog.set_meta(folders=wanted)

    def forget_missing(self, paths: Iterable[str | os.PathLike[str]]) -> list[str]:
        """Drop the indexed images at ``paths`` whose files no longer exist; returns the paths dropped.

        A path whose file still exists is kept (indexing its folder brings a changed file in
        line), and so is one that is not indexed.  Nothing is encoded.

        Raises:
            IndexLockedError, IndexWriteError.
        """
        gone = [os.path.abspath(os.fspath(p)) for p in paths]
        gone = [p for p in gone if not os.path.lexists(p)]
        if not gone:
            return []
        with self._writing():
            known = list(self.catalog.read.ids_by_path(gone))
            if known:
                self.catalog.commit_batch(deleted=known)
                self.vectors.save()
        return known

    def add_files(self, paths: Iterable[str | os.PathLike[str]], *, progress: ProgressCallback | None = None,
                  batch_size: int = DEFAULT_BATCH_SIZE, workers: int | None = None,
                  max_megapixels: float = DEFAULT_MAX_MEGAPIXELS, max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
                  stop: threading.Event | None = None) -> IndexSummary:
        """Index exactly these image files (no folder scan; nothing else leaves the index).

        Options and errors as for :meth:`add_folder`; a missing file is a failure.  ``paths`` may
        be a single path.

        Raises:
            PathTypeError: ``paths`` (or an item) is not a path.
        """
        t0 = time.perf_counter()
        options = _run_options(progress=progress, batch_size=batch_size, workers=workers,
                               max_megapixels=max_megapixels, max_file_bytes=max_file_bytes, stop=stop)
        from ..ingest.scan import entries_of, path_list

        entries = entries_of(os.path.abspath(p) for p in path_list(paths, "a file to index"))
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
