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
    EmbeddingFileError,
    FolderExistsError,
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
    NotFoundError,
    ParameterError,
    PathTypeError,
    QueryError,
    SearchIndexError,
    UnknownModelError,
    WeightsUnavailableError,
)

__version__ = "0.1.0"

# The domain classes pull in numpy, SQLAlchemy and Pillow: load them on first
# use, so that `searchindex --help` and `import searchindex.errors` stay instant.
_LAZY = {
    "Index": "index.facade", "SearchRequest": "search.request", "Moment": "search.request",
    "SearchResult": "results", "IndexInfo": "results", "IndexProgress": "results", "IndexSummary": "results",
    "FailureRecord": "results", "DuplicateGroup": "results", "DuplicateImage": "results",
    "LabelReport": "results", "TagCount": "results", "CaptionProgress": "results", "CaptionSummary": "results",
    "CaptionFailure": "results", "Concept": "results", "ImageDetails": "store.catalog.records",
    "OcrProgress": "results", "OcrSummary": "results", "TextLine": "results",
    "ModelSpec": "models.spec", "Filters": "store.catalog.filters", "Query": "search.query", "Term": "search.query",
    "FewShotFit": "search.fewshot", "FewShotReranker": "search.fewshot",
    "Captioner": "models.captioners", "ItmScorer": "models.captioners",
    "ExportSummary": "ingest.exchange", "ImportSummary": "ingest.exchange",
    "CheckReport": "store.check", "Finding": "store.check", "RepairReport": "store.repair",
    "Face": "faceresults", "Person": "faceresults", "FaceSummary": "faceresults",
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
    from .faceresults import Face, FaceSummary, Person
    from .index.facade import Index
    from .ingest.exchange import ExportSummary, ImportSummary
    from .models.captioners import Captioner, ItmScorer
    from .models.spec import ModelSpec
    from .results import (
        CaptionFailure,
        CaptionProgress,
        CaptionSummary,
        Concept,
        DuplicateGroup,
        DuplicateImage,
        FailureRecord,
        IndexInfo,
        IndexProgress,
        IndexSummary,
        LabelReport,
        OcrProgress,
        OcrSummary,
        SearchResult,
        TagCount,
        TextLine,
    )
    from .search.fewshot import FewShotFit, FewShotReranker
    from .search.query import Query, Term
    from .search.request import Moment, SearchRequest
    from .store.catalog.filters import Filters
    from .store.catalog.records import ImageDetails
    from .store.check import CheckReport, Finding
    from .store.repair import RepairReport

__all__ = [
    "EmbeddingFileError",
    "Face",
    "FaceSummary",
    "Person",
    "ExportSummary",
    "ImportSummary",
    "CaptionFailure",
    "Concept",
    "CaptionProgress",
    "CaptionSummary",
    "Captioner",
    "CheckReport",
    "DuplicateGroup",
    "DuplicateImage",
    "FailureRecord",
    "FewShotFit",
    "FewShotReranker",
    "Filters",
    "Finding",
    "FolderExistsError",
    "FolderNotFoundError",
    "ImageDetails",
    "OcrProgress",
    "OcrSummary",
    "TextLine",
    "ImageDecodeError",
    "Index",
    "IndexCorruptError",
    "IndexExistsError",
    "IndexInfo",
    "IndexLockedError",
    "IndexNotFoundError",
    "IndexProgress",
    "IndexSchemaError",
    "IndexSummary",
    "IndexTypeError",
    "IndexWriteError",
    "ItmScorer",
    "LabelReport",
    "MissingExtraError",
    "ModelError",
    "ModelMismatchError",
    "ModelSpec",
    "Moment",
    "Query",
    "NotFoundError",
    "ParameterError",
    "PathTypeError",
    "QueryError",
    "RepairReport",
    "SearchIndexError",
    "SearchRequest",
    "SearchResult",
    "TagCount",
    "Term",
    "UnknownModelError",
    "WeightsUnavailableError",
    "__version__",
]
