"""searchindex: local text-to-image semantic search over photo folders.

    from searchindex import Index
    index = Index.create("photos.idx", model="tiny-shapes")
    index.add_folder("~/Pictures")
    for hit in index.search("a red circle", k=5):
        print(hit.rank, hit.score, hit.path)

torch, open_clip and faiss are imported only when a model or the vector index is used.
"""

from .errors import (
    FolderNotFoundError,
    ImageDecodeError,
    IndexExistsError,
    IndexLockedError,
    IndexNotFoundError,
    IndexSchemaError,
    IndexWriteError,
    ModelError,
    ModelMismatchError,
    QueryError,
    SearchIndexError,
    UnknownModelError,
    WeightsUnavailableError,
)
from .index import Index, IndexInfo, SearchResult
from .indexer import IndexProgress, IndexSummary

__version__ = "0.1.0"

__all__ = [
    "FolderNotFoundError",
    "ImageDecodeError",
    "Index",
    "IndexExistsError",
    "IndexInfo",
    "IndexLockedError",
    "IndexNotFoundError",
    "IndexProgress",
    "IndexSchemaError",
    "IndexSummary",
    "IndexWriteError",
    "ModelError",
    "ModelMismatchError",
    "QueryError",
    "SearchIndexError",
    "SearchResult",
    "UnknownModelError",
    "WeightsUnavailableError",
    "__version__",
]
