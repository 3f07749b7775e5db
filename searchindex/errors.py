"""Typed exceptions raised by the library.  The CLI turns them into messages."""

from __future__ import annotations


class SearchIndexError(Exception):
    """Base class of every error this package raises on purpose."""


class IndexNotFoundError(SearchIndexError):
    """No index exists at the given path."""


class IndexExistsError(SearchIndexError):
    """An index already exists where a new one was to be created."""


class IndexFolderError(SearchIndexError):
    """A folder cannot hold a new index: it holds other files (an index needs a folder of its own)."""


class ModelError(SearchIndexError):
    """A model cannot be used: unknown name, unreachable weights, bad checkpoint."""


class UnknownModelError(ModelError):
    """The model name is neither a built-in searchindex model nor an open_clip architecture."""


class WeightsUnavailableError(ModelError):
    """Pretrained weights could not be found or downloaded."""


class ModelMismatchError(ModelError):
    """An index was opened or extended with a model other than the one it was built with."""


class IndexLockedError(SearchIndexError):
    """Another process is writing to the index."""


class IndexWriteError(SearchIndexError):
    """The index could not be written (disk full, read-only folder, ...); nothing was lost."""


class IndexSchemaError(SearchIndexError):
    """The catalog's schema is newer than this code, or old and cannot be upgraded here."""


class IndexCorruptError(SearchIndexError):
    """An index file is damaged (the catalog is not a readable SQLite database, or its records
    contradict each other); ``searchindex check`` tells more, ``searchindex repair`` recovers."""


class FolderNotFoundError(SearchIndexError):
    """A folder to index does not exist or is not a directory."""


class PathTypeError(SearchIndexError, TypeError):
    """An argument that names files or folders is not a path (``str``, ``bytes`` or ``os.PathLike``),
    nor a collection of them where one is accepted."""


class QueryError(SearchIndexError):
    """A query cannot be run (empty text, unreadable query image, ...)."""


class ImageDecodeError(SearchIndexError):
    """A file could not be decoded as an image; ``reason`` is a short, stable description."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class IndexTypeError(SearchIndexError):
    """A FAISS index type (factory string) that cannot be built or used for an index."""


class MissingExtraError(SearchIndexError):
    """An optional feature's dependencies are not installed; the message names the extra to install."""


class ParameterError(QueryError):
    """A search parameter has a bad value; ``param`` names it as the CLI does (``-k``, ``--threshold``)."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class NotFoundError(SearchIndexError):
    """Something asked for by id or name is not in the index (an image id, a concept name)."""


class EngineError(SearchIndexError):
    """An execution engine for indexing (a Ray cluster) cannot be started or reached."""


class EmbeddingFileError(SearchIndexError):
    """An embedding file to import (or a folder to export into) cannot be used."""
