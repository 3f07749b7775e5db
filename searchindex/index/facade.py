"""``Index``: the one domain object of the library, a facade over its collaborators.

An :class:`Index` owns its lifecycle (create, open, reindex, check, repair, close), search and
:meth:`~Index.info`; it is assembled from parts, one per concern, each a few one-line
delegations over :class:`~searchindex.index.state.IndexState` (the open catalog and its
collaborators, reopened when another process swaps the folder):

- :class:`~searchindex.index.writing.Writing`: indexing (:mod:`searchindex.ingest`) and the vector index;
- :class:`~searchindex.index.watching.Watching`: a live index (:mod:`searchindex.ingest.watch`);
- :class:`~searchindex.index.enrichment.Enrichment`: duplicates, tags and captions (:mod:`searchindex.enrich`);
- :class:`~searchindex.index.library.Exchange` and :class:`~searchindex.index.library.Concepts`:
  Parquet embeddings and saved concepts.

The collaborators: :attr:`Index.catalog` (:class:`~searchindex.store.catalog.database.Catalog`, the
SQLite truth, one repository per concern), :attr:`Index.vectors`
(:class:`~searchindex.store.vector_store.VectorStore`, the FAISS cache), :attr:`Index.models`
(:class:`~searchindex.models.session.ModelSession`, encoders loaded once) and the searcher
(:mod:`searchindex.search`).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..defaults import DEFAULT_K, DEFAULT_MAX_MEGAPIXELS, DEFAULT_POOL, DEFAULT_RERANK_TOP
from ..errors import IndexExistsError, IndexNotFoundError
from ..fileio import DEFAULT_MAX_FILE_BYTES
from ..models.spec import resolve_model
from ..results import FailureRecord, IndexInfo, IndexSummary, SearchResult
from ..search.hybrid import DEFAULT_FUSION
from ..search.present import image_details
from ..search.query import Query, Term
from ..search.request import SearchRequest, Shot
from ..store.catalog.database import Catalog
from ..store.catalog.filters import Filters
from ..store.catalog.records import ImageDetails
from ..store.folder import create_catalog, holds_index, refuse_strangers, write_errors
from ..store.info import describe_index
from ..store.vectors.kinds import DEFAULT_FACTORY, canonical_factory
from .enrichment import Enrichment
from .library import Concepts, Exchange
from .people import People
from .reading import Reading
from .watching import Watching
from .writing import DEFAULT_BATCH_SIZE, Writing

if TYPE_CHECKING:
    from ..ingest.indexer import ProgressCallback
    from ..store.check import CheckReport
    from ..store.repair import RepairReport

__all__ = ["Index"]

log = logging.getLogger("searchindex.index")


class Index(Watching, Writing, Enrichment, Reading, Exchange, Concepts, People):
    """A searchable image index stored in one folder.

    Create one with :meth:`create`, reopen it with :meth:`open`.  The model that
    built the index is recorded in it and always used for it::

        index = Index.create("photos.idx", model="tiny-shapes")
        index.add_folder("~/Pictures")
        index.search("a red circle", k=5)

    Threads: one ``Index`` may be shared by threads that read it.  :meth:`search`,
    :meth:`search_image`, :meth:`search_vector`, :meth:`embed`, :meth:`encode_texts`,
    :meth:`count`, :meth:`image`, :meth:`failures` and :meth:`info` may run at the same
    time from several threads and give what one thread would (the model, the vector file
    and the query cache are loaded under locks; each catalog read has its own SQLite
    connection).  One exception: while another process (or another ``Index``) adds to or
    reindexes the same folder, the next search brings this index's vectors up to date in
    place, which must not overlap other threads' searches; a program that searches from
    several threads while the index is being written makes its searches take turns (one
    lock around them, as ``searchindex serve`` does).  Not supported: calling a method that
    writes (:meth:`add_folder`, :meth:`add_files`, :meth:`optimize`, :meth:`tag`,
    :meth:`untag`, :meth:`caption`, :meth:`import_embeddings`, saving or deleting
    concepts) while other threads use the same ``Index``, and :meth:`close` while any call
    runs.  A writer in one thread beside readers in others opens an ``Index`` of its own,
    as another process would (readers never wait for it; see above for their searches).
    Two writers at once, on one ``Index`` or two, in threads or processes: the second
    raises :class:`~searchindex.errors.IndexLockedError`.
    """

    @property
    def id(self) -> str:
        """The index's identity: a random id recorded at creation (and in its vector file)."""
        return self.vectors.index_id

    # -- lifecycle --------------------------------------------------------

    @staticmethod
    def exists(path: str | os.PathLike[str]) -> bool:
        """True when ``path`` holds an index."""
        return holds_index(Path(path).expanduser())

    @classmethod
    def create(cls, path: str | os.PathLike[str], model: str | None = None, pretrained: str | None = None, *,
               device: str = "auto", precision: str = "auto", index_type: str = "auto") -> Index:
        """Create an empty index at ``path`` for ``model`` (loads the model once).

        ``path`` must be a new or empty folder.  ``model``/``pretrained``: see
        :func:`~searchindex.models.spec.resolve_model` (an open_clip architecture and tag,
        ``hf-hub:org/repo``, ``local-dir:/folder``, a checkpoint file, ``"none"`` for random
        weights, or a built-in model such as ``tiny-shapes``).  ``device``: ``auto``, ``cpu``
        or ``cuda``; ``precision``: image encoding, ``auto`` (fp16 on CUDA, int8 on x86 CPUs,
        else fp32), ``fp32``, ``bf16``, ``int8``, ``onnx`` or ``fp16``.  ``index_type``: ``auto``
        (by collection size, :func:`~searchindex.store.vectors.kinds.choose_factory`) or a FAISS
        index_factory string (``IVF1024,SQ8``), built once there are enough vectors to train it.

        Raises:
            IndexExistsError, IndexFolderError, IndexTypeError, UnknownModelError,
            WeightsUnavailableError, ModelError: see :mod:`searchindex.errors`.
        """
        folder = Path(path).expanduser()
        if cls.exists(folder):
            raise IndexExistsError(f"an index already exists at {folder}")
        refuse_strangers(folder)  # before loading the model: fail fast
        if index_type != "auto":
            canonical_factory(index_type)  # fail before loading the model
        spec = resolve_model(model, pretrained)
        # Load before writing anything: a model that cannot load leaves no half-made index.
        from ..models.backends import load_encoder

        encoder = load_encoder(spec, device, precision)
        if index_type != "auto":
            index_type = canonical_factory(index_type, encoder.dim)
        # Every index starts exact and empty; the first run that ends with enough
        # vectors builds the requested (or auto-chosen) type.
        catalog = create_catalog(folder, spec, encoder.dim, DEFAULT_FACTORY, index_type)
        index = cls(folder, catalog, device=device, precision=precision)
        index.models.adopt(encoder)
        log.info("created index %s with %s (%d-d)", folder, spec.describe(), encoder.dim)
        return index

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, device: str = "auto", precision: str = "auto") -> Index:
        """Open an existing index; its model is loaded on first use.

        Raises:
            IndexNotFoundError: no index at ``path``.
        """
        folder = Path(path).expanduser()
        if not cls.exists(folder):
            raise IndexNotFoundError(f"no index at {folder} (create one with `searchindex index FOLDER`)")
        return cls(folder, Catalog.open(folder), device=device, precision=precision)

    @classmethod
    def open_or_create(cls, path: str | os.PathLike[str], model: str | None = None, pretrained: str | None = None,
                       *, device: str = "auto", precision: str = "auto", index_type: str | None = None) -> Index:
        """Open the index at ``path``, checking that it uses ``model``/``pretrained`` (when given),
        or create it with them (``index_type`` default ``auto``).

        Raises:
            ModelMismatchError: the existing index uses another model.
            and what :meth:`open` and :meth:`create` raise.
        """
        if not cls.exists(path):
            try:
                return cls.create(path, model, pretrained, device=device, precision=precision,
                                  index_type=index_type or "auto")
            except IndexExistsError:  # another process created it meanwhile: open it (and add under its lock)
                pass
        index = cls.open(path, device=device, precision=precision)
        try:
            index.check_model(model, pretrained)
        except BaseException:
            index.close()
            raise
        return index

    @staticmethod
    def check(path: str | os.PathLike[str], *, files: bool = True) -> CheckReport:
        """Check the index at ``path`` without changing it, even one too damaged to open
        (see :func:`searchindex.store.check.check_index`; ``files=False``: not against the disk).

        Raises:
            IndexNotFoundError: no index at ``path``.
        """
        from ..store.check import check_index

        return check_index(path, files=files)

    @staticmethod
    def repair(path: str | os.PathLike[str]) -> RepairReport:
        """Repair the index at ``path``: recover a damaged catalog (kept aside), rebuild the vector
        file, remove the index's own leftovers; never touches a photo (see :mod:`searchindex.store.repair`).

        Raises:
            IndexNotFoundError, IndexLockedError, IndexCorruptError (nothing readable to recover).
        """
        from ..store.repair import repair_index

        return repair_index(path)

    def check_model(self, model: str | None, pretrained: str | None) -> None:
        """Raise :class:`ModelMismatchError` unless ``model``/``pretrained`` (``None``: any) match this index."""
        self.spec.require(model, pretrained)

    def close(self) -> None:
        self.models.close()
        self.catalog.close()

    def __enter__(self) -> Index:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Index({str(self.path)!r}, model={self.spec.model!r})"

    @classmethod
    def reindex(cls, path: str | os.PathLike[str], model: str | None, pretrained: str | None = None, *,
                device: str = "auto", precision: str = "auto", progress: ProgressCallback | None = None,
                batch_size: int = DEFAULT_BATCH_SIZE, workers: int | None = None,
                max_megapixels: float = DEFAULT_MAX_MEGAPIXELS, max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
                stop: threading.Event | None = None) -> IndexSummary:
        """Re-embed every image of the index at ``path`` with another model (options as for :meth:`add_folder`).

        Built beside the old index, which stays searchable, and swapped in atomically (inside it, and
        swapped in file by file, when the index folder is a mount point); an interrupted run resumes
        when called again with the same model (see :mod:`searchindex.index.reindex`).

        Raises:
            IndexNotFoundError, IndexLockedError, IndexWriteError, ModelError.
        """
        from .reindex import reindex_folder

        with write_errors(Path(path)):
            return reindex_folder(cls, path, model, pretrained, device=device, precision=precision,
                                  progress=progress, batch_size=batch_size, workers=workers,
                                  max_megapixels=max_megapixels, max_file_bytes=max_file_bytes, stop=stop)

    # -- searching --------------------------------------------------------

    def search(self, query: str | Term | Query | Sequence[Term], k: int | None = DEFAULT_K, *,
               request: SearchRequest | None = None, filters: Filters | None = None,
               min_score: float | None = None, threshold: str | None = None, sort: str = "score",
               tag: str | None = None, like: Sequence[Shot] = (), unlike: Sequence[Shot] = (),
               pool: int = DEFAULT_POOL, mode: str = "auto", rerank: str | None = None,
               rerank_top: int = DEFAULT_RERANK_TOP, rerank_model: str | None = None,
               fusion: str = DEFAULT_FUSION, persons: Sequence[str] = ()) -> list[SearchResult]:
        """The images that best match ``query``, best first.

        Safe to call from several threads at once on one index (see the class docstring).

        Args:
            query: a text, a :class:`~searchindex.search.query.Term` (text or image file, with a
                weight), a :class:`~searchindex.search.query.Query`, or a list of terms: their unit
                embeddings are summed with their weights (negative ones subtract) and normalised.
            k: the most results; ``None`` for no limit (with a cutoff).
            request: every option at once, a :class:`SearchRequest` (then ``k`` and the options
                below must be left at their defaults).
            filters: only images that pass these :class:`~searchindex.store.catalog.filters.Filters`
                (path globs, size, date taken, camera, position); the ranking among them stays exact.
            min_score: only results with at least this cosine similarity (-1..1).
            threshold: ``"auto"``: only the results that stand out for this query (an adaptive cutoff).
            sort: ``"score"`` (best first) or ``"date"`` (newest first; the same results).
            tag: only images carrying this zero-shot label (see :meth:`tag`).
            like, unlike: example images (paths or image ids) the results are reranked towards / away from.
            pool: how many top candidates the ``like``/``unlike`` reranker sees.
            mode: ``"vector"`` (CLIP only), ``"text"`` (words only: keywords, captions, file names),
                ``"hybrid"`` (both rankings fused) or ``"auto"`` (hybrid when some image's words
                match all the query's words).
            rerank: ``"itm"``: re-score the top results with BLIP's image-text matching head
                (``searchindex[caption]``); ``rerank_top`` of them, with ``rerank_model``.
            fusion: how ``hybrid`` fuses the two rankings.
            persons: names of persons (see :meth:`name_person`) who must all be in each image
                (``searchindex[faces]``; case-insensitive).

        Raises:
            QueryError: empty query, unreadable image term, unknown tag, unknown person, unusable example image,
                a mode the query cannot use; :class:`~searchindex.errors.ParameterError` (a
                ``QueryError``) for a bad option value (``k=0``, ``k=1.5``, ``mode="fast"``).
        """
        request = SearchRequest.of(request, k, {
            "filters": filters, "min_score": min_score, "threshold": threshold, "sort": sort, "tag": tag,
            "persons": persons, "like": like, "unlike": unlike, "pool": pool, "mode": mode, "rerank": rerank,
            "rerank_top": rerank_top, "rerank_model": rerank_model, "fusion": fusion})
        self._follow_swap()
        return self._searcher.search(query, request)

    def search_image(self, path: str | os.PathLike[str], k: int | None = DEFAULT_K, *,
                     request: SearchRequest | None = None, filters: Filters | None = None,
                     min_score: float | None = None, threshold: str | None = None, sort: str = "score",
                     tag: str | None = None, like: Sequence[Shot] = (), unlike: Sequence[Shot] = (),
                     pool: int = DEFAULT_POOL, mode: str = "auto", rerank: str | None = None,
                     rerank_top: int = DEFAULT_RERANK_TOP, rerank_model: str | None = None,
                     fusion: str = DEFAULT_FUSION, persons: Sequence[str] = ()) -> list[SearchResult]:
        """The images most similar to the image file at ``path`` (options as in :meth:`search`).

        Raises:
            QueryError: the file cannot be read or decoded; bad option values as in :meth:`search`.
        """
        return self.search(Term.of_image(path), k, request=request, filters=filters, min_score=min_score,
                           threshold=threshold, sort=sort, tag=tag, like=like, unlike=unlike, pool=pool,
                           mode=mode, rerank=rerank, rerank_top=rerank_top, rerank_model=rerank_model,
                           fusion=fusion, persons=persons)

    def search_vector(self, vector: np.ndarray, k: int | None = DEFAULT_K, *, request: SearchRequest | None = None,
                      filters: Filters | None = None, min_score: float | None = None,
                      threshold: str | None = None, sort: str = "score", tag: str | None = None,
                      like: Sequence[Shot] = (), unlike: Sequence[Shot] = (),
                      pool: int = DEFAULT_POOL, persons: Sequence[str] = ()) -> list[SearchResult]:
        """The images nearest to an embedding from this index's model (options as in :meth:`search`,
        without ``mode``, ``fusion`` and ``rerank``, which need words); under a filter, the exact top
        ``k`` of the matching images (see :meth:`~searchindex.search.searcher.Searcher.search_vector`)."""
        request = SearchRequest.of(request, k, {
            "filters": filters, "min_score": min_score, "threshold": threshold, "sort": sort, "tag": tag,
            "like": like, "unlike": unlike, "pool": pool, "persons": persons})
        self._follow_swap()
        return self._searcher.search_vector(vector, request)

    def embed(self, query: str | Term | Query | Sequence[Term]) -> np.ndarray:
        """The unit-length query vector of a text, term, query or list of terms."""
        return self._searcher.embed(query)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Unit embeddings of query texts (see :meth:`searchindex.models.session.ModelSession.encode_texts`)."""
        return self.models.encode_texts(texts)

    # -- facts ------------------------------------------------------------

    def count(self) -> int:
        """Number of indexed images."""
        self._follow_swap()  # another process's reindex: its model, not the one opened
        return self.catalog.read.image_count()

    def image(self, image_id: int) -> ImageDetails:
        """The catalog facts, tags, captions and keywords of one indexed image.

        Raises:
            NotFoundError: no image with this id (never indexed, or removed since).
        """
        return image_details(self.catalog, image_id)

    def failures(self) -> list[FailureRecord]:
        """Files that could not be indexed, with their reasons."""
        self._follow_swap()  # another process's reindex: its model, not the one opened
        return self.catalog.read.failures()

    def info(self) -> IndexInfo:
        """What the index is made of; the FAISS figures describe the saved vector file (no loading)."""
        self._follow_swap()  # another process's reindex: its model, not the one opened
        return describe_index(self.path, self.catalog)
