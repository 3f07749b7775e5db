"""The :class:`Index` facade (see :mod:`searchindex.index.facade`) and the names it returns."""

from .facade import Index, IndexInfo, SearchRequest, SearchResult, Shot, default_index_path

__all__ = ["Index", "IndexInfo", "SearchRequest", "SearchResult", "Shot", "default_index_path"]
