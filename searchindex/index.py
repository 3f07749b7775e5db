"""``Index``: the one domain object of the library, a facade over its collaborators.

An :class:`Index` owns its lifecycle (create, open, close, the writer lock) and
:meth:`~Index.info`; everything else is one call to a collaborator that owns
its own state:

- :attr:`Index.catalog` (:class:`~searchindex.store.catalog.Catalog`): the SQLite truth,
  one repository per concern;
- :attr:`Index.vectors` (:class:`~searchindex.store.vector_store.VectorStore`): the FAISS cache;
- :attr:`Index.models` (:class:`~searchindex.models.session.ModelSession`): encoders, loaded once;
- indexing (:mod:`searchindex.ingest`), the searcher (:mod:`searchindex.search`), tags,
  captions and duplicates (:mod:`searchindex.enrich`).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .defaults import DEFAULT_DUPLICATE_THRESHOLD
from .errors import IndexExistsError, IndexNotFoundError
from .models.backends import load_encoder
from .models.cache import tower_key
from .models.encoders import Encoder
from .models.session import ModelSession
from .models.spec import ModelSpec, resolve_model
from .results import Concept, DuplicateGroup, FailureRecord, IndexInfo, IndexSummary, SearchResult
from .search.present import image_details
from .search.query import Query, Term
from .search.request import DEFAULT_K, SearchRequest, Shot
from .search.searcher import Searcher
from .store.catalog import Catalog
from .store.folder import create_catalog, default_index_path, file_key, holds_index, refuse_strangers, write_errors
from .store.info import describe_index
from .store.lock import WriterLock
from .store.querycache import QueryCache
from .store.records import ImageDetails
from .store.vector_store import VectorStore
from .store.vectors import DEFAULT_FACTORY, canonical_factory

if TYPE_CHECKING:
    from .ingest.exchange import ExportSummary, ImportProgress, ImportSummary
    from .ingest.produce import Producer
    from .ingest.scan import FileEntry
    from .models.captioners import Captioner
    from .results import CaptionProgress, CaptionSummary, LabelReport
    from .store.check import CheckReport
    from .store.index_build import BuildReport
    from .store.repair import RepairReport

__all__ = ["Index", "IndexInfo", "SearchRequest", "SearchResult", "Shot", "default_index_path"]

log = logging.getLogger(__name__)

#: The options :meth:`Index.search_vector` takes (no words, so no mode, fusion or rerank).
_VECTOR_OPTIONS = ("filters", "min_score", "threshold", "sort", "tag", "like", "unlike", "pool")


class Index:
    """A searchable image index stored in one folder.

    Create one with :meth:`create`, reopen it with :meth:`open`.  The model that
    built the index is recorded in it and always used for it::

        index = Index.create("photos.idx", model="tiny-shapes")
        index.add_folder("~/Pictures")
        index.search("a red circle", k=5)
    """

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
        self.dim = int(catalog.meta()["dim"])
        self.models = ModelSession(self.spec, self.dim, device=self._device, precision=self._precision,
                                   cache=lambda: QueryCache(self.path, tower_key(self.spec), self.dim))
        if old is not None:
            old.close()  # its query cache
            if old.spec.same_weights(self.spec) and old.dim == self.dim:
                self.models.take_models_of(old)  # the same weights: keep what is loaded
        self.vectors = VectorStore(self.path, catalog, self.dim)
        self._searcher = Searcher(catalog, self.vectors, self.models)
        self._catalog_key = file_key(catalog.path)  # another process's reindex swaps the folder's

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
        (by collection size, :func:`~searchindex.store.index_types.choose_factory`) or a FAISS
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
        from .store.check import check_index

        return check_index(path, files=files)

    @staticmethod
    def repair(path: str | os.PathLike[str]) -> RepairReport:
        """Repair the index at ``path``: recover a damaged catalog (kept aside), rebuild the vector
        file, remove the index's own leftovers; never touches a photo (see :mod:`searchindex.store.repair`).

        Raises:
            IndexNotFoundError, IndexLockedError, IndexCorruptError (nothing readable to recover).
        """
        from .store.repair import repair_index

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

    @property
    def encoder(self) -> Encoder:
        """The index's encoder, loaded once on first use."""
        return self.models.encoder

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """Hold the writer lock on the index as it is now (reopened if another process replaced it);
        turn failures to write the index folder into :class:`IndexWriteError`."""
        with write_errors(self.path), WriterLock(self.path):
            self._follow_swap()
            yield

    # -- indexing ---------------------------------------------------------

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
        folders = [folder] if isinstance(folder, (str, os.PathLike)) else list(folder)
        from .ingest.engines import engine_options
        from .ingest.scan import scan_folders

        options = engine_options(engine, options, self.models)
        skipped: list[str] = []
        entries = list(scan_folders(folders, skipped))
        # Refused (without building it) when even this run could not give it enough vectors to train.
        wanted = self.vectors.check_index_type(index_type, self.catalog.images.count() + len(entries))
        with self._writing():
            self.vectors.set_index_type(wanted)
            return self._run(entries, [os.fspath(f) for f in folders], t0, skipped=skipped, **options)

    def add_files(self, paths: Iterable[str | os.PathLike[str]], **options: Any) -> IndexSummary:
        """Index exactly these image files (no folder scan; nothing else leaves the index).

        Options and errors as for :meth:`add_folder`; a missing file is a failure.
        """
        t0 = time.perf_counter()
        from .ingest import reindex as re_index

        entries = re_index.entries_of(os.path.abspath(os.fspath(p)) for p in paths)
        with self._writing():
            return self._run(entries, [], t0, **options)

    def _run(self, entries: list[FileEntry], roots: list[str], t0: float, **options: Any) -> IndexSummary:
        from .enrich.tagging import tag_new_images
        from .ingest.indexer import index_entries

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

    @classmethod
    def reindex(cls, path: str | os.PathLike[str], model: str | None, pretrained: str | None = None, *,
                device: str = "auto", precision: str = "auto", **options: Any) -> IndexSummary:
        """Re-embed every image of the index at ``path`` with another model (options as for :meth:`add_folder`).

        Built beside the old index, which stays searchable, and swapped in atomically; an
        interrupted run resumes when called again with the same model (see :mod:`searchindex.ingest.reindex`).

        Raises:
            IndexNotFoundError, IndexLockedError, IndexWriteError, ModelError.
        """
        from .ingest import reindex as re_index

        with write_errors(Path(path)):
            return re_index.reindex(cls, path, model, pretrained, device=device, precision=precision, **options)

    # -- searching --------------------------------------------------------

    def search(self, query: str | Term | Query | Sequence[Term], k: int | None = DEFAULT_K, *,
               request: SearchRequest | None = None, **options: Any) -> list[SearchResult]:
        """The images that best match ``query``, best first.

        Args:
            query: a text, a :class:`~searchindex.search.query.Term` (text or image file, with a
                weight), a :class:`~searchindex.search.query.Query`, or a list of terms: their unit
                embeddings are summed with their weights (negative ones subtract) and normalised.
            k: the most results; ``None`` for no limit (with a cutoff).
            request: every option at once, a :class:`SearchRequest` (then ``k`` and ``options`` are unused).
            options: the fields of :class:`SearchRequest` (``filters``, ``min_score``, ``threshold``,
                ``sort``, ``tag``, ``like``/``unlike``, ``pool``, ``mode``, ``rerank``, ``fusion``, ...).

        Raises:
            QueryError: empty query, unreadable image term, unknown tag, unusable example image,
                bad option values, a mode the query cannot use.
        """
        request = SearchRequest.of(request, k, options)
        self._follow_swap()
        return self._searcher.search(query, request)

    def search_image(self, path: str | os.PathLike[str], k: int | None = DEFAULT_K,
                     **options: Any) -> list[SearchResult]:
        """The images most similar to the image file at ``path`` (options as in :meth:`search`).

        Raises:
            QueryError: the file cannot be read or decoded.
        """
        return self.search(Term.of_image(path), k, **options)

    def search_vector(self, vector: np.ndarray, k: int | None = DEFAULT_K, *, request: SearchRequest | None = None,
                      **options: Any) -> list[SearchResult]:
        """The images nearest to an embedding from this index's model (options as in :meth:`search`,
        without ``mode``, ``fusion`` and ``rerank``); under a filter, the exact top ``k`` of the
        matching images (see :meth:`~searchindex.search.searcher.Searcher.search_vector`)."""
        request = SearchRequest.of(request, k, options, _VECTOR_OPTIONS)
        self._follow_swap()
        return self._searcher.search_vector(vector, request)

    def embed(self, query: str | Term | Query | Sequence[Term]) -> np.ndarray:
        """The unit-length query vector of a text, term, query or list of terms."""
        return self._searcher.embed(query)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Unit embeddings of query texts (see :meth:`searchindex.models.session.ModelSession.encode_texts`)."""
        return self.models.encode_texts(texts)

    def duplicates(self, threshold: float = DEFAULT_DUPLICATE_THRESHOLD) -> list[DuplicateGroup]:
        """Groups of near-identical images (resized, recompressed, lightly cropped or edited copies)
        whose embeddings' cosine similarity is at least ``threshold``, directly or through other
        copies; best copy first, largest group first (see :mod:`searchindex.enrich.duplicates`)."""
        self._follow_swap()
        from .enrich.duplicates import find_duplicates

        return find_duplicates(self.catalog, self.vectors, threshold)

    # -- zero-shot tags ---------------------------------------------------

    def tag(self, labels: Sequence[str] | None = None,
            templates: str | os.PathLike[str] | Sequence[str] | None = None) -> list[LabelReport]:
        """Define zero-shot labels (``None``: re-tag the stored ones, recalibrating) and tag every image;
        images indexed later are tagged by :meth:`add_folder` (see :mod:`searchindex.enrich.tagging`).

        ``templates``: ``"default"`` (the CLIP-paper ensemble), ``"single"``, a file with one
        template per line, or a list, each containing ``{}``; stored labels keep theirs.

        Raises:
            QueryError: no labels (given or stored), bad templates.
            IndexLockedError, IndexWriteError: as for :meth:`add_folder`.
        """
        from .enrich.tagging import labels_to_tag, tag_catalog

        todo = labels_to_tag(self.catalog, lambda: self.encoder, labels, templates)
        with self._writing():
            return tag_catalog(self.catalog, self.dim, todo, recalibrate=True)

    def untag(self, labels: Sequence[str]) -> int:
        """Forget labels and their tags; returns how many of them existed."""
        with self._writing():
            return self.catalog.tags.remove(list(labels))

    def tags(self) -> list[tuple[str, int]]:
        """(label, number of images tagged) for every stored label."""
        return self.catalog.tags.counts()

    # -- captions ---------------------------------------------------------

    def caption(self, model: str | Captioner | None = None, *, device: str | None = None,
                progress: Callable[[CaptionProgress], None] | None = None, stop: threading.Event | None = None,
                **options: Any) -> CaptionSummary:
        """Caption every indexed image that has no caption from ``model`` yet; each batch is
        committed at once, so an interrupted run resumes, and another model's captions stay.

        ``model``: a Hugging Face hub id or local folder (default
        :data:`~searchindex.defaults.DEFAULT_CAPTION_MODEL`) or a loaded
        :class:`~searchindex.models.captioners.Captioner`; ``device``: default the index's;
        ``options``: ``prompt``, ``batch_size``, ``max_new_tokens``, ``num_beams`` (see
        :func:`searchindex.enrich.captions.caption_index`).

        Raises:
            MissingExtraError (``searchindex[caption]``), WeightsUnavailableError,
            UnknownModelError, IndexLockedError, IndexWriteError.
        """
        from .enrich.captions import caption_index

        with self._writing():
            return caption_index(self.catalog, model, device=device or self._device, progress=progress,
                                 stop=stop, **options)

    def caption_counts(self) -> dict[str, int]:
        """Model -> number of images it has captioned."""
        return dict(self.catalog.captions.counts())

    # -- embeddings as Parquet ----------------------------------------------

    def export_embeddings(self, out: str | os.PathLike[str], *, layout: str = "parquet",
                          rows_per_file: int | None = None) -> ExportSummary:
        """Write every image's embedding, path, hash and metadata as Parquet under the new folder ``out``,
        in ``layout`` ``parquet`` or ``clip-retrieval`` (see :mod:`searchindex.ingest.parquet`).

        Raises:
            EmbeddingFileError: ``out`` exists and is not empty.
            MissingExtraError: pyarrow is not installed (``searchindex[parquet]``).
        """
        from .ingest.exchange import ROWS_PER_FILE, export_embeddings

        return export_embeddings(self.catalog, self.spec, self.dim, out, layout=layout,
                                 rows_per_file=rows_per_file or ROWS_PER_FILE)

    def import_embeddings(
        self, files: str | os.PathLike[str] | Sequence[str | os.PathLike[str]], *, model: str | None = None,
        pretrained: str | None = None, base: str | os.PathLike[str] | None = None,
        progress: Callable[[ImportProgress], None] | None = None,
    ) -> ImportSummary:
        """Add embeddings computed elsewhere (Parquet files or folders, either layout) to this index.

        Rows are joined to files on disk by ``image_path`` (relative to ``base``), checked
        against ``sha256`` when present; missing or changed files become failures.  Files that
        do not record their model (clip-retrieval's) need ``model``/``pretrained`` to say it.

        Raises:
            ModelMismatchError: another model or vector size (nothing is written).
            EmbeddingFileError, IndexLockedError, IndexWriteError, MissingExtraError.
        """
        from .ingest.exchange import import_embeddings

        declared = resolve_model(model, pretrained) if model else None
        with self._writing():
            summary = import_embeddings(self.catalog, self.spec, self.dim, files, declared=declared, base=base,
                                        progress=progress)
            self.vectors.save()
        return summary

    # -- facts ------------------------------------------------------------

    def count(self) -> int:
        """Number of indexed images."""
        return self.catalog.images.count()

    def image(self, image_id: int) -> ImageDetails:
        """The catalog facts, tags, captions and keywords of one indexed image.

        Raises:
            NotFoundError: no image with this id (never indexed, or removed since).
        """
        return image_details(self.catalog, image_id)

    # -- concepts: saved relevance feedback ----------------------------------

    def save_concept(self, name: str, query: str | None = None, like: Sequence[int] = (),
                     unlike: Sequence[int] = ()) -> Concept:
        """Save (or replace) a named concept: a query text and example image ids that teach it
        (``search --concept NAME`` and the web API's ``concept`` run it).

        Raises:
            QueryError: an empty name, nothing to search for, or an example id not in the index.
        """
        return self.catalog.concepts.save(name, query, like, unlike)

    def concepts(self) -> list[Concept]:
        """Every saved concept, by name (example images removed since are left out)."""
        return self.catalog.concepts.all()

    def concept(self, name: str) -> Concept:
        """The saved concept called ``name``.

        Raises:
            NotFoundError: no concept of that name.
        """
        return self.catalog.concepts.get(name)

    def remove_concept(self, name: str) -> bool:
        """Forget a concept; False when there was none of that name."""
        return self.catalog.concepts.remove(name)

    def failures(self) -> list[FailureRecord]:
        """Files that could not be indexed, with their reasons."""
        return self.catalog.images.failures()

    def info(self) -> IndexInfo:
        """What the index is made of; the FAISS figures describe the saved vector file (no loading)."""
        return describe_index(self.path, self.catalog)
