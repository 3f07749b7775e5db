"""searchindex: local text-to-image semantic search over photo folders.

    from searchindex import Index
    index = Index.create("photos.idx", model="tiny-shapes")
    index.add_folder("~/Pictures")
    for hit in index.search("a red circle", k=5):
        print(hit.rank, hit.score, hit.path)

torch, open_clip and faiss are imported only when a model or the vector index is used.
"""

from typing import TYPE_CHECKING

from .errors import (
    FolderNotFoundError,
    ImageDecodeError,
    IndexCorruptError,
    IndexExistsError,
    IndexLockedError,
    IndexNotFoundError,
    IndexSchemaError,
    IndexTypeError,
    IndexWriteError,
    MissingExtraError,
    ModelError,
    ModelMismatchError,
    QueryError,
    SearchIndexError,
    UnknownModelError,
    WeightsUnavailableError,
)

__version__ = "0.1.0"

# The domain classes pull in numpy, SQLAlchemy and Pillow: load them on first
# use, so that `searchindex --help` and `import searchindex.errors` stay instant.
_LAZY = {
    "Index": "index", "IndexInfo": "index", "SearchResult": "index",
    "IndexProgress": "indexer", "IndexSummary": "indexer",
    "Filters": "query", "Query": "query", "Term": "query",
    "DuplicateGroup": "duplicates", "DuplicateImage": "duplicates",
    "FewShotFit": "fewshot", "FewShotReranker": "fewshot", "LabelReport": "tagging",
    "Captioner": "captioning", "CaptionProgress": "captioning", "CaptionSummary": "captioning",
    "ItmScorer": "captioning",
    "CheckReport": "integrity", "Finding": "integrity", "RepairReport": "integrity",
}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:
    from .captioning import Captioner, CaptionProgress, CaptionSummary, ItmScorer
    from .duplicates import DuplicateGroup, DuplicateImage
    from .fewshot import FewShotFit, FewShotReranker
    from .index import Index, IndexInfo, SearchResult
    from .indexer import IndexProgress, IndexSummary
    from .integrity import CheckReport, Finding, RepairReport
    from .query import Filters, Query, Term
    from .tagging import LabelReport

__all__ = [
    "CaptionProgress",
    "CaptionSummary",
    "Captioner",
    "CheckReport",
    "DuplicateGroup",
    "DuplicateImage",
    "FewShotFit",
    "FewShotReranker",
    "Filters",
    "Finding",
    "FolderNotFoundError",
    "ImageDecodeError",
    "Index",
    "IndexCorruptError",
    "IndexExistsError",
    "IndexInfo",
    "IndexLockedError",
    "IndexNotFoundError",
    "IndexProgress",
    "IndexSchemaError",
    "IndexTypeError",
    "IndexSummary",
    "IndexWriteError",
    "ItmScorer",
    "LabelReport",
    "MissingExtraError",
    "ModelError",
    "ModelMismatchError",
    "Query",
    "QueryError",
    "RepairReport",
    "SearchIndexError",
    "SearchResult",
    "Term",
    "UnknownModelError",
    "WeightsUnavailableError",
    "__version__",
]
