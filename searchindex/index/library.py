"""The facade's methods over what an index keeps besides its images: embeddings exchanged as
Parquet (:mod:`searchindex.ingest.exchange`) and saved concepts (:mod:`searchindex.store.catalog.concepts`)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from ..models.spec import resolve_model
from .state import IndexState

if TYPE_CHECKING:
    from ..ingest.exchange import ExportSummary, ImportProgress, ImportSummary
    from ..results import Concept

__all__ = ["Exchange", "Concepts"]


class Exchange(IndexState):
    """:meth:`export_embeddings` and :meth:`import_embeddings` of :class:`~searchindex.index.Index`."""

    def export_embeddings(self, out: str | os.PathLike[str], *, layout: str = "parquet",
                          rows_per_file: int | None = None) -> ExportSummary:
        """Write every image's embedding, path, hash and metadata as Parquet under the new folder ``out``,
        in ``layout`` ``parquet`` or ``clip-retrieval`` (see :mod:`searchindex.ingest.parquet`).

        Raises:
            EmbeddingFileError: ``out`` exists and is not empty.
            MissingExtraError: pyarrow is not installed (``searchindex[parquet]``).
        """
        from ..ingest.exchange import ROWS_PER_FILE, export_embeddings

        return export_embeddings(self.catalog, self.spec, self.dim, out, layout=layout,
                                 rows_per_file=rows_per_file or ROWS_PER_FILE)

    def import_embeddings(
        self, files: str | os.PathLike[str] | Sequence[str | os.PathLike[str]], *, model: str | None = None,
        pretrained: str | None = None, base: str | os.PathLike[str] | None = None, replace: bool = False,
        max_file_bytes: int | None = None, progress: Callable[[ImportProgress], None] | None = None,
    ) -> ImportSummary:
        """Add embeddings computed elsewhere (Parquet files or folders, either layout) to this index.

        Rows are joined to files on disk by ``image_path`` (relative to ``base``), checked
        against ``sha256`` when present; missing or changed files become failures.  Files that
        do not record their model (clip-retrieval's) need ``model``/``pretrained`` to say it.
        A row whose vector is not finite or all zeros is reported and skipped; a file already
        indexed with the same content keeps its embedding unless ``replace``; a row that does
        not match its file never removes the row of an indexed file.  Image files are read as
        indexing reads them (regular files, at most ``max_file_bytes``).

        Raises:
            ModelMismatchError: another model or vector size (nothing is written).
            EmbeddingFileError, IndexLockedError, IndexWriteError, MissingExtraError.
        """
        from ..ingest.exchange import import_embeddings

        declared = resolve_model(model, pretrained) if model else None
        with self._writing():
            summary = import_embeddings(self.catalog, self.spec, self.dim, files, declared=declared, base=base,
                                        replace=replace, progress=progress,
                                        **({"max_file_bytes": max_file_bytes} if max_file_bytes else {}))
            self.vectors.save()
        return summary


class Concepts(IndexState):
    """:meth:`save_concept`, :meth:`concepts`, :meth:`concept` and :meth:`remove_concept` of
    :class:`~searchindex.index.Index`."""

    def save_concept(self, name: str, query: str | None = None, like: Sequence[int] = (),
                     unlike: Sequence[int] = ()) -> Concept:
        """Save (or replace) a named concept: a query text and example image ids that teach it
        (``search --concept NAME`` and the web API's ``concept`` run it).

        Raises:
            QueryError: an empty name, nothing to search for, or an example id not in the index.
        """
        self._follow_swap()  # a folder put back: save into it, not into the deleted catalog
        return self.catalog.concepts.save(name, query, like, unlike)

    def concepts(self) -> list[Concept]:
        """Every saved concept, by name (example images removed since are left out)."""
        # No follow here: a folder being put back has its catalog before its write-ahead log, and a
        # list read from it then would be empty; a search or a write follows (reads raise meanwhile).
        return self.catalog.read.concepts()

    def concept(self, name: str) -> Concept:
        """The saved concept called ``name``.

        Raises:
            NotFoundError: no concept of that name.
        """
        return self.catalog.read.concept(name)

    def remove_concept(self, name: str) -> bool:
        """Forget a concept; False when there was none of that name."""
        self._follow_swap()
        return self.catalog.concepts.remove(name)
