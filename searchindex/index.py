"""``Index``: the one domain object of the library."""

from __future__ import annotations

import ctypes
import dataclasses
import errno
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import numpy as np
import sqlalchemy.exc

from .catalog import CATALOG_FILE, Catalog, FailureRecord
from .defaults import DEFAULT_POOL, DEFAULT_RERANK_TOP
from .duplicates import DEFAULT_THRESHOLD as DEFAULT_DUPLICATE_THRESHOLD
from .duplicates import DuplicateGroup, DuplicateImage, find_pairs, group_pairs
from .encoders import Encoder, ModelSpec, load_encoder, resolve_model
from .errors import (
    IndexExistsError,
    IndexFolderError,
    IndexNotFoundError,
    IndexWriteError,
    ModelMismatchError,
    QueryError,
)
from .hybrid import DEFAULT_FUSION, FUSIONS, TextRanking, fuse, query_words, rank_text
from .images import DEFAULT_MAX_MEGAPIXELS, decode_image
from .indexer import IndexSummary, ProgressCallback, index_entries
from .lock import LOCK_FILE, WriterLock
from .onnxmodels import TextEncoder, export_text_tower, load_text_encoder, text_backend, tower_key
from .query import Filters, Query, Term, auto_cutoff, combine
from .querycache import CACHE_FILE, QueryCache
from .scan import FileEntry, scan_folders
from .vectors import (
    DEFAULT_FACTORY,
    BuildReport,
    VectorFileError,
    VectorIndex,
    build_index,
    canonical_factory,
    latest_vector_file,
    planned_factory,
    read_vector_file,
    train_size,
)

if TYPE_CHECKING:
    from .captioning import Captioner, CaptionProgress, CaptionSummary
    from .tagging import LabelReport

__all__ = ["DEFAULT_POOL", "Index", "IndexInfo", "SearchResult", "Shot", "default_index_path"]

# An example image for few-shot search: a path, or the id of an indexed image.
Shot = Union[str, "os.PathLike[str]", int]  # noqa: UP007 (a runtime alias; X | Y needs 3.10 types)


log = logging.getLogger(__name__)

#: Orders in which search results can be returned.
SORT_KEYS = ("score", "date")
#: Search modes (see :meth:`Index.search`).
MODES = ("auto", "vector", "text", "hybrid")
#: Hybrid search fuses at least this many CLIP results with the word matches.
FUSION_DEPTH = 100
#: The most images one query word may match in the word ranking.
TEXT_DEPTH = 1000
# Keyword-list sources whose text is "a, b, c": shown as separate keywords.
_LIST_SOURCES = frozenset({"xmp:subject", "iptc:keywords"})
#: --threshold auto looks for a break among this many top scores first (then 4x more, up to AUTO_MAX_POOL).
AUTO_POOL = 1024
AUTO_MAX_POOL = 65536
#: Random images whose scores form the background distribution of --threshold auto's fallback.
AUTO_BACKGROUND = 2000


def _sorted(results: list[SearchResult], sort: str) -> list[SearchResult]:
    """``results`` in the requested order; ``rank`` stays the rank by score."""
    if sort != "date":
        return results
    # Local wall-clock ISO text sorts chronologically; Python's sort is stable, so
    # equal dates stay in score order.
    dated = sorted((r for r in results if r.taken_at), key=lambda r: r.taken_at or "", reverse=True)
    return dated + [r for r in results if not r.taken_at]


def _first_caption(captions: Sequence[tuple[str, str]] | None) -> str | None:
    return captions[0][1] if captions else None


def _keywords(texts: Sequence[tuple[str, str]] | None) -> tuple[str, ...]:
    """The words people wrote, as shown with a result: each keyword, each description, once."""
    out: dict[str, None] = {}
    for source, text in texts or ():
        parts = text.split(", ") if source in _LIST_SOURCES else text.splitlines()
        for part in parts:
            part = part.strip()
            if part and part.casefold() not in {o.casefold() for o in out}:
                out[part] = None
    return tuple(out)


def default_index_path() -> Path:
    """``$SEARCHINDEX_HOME`` if set, else the platform's user-data folder for searchindex."""
    home = os.environ.get("SEARCHINDEX_HOME")
    if home:
        return Path(home).expanduser()
    import platformdirs

    return platformdirs.user_data_path("searchindex")


@dataclass(frozen=True)
class SearchResult:
    """One hit: its rank (1-based), score, and catalog facts.

    ``score`` is what the results are ranked by: the CLIP cosine similarity in
    vector mode, the fused score in hybrid mode, BM25 in text mode, the ITM match
    probability after ``rerank="itm"``; ``vector_score`` and ``text_score`` keep
    the parts.
    """

    rank: int
    score: float
    path: str
    image_id: int
    width: int
    height: int
    format: str
    size: int
    sha256: str
    taken_at: str | None = None  # local wall-clock time, ISO 8601 (see searchindex.metadata)
    taken_offset: str | None = None  # "+02:00" when the camera recorded it
    date_source: str | None = None  # "exif", "mtime", or None when not read yet
    camera_make: str | None = None
    camera_model: str | None = None
    lens: str | None = None
    gps_lat: float | None = None
    gps_lon: float | None = None
    tags: tuple[str, ...] = ()  # zero-shot labels the image carries, strongest first
    caption: str | None = None  # a generated caption (searchindex caption), if any
    keywords: tuple[str, ...] = ()  # keywords and descriptions people wrote (XMP, IPTC, sidecars)
    vector_score: float | None = None  # CLIP cosine similarity (None in text mode)
    text_score: float | None = None  # BM25 of the query's words (None when words played no part in the rank)


@dataclass(frozen=True)
class IndexInfo:
    """What an index is made of and how big it is."""

    path: str
    model: str
    pretrained: str
    checkpoint_sha256: str | None
    dim: int
    images: int
    failures: int
    generation: int
    faiss_factory: str
    schema_version: int
    catalog_bytes: int
    vector_bytes: int
    index_type: str = "auto"  # what was asked for: "auto" (the size policy) or a factory string
    nprobe: int | None = None  # IVF lists probed per query, tuned to a recall target
    tuned_recall: float | None = None  # recall@10 of that setting against exact search, when tuned
    built_at: int = 0  # images the vector index held when it was last rebuilt
    faiss_memory_bytes: int = 0  # the FAISS index in memory (its serialized size)
    bytes_per_image: float = 0.0
    captions: dict[str, int] = dataclasses.field(default_factory=dict)  # captioning model -> images captioned


# The names an index folder's own files have: everything else in it is a stranger's
# and is never deleted (SQLite's journals, the writer lock, the query cache, vector
# files and the temporary files of killed writers included).
_OWNED_NAMES = frozenset(
    [LOCK_FILE] + [base + suffix for base in (CATALOG_FILE, CACHE_FILE) for suffix in ("", "-wal", "-shm", "-journal")]
)
_OWNED_PATTERNS = (
    re.compile(r"^vectors-\d{12}\.faiss$"),
    re.compile(r"^\.vectors-\d{12}\.faiss\.\d+\.tmp$"),
    re.compile(r"^\." + re.escape(CATALOG_FILE) + r"\.\d+\.tmp(-wal|-shm|-journal)?$"),
)


def _owned(name: str) -> bool:
    """True for the names of files an index folder's index made (and may delete)."""
    return name in _OWNED_NAMES or any(p.match(name) for p in _OWNED_PATTERNS)


def _strangers(folder: Path) -> list[str]:
    """Names in ``folder`` that are not the index's own files (sorted); none when it does not exist."""
    try:
        return sorted(n for n in os.listdir(folder) if not _owned(n))
    except FileNotFoundError:
        return []
    except NotADirectoryError:
        raise IndexFolderError(f"{folder} exists and is not a folder; give another --index") from None


def _remove_index_files(folder: Path) -> list[str]:
    """Delete the index's own files in ``folder``, and the folder if nothing else is left in it.

    Returns the names left (other people's files, never touched).
    """
    for name in os.listdir(folder):
        if _owned(name):
            try:
                os.unlink(folder / name)
            except FileNotFoundError:
                pass
    left = _strangers(folder)
    if not left:
        os.rmdir(folder)
    return left


def _refuse_strangers(folder: Path) -> None:
    strangers = _strangers(folder)
    if strangers:
        shown = ", ".join(strangers[:3]) + (", ..." if len(strangers) > 3 else "")
        raise IndexFolderError(
            f"{folder} is not empty ({len(strangers)} entries: {shown}); an index needs a folder of its own "
            "(a new or empty folder, or an existing index); give another --index"
        )


def _exchange(a: Path, b: Path) -> None:
    """Swap two folders: atomically where the OS can (Linux renameat2), else by two renames."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        renameat2 = None
    if renameat2 is not None:
        at_fdcwd, rename_exchange = -100, 2
        if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
            return
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
            raise OSError(err, os.strerror(err), str(b))
    aside = b.with_name(b.name + ".old")
    os.rename(b, aside)
    os.rename(a, b)
    os.rename(aside, a)


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
        self._device = device
        self._precision = precision
        self._encoder: Encoder | None = None
        self._text_encoder: TextEncoder | None = None
        self._query_cache: QueryCache | None = None
        self._lock = threading.RLock()
        self._itm: dict[str, Any] = {}  # rerank model name -> ITM scorer
        self._attach(catalog)

    def _attach(self, catalog: Catalog) -> None:
        """Use ``catalog``; what was derived from a previous one (vectors, a model of other weights) is dropped."""
        self._catalog = catalog
        meta = catalog.meta()
        spec: ModelSpec = catalog.model_spec()
        if getattr(self, "spec", None) is not None and not spec.same_weights(self.spec):
            self._encoder, self._text_encoder, self._itm = None, None, {}
        if self._query_cache is not None:
            self._query_cache.close()
            self._query_cache = None
        self.spec = spec
        self.dim = int(meta["dim"])
        self._id = meta.get("index_id", "")
        self._factory = meta.get("faiss_factory", DEFAULT_FACTORY)
        self._index_type = meta.get("faiss_index_type") or "auto"
        self._vectors: VectorIndex | None = None
        self._vectors_saved = False  # whether the folder's vector file was checked and is current
        # Which catalog file this is: another process's reindex swaps the folder's.
        st = os.stat(catalog.path)
        self._catalog_key = (st.st_dev, st.st_ino)

    def _follow_swap(self) -> None:
        """Reopen the catalog when the folder's catalog file is no longer the one open here.

        Another process's ``reindex`` replaces the whole index; writing on through the
        old catalog would lose every write.
        """
        with self._lock:
            try:
                st = os.stat(self._catalog.path)
            except FileNotFoundError:
                raise IndexNotFoundError(f"the index at {self.path} was removed by another process") from None
            if (st.st_dev, st.st_ino) == self._catalog_key:
                return
            log.warning("the index at %s was replaced by another process (reindex): reopening it", self.path)
            self._catalog.close()
            self._attach(Catalog.open(self.path))

    @contextmanager
    def _write_locked(self) -> Iterator[None]:
        """Hold the writer lock on the index as it is now (reopened if another process replaced it)."""
        with self._writing(), WriterLock(self.path):
            self._follow_swap()
            yield

    # -- lifecycle --------------------------------------------------------

    @staticmethod
    def exists(path: str | os.PathLike[str]) -> bool:
        """True when ``path`` holds an index."""
        return (Path(path).expanduser() / CATALOG_FILE).is_file()

    @classmethod
    def create(
        cls,
        path: str | os.PathLike[str],
        model: str | None = None,
        pretrained: str | None = None,
        *,
        device: str = "auto",
        precision: str = "auto",
        index_type: str = "auto",
    ) -> Index:
        """Create an empty index at ``path`` for ``model`` (loads the model once).

        Args:
            model: an open_clip architecture (``ViT-B-32``), ``hf-hub:org/repo``,
                ``local-dir:/folder``, or a built-in model (``tiny-shapes``).
                Defaults to :data:`searchindex.encoders.DEFAULT_MODEL`.
            pretrained: an open_clip pretrained tag, a local checkpoint file
                (safetensors, or a torch file loaded with ``weights_only=True``),
                or ``"none"`` for random weights. Defaults to the model's first tag.
            device: ``auto``, ``cpu`` or ``cuda``.
            precision: image-encoding precision, ``auto`` (fp16 on CUDA, int8 on x86
                CPUs, fp32 on other CPUs), ``fp32``, ``bf16``, ``int8`` (CPU), ``onnx``
                (CPU, the ``onnx`` extra) or ``fp16`` (CUDA).
            index_type: the FAISS index type: ``auto`` (chosen by collection size, see
                :func:`searchindex.vectors.choose_factory`) or an index_factory string
                (``IVF1024,SQ8``), built once there are enough vectors to train it.

        Raises:
            IndexExistsError: an index already exists at ``path``.
            IndexTypeError: FAISS cannot build ``index_type``.
            UnknownModelError, WeightsUnavailableError, ModelError: see :mod:`searchindex.errors`.
        """
        folder = Path(path).expanduser()
        if cls.exists(folder):
            raise IndexExistsError(f"an index already exists at {folder}")
        _refuse_strangers(folder)  # before loading the model: fail fast
        if index_type != "auto":
            canonical_factory(index_type)  # fail before loading the model
        spec = resolve_model(model, pretrained)
        # Load before writing anything: a model that cannot load leaves no half-made index.
        encoder = load_encoder(spec, device, precision)
        if index_type != "auto":
            index_type = canonical_factory(index_type, encoder.dim)
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            raise IndexFolderError(f"{folder} exists and is not a folder; give another --index") from None
        # Under the writer lock: of two processes creating the same index, the
        # second finds it locked or made, and replaces nothing.
        with WriterLock(folder):
            if cls.exists(folder):
                raise IndexExistsError(f"an index already exists at {folder} (made by another process meanwhile)")
            _refuse_strangers(folder)
            # Every index starts exact and empty; the first run that ends with enough
            # vectors builds the requested (or auto-chosen) type.
            catalog = Catalog.create(folder, spec, encoder.dim, DEFAULT_FACTORY,
                                     meta={"faiss_index_type": index_type})
        index = cls(folder, catalog, device=device, precision=precision)
        index._encoder = encoder
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

    def check_model(self, model: str | None, pretrained: str | None) -> None:
        """Raise :class:`ModelMismatchError` unless ``model``/``pretrained`` match this index.

        ``None`` means "whatever the index uses".
        """
        if model is None and pretrained is None:
            return
        wanted = resolve_model(model or self.spec.model, pretrained)
        if not wanted.same_weights(self.spec):
            raise ModelMismatchError(
                f"this index was built with {self.spec.describe()}, not {wanted.describe()}; "
                "vectors from different models cannot be mixed (`searchindex reindex --model ...` switches "
                "an index to another model)"
            )

    def close(self) -> None:
        if self._query_cache is not None:
            self._query_cache.close()
        self._catalog.close()

    def __enter__(self) -> Index:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Index({str(self.path)!r}, model={self.spec.model!r})"

    # -- model and vectors ------------------------------------------------

    @property
    def encoder(self) -> Encoder:
        """The index's encoder, loaded once on first use."""
        with self._lock:
            if self._encoder is None:
                self._encoder = load_encoder(self.spec, self._device, self._precision)
                if self._encoder.dim != self.dim:
                    raise ModelMismatchError(
                        f"{self.spec.describe()} makes {self._encoder.dim}-d vectors but the index holds {self.dim}-d"
                    )
            return self._encoder

    def _fresh_vectors(self) -> VectorIndex:
        """The vector index, caught up with the catalog's latest generation."""
        with self._lock:
            self._follow_swap()
            generation = self._catalog.generation()
            vecs = self._vectors
            if vecs is None:
                # Without a usable file, start exact: it needs no training, and the
                # next indexing run rebuilds the recorded type from the catalog.
                loaded = VectorIndex.load(self.path, self._id, self.dim)
                if loaded is not None and loaded.generation > generation:
                    log.warning("vector file of generation %d is newer than the catalog (%d); rebuilding from "
                                "the catalog", loaded.generation, generation)
                    loaded = None
                vecs = loaded or VectorIndex.empty(self.dim)
                vecs.fetch = self._fetch_vectors
                if vecs.generation < generation:
                    self._catch_up(vecs, generation)
                if loaded is not None and not self._matches_catalog(vecs):
                    vecs = VectorIndex.empty(self.dim)
                    vecs.fetch = self._fetch_vectors
                    loaded = None
                self._vectors_saved = loaded is not None  # else the next save must write a file
                meta = self._catalog.meta()
                if meta.get("faiss_nprobe") and meta.get("faiss_factory") == vecs.factory:
                    vecs.nprobe = int(meta["faiss_nprobe"])
            if vecs.generation < generation:
                self._catch_up(vecs, generation)
            self._vectors = vecs
            return vecs

    #: Vectors of a loaded (flat) file compared with the catalog's embeddings.
    _SAMPLE = 32

    def _matches_catalog(self, vecs: VectorIndex) -> bool:
        """True when ``vecs`` holds exactly the catalog's ids (and, flat, a sample of its vectors)."""
        ids = self._catalog.ids()
        have = vecs.ids()
        why = None
        if len(have) != len(ids):
            why = f"{len(have)} vectors for {len(ids)} images"
        elif not np.array_equal(have, ids):
            why = "its ids are not the catalog's"
        elif vecs.nprobe is None and len(ids):  # flat: the stored vectors are the catalog's exactly
            sample = np.random.default_rng(0).choice(ids, min(self._SAMPLE, len(ids)), replace=False)
            if not np.allclose(vecs.vectors(sample), self._fetch_vectors(sample), atol=1e-4):
                why = "its vectors are not the catalog's embeddings"
        if why is not None:
            log.warning("the vector file in %s does not match the catalog (%s); rebuilding from the catalog",
                        self.path, why)
        return why is None

    def _fetch_vectors(self, ids: np.ndarray) -> np.ndarray:
        """Exact vectors of ``ids`` from the catalog (zeros for ids removed meanwhile)."""
        stored = self._catalog.embeddings_by_id([int(i) for i in ids], self.dim)
        out = np.zeros((len(ids), self.dim), dtype=np.float32)
        for row, i in enumerate(ids):
            vec = stored.get(int(i))
            if vec is not None:
                out[row] = vec
        return out

    def _catch_up(self, vecs: VectorIndex, generation: int) -> None:
        since = vecs.generation
        vecs.remove(self._catalog.removed_since(since))
        n = 0
        for ids, chunk in self._catalog.embeddings_since(since, self.dim):
            vecs.upsert(ids, chunk)
            n += len(ids)
        vecs.generation = generation
        log.debug("vector index caught up from generation %d to %d (%d vectors)", since, generation, n)

    def _save_vectors(self) -> BuildReport | None:
        """Save the caught-up vector index, then rebuild it if the index-type policy wants another type.

        Called under the writer lock at the end of every indexing run.
        """
        found = latest_vector_file(self.path)
        if (self._vectors is None and found is not None and found[1] == self._catalog.generation()
                and self._planned() is None and self._file_verifies(found[0], found[1])):
            return None  # nothing changed: FAISS need not even be loaded
        vecs = self._fresh_vectors()
        if found is None or found[1] != vecs.generation or not self._vectors_saved:
            vecs.save(self.path, self._id)
            self._vectors_saved = True
        if vecs.factory != self._factory:  # the saved file is the truth (a crash may have left meta behind)
            self._record(vecs, built_at=vecs.ntotal, recall=None)
        target = self._planned()
        return self._rebuild_vectors(target) if target is not None else None

    def _file_verifies(self, path: Path, generation: int) -> bool:
        """The cheap check of a vector file: header, checksum, identity, dimension and count (no FAISS)."""
        try:
            _, header = read_vector_file(path, generation, self._id, self.dim)
        except (OSError, VectorFileError):
            return False
        return bool(header["count"] == self._catalog.count())

    def _planned(self) -> str | None:
        meta = self._catalog.meta()
        return planned_factory(self._factory, int(meta.get("faiss_built_at") or 0), self._catalog.count(),
                               self.dim, self._index_type)

    def _record(self, vecs: VectorIndex, built_at: int, recall: float | None) -> None:
        nprobe = vecs.nprobe
        self._catalog.set_meta(faiss_factory=vecs.factory, faiss_nprobe="" if nprobe is None else str(nprobe),
                               faiss_built_at=str(built_at), faiss_recall="" if recall is None else f"{recall:.4f}")
        self._factory = vecs.factory

    def _rebuild_vectors(self, factory: str) -> BuildReport | None:
        """Build a ``factory`` index from the catalog's embeddings and swap it in atomically.

        The new index is written under a temporary name and renamed over the old
        file of the same generation, so readers see the old or the new index, and
        a crash (or a FAISS error) before the rename leaves the old one in use.
        FAISS errors and lack of memory are logged and keep the old index.
        """
        with self._lock:
            old = self._fresh_vectors()
            ids = old.ids()
            rng = np.random.default_rng(old.generation)
            sample_ids = rng.choice(ids, train_size(factory, len(ids)), replace=False)
            try:
                new, report = build_index(factory, self.dim, self._catalog.embeddings_since(0, self.dim),
                                          (sample_ids, self._fetch_vectors(sample_ids)))
            except (RuntimeError, MemoryError) as exc:
                log.warning("could not rebuild the vector index as %s (%s); keeping %s", factory,
                            str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__,
                            old.factory)
                return None
            new.generation, new.fetch = old.generation, self._fetch_vectors
            new.save(self.path, self._id)
            self._vectors = new
            self._record(new, built_at=new.ntotal, recall=report.recall)
            log.info("vector index rebuilt as %s (%d vectors, nprobe %s)", report.factory, report.vectors,
                     report.nprobe)
            return report

    # -- indexing ---------------------------------------------------------

    def add_folder(
        self,
        folder: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
        *,
        progress: ProgressCallback | None = None,
        batch_size: int = 64,
        workers: int | None = None,
        max_megapixels: float = DEFAULT_MAX_MEGAPIXELS,
        stop: threading.Event | None = None,
        index_type: str | None = None,
    ) -> IndexSummary:
        """Bring the index in line with every image below ``folder`` (or several folders).

        New and modified files are encoded; unchanged ones (same path, size and
        mtime) are skipped; touched, moved and duplicated files reuse their stored
        embedding; files gone from below the folders leave the index.  Files that
        failed before and did not change are not retried.  The model is loaded only
        if something needs encoding.

        Args:
            progress: called with an :class:`~searchindex.indexer.IndexProgress`
                after every committed batch.
            batch_size: images encoded per model call and committed per transaction.
            workers: decoding processes (default: one per CPU, at most 8; runs of
                fewer than 256 files use threads); 0 decodes in threads.
            max_megapixels: larger images are recorded as failures (decompression bombs).
            stop: when set (e.g. from a SIGINT handler), the run ends after the batch
                in flight is committed; the summary says ``interrupted``.
            index_type: change the recorded FAISS index type (``auto`` or a factory
                string; ``None`` keeps it).  At the end of every run the vector index
                is rebuilt if the recorded type (for ``auto``: the size policy) wants
                another one than it has.

        Raises:
            FolderNotFoundError: a folder does not exist.
            IndexLockedError: another process is writing to this index.
            IndexWriteError: the index folder cannot be written (disk full, read-only).
            IndexTypeError: FAISS cannot build ``index_type``.
        """
        t0 = time.perf_counter()
        wanted = self._check_index_type(index_type)
        folders = [folder] if isinstance(folder, (str, os.PathLike)) else list(folder)
        skipped: list[str] = []
        entries = list(scan_folders(folders, skipped))
        with self._write_locked():
            self._set_index_type(wanted)
            return self._index_entries(entries, [os.fspath(f) for f in folders], t0, batch_size=batch_size,
                                       workers=workers, max_megapixels=max_megapixels, progress=progress,
                                       stop=stop, skipped=skipped)

    def optimize(self, index_type: str | None = None) -> BuildReport | None:
        """Bring the vector index up to date and rebuild it if its type should change.

        What every indexing run does at its end, on its own: with ``index_type``
        (``auto`` or a factory string) the recorded choice changes first.  Returns
        how the index was rebuilt, or ``None`` when it kept its type.

        Raises:
            IndexTypeError, IndexLockedError, IndexWriteError.
        """
        wanted = self._check_index_type(index_type)
        with self._write_locked():
            self._set_index_type(wanted)
            return self._save_vectors()

    def _check_index_type(self, index_type: str | None) -> str | None:
        if index_type is None or index_type == "auto":
            return index_type
        return canonical_factory(index_type, self.dim)

    def _set_index_type(self, index_type: str | None) -> None:
        if index_type is not None and index_type != self._index_type:
            self._catalog.set_meta(faiss_index_type=index_type)
            self._index_type = index_type

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """Turn failures to write the index folder into :class:`IndexWriteError`."""
        try:
            yield
        except OSError as exc:
            raise IndexWriteError(f"cannot write the index at {self.path}: {exc.strerror or exc}") from exc
        except sqlalchemy.exc.OperationalError as exc:
            raise IndexWriteError(f"cannot write the index at {self.path}: {exc.orig}") from exc

    def _index_entries(self, entries: list[FileEntry], roots: list[str], t0: float, **options: Any) -> IndexSummary:
        counts, unchanged, interrupted = index_entries(
            self._catalog, lambda: self.encoder, self.dim, entries, roots, **options
        )
        self._save_vectors()
        if not interrupted:
            self._tag_new_images()
        if self._encoder is not None and text_backend(self._device) == "onnx":
            # The model is loaded anyway: export its text tower now, so searches need no torch.
            export_text_tower(self._encoder)
        return IndexSummary(
            scanned=len(entries), indexed=counts.indexed, unchanged=unchanged, failed=len(counts.failures),
            seconds=time.perf_counter() - t0, failures=tuple(counts.failures), new=counts.new,
            modified=counts.modified, touched=counts.touched, moved=counts.moved,
            duplicates=counts.duplicates, deleted=counts.deleted, interrupted=interrupted,
        )

    @classmethod
    def reindex(
        cls,
        path: str | os.PathLike[str],
        model: str | None,
        pretrained: str | None = None,
        *,
        device: str = "auto",
        precision: str = "auto",
        progress: ProgressCallback | None = None,
        batch_size: int = 64,
        workers: int | None = None,
        max_megapixels: float = DEFAULT_MAX_MEGAPIXELS,
        stop: threading.Event | None = None,
    ) -> IndexSummary:
        """Re-embed every image of the index at ``path`` with another model.

        The new index is built beside the old one (``.NAME.reindex``) while the old
        one stays searchable, then swapped in with one atomic rename.  Interrupted
        (``stop``, Ctrl-C, a crash), it resumes from what was committed when called
        again with the same model.  Files that have disappeared since they were
        indexed are recorded as failures of the new index.

        Raises:
            IndexNotFoundError, IndexLockedError, IndexWriteError, ModelError.
        """
        t0 = time.perf_counter()
        # Through a link to the index: swap the real folder, so the link keeps working.
        folder = Path(path).expanduser().resolve()
        staging = folder.parent / f".{folder.name}.reindex"
        with cls.open(folder, device=device, precision=precision) as old, old._writing(), WriterLock(folder):
            spec = resolve_model(model, pretrained)
            paths = old._catalog.all_paths()
            entries, missing = [], []
            for p in paths:
                try:
                    st = os.stat(p)
                    entries.append(FileEntry(p, st.st_size, st.st_mtime_ns))
                except OSError:
                    missing.append(FailureRecord(p, -1, 0, "file not found (gone before reindex)"))
            new: Index | None = None
            if cls.exists(staging):
                new = cls.open(staging, device=device, precision=precision)
                if not new.spec.same_weights(spec):  # a leftover of another reindex: start over
                    new.close()
                    new = None
            if new is None:
                if staging.is_dir() and not staging.is_symlink():
                    _remove_index_files(staging)  # only what an index made: strangers make create refuse
                new = cls.create(staging, model, pretrained, device=device, precision=precision,
                                 index_type=old._index_type)
            else:
                log.info("resuming the reindex in %s", staging)
            with new:
                with WriterLock(staging):
                    if missing:
                        new._catalog.commit_batch(failures=missing)
                    summary = new._index_entries(entries, [], t0, batch_size=batch_size, workers=workers,
                                                 max_megapixels=max_megapixels, progress=progress, stop=stop)
                if not summary.interrupted:
                    # Zero-shot labels are text embeddings of the old model: rebuild them with the new one.
                    by_templates: dict[tuple[str, ...], list[str]] = {}
                    for label in old._catalog.tag_labels():
                        by_templates.setdefault(tuple(label.templates), []).append(label.name)
                    for templates, names in by_templates.items():
                        new.tag(names, templates=list(templates))
                    # Captions describe the pictures, not their vectors: keep them for the same content.
                    new_ids: dict[str, list[int]] = {}
                    for image_id, _, _, sha in new._catalog.image_states().values():
                        new_ids.setdefault(sha, []).append(image_id)
                    carried = [(image_id, model, prompt, caption)
                               for sha, model, prompt, caption in old._catalog.captions_by_content()
                               for image_id in new_ids.get(sha, ())]
                    for start in range(0, len(carried), 1000):
                        new._catalog.store_captions(carried[start : start + 1000])
            if summary.interrupted:
                return summary
            old._catalog.close()
            _exchange(staging, folder)
            # Other people's files in the index folder stay in it: carry them over.
            for name in _strangers(staging):
                os.rename(staging / name, folder / name)
        left = _remove_index_files(staging)  # now the old index: only its own files go
        if left:
            log.warning("left %s in place: it holds files that are not the index's (%s)", staging, ", ".join(left))
        log.info("reindexed %s with %s", folder, spec.describe())
        return dataclasses.replace(summary, failed=summary.failed + len(missing),
                                   failures=tuple(missing) + summary.failures)

    # -- searching --------------------------------------------------------

    def search(
        self,
        query: str | Term | Query | Sequence[Term],
        k: int | None = 10,
        *,
        filters: Filters | None = None,
        min_score: float | None = None,
        threshold: str | None = None,
        sort: str = "score",
        tag: str | None = None,
        like: Sequence[Shot] = (),
        unlike: Sequence[Shot] = (),
        pool: int = DEFAULT_POOL,
        mode: str = "auto",
        rerank: str | None = None,
        rerank_top: int = DEFAULT_RERANK_TOP,
        rerank_model: str | None = None,
        fusion: str = DEFAULT_FUSION,
    ) -> list[SearchResult]:
        """The images that best match ``query``, best first.

        Args:
            query: a text, a :class:`~searchindex.query.Term` (text or image file,
                with a weight), a :class:`~searchindex.query.Query`, or a list of
                terms: their unit embeddings are summed with their weights
                (negative weights subtract) and normalised.
            k: the most results to return; ``None`` for no limit (with a cutoff).
            filters: only images meeting these conditions are ranked (by both the
                vector and the word ranking); the ranking among them is exact
                (see :meth:`search_vector`).
            min_score: drop results whose CLIP cosine similarity is below this.
            threshold: ``"auto"``: return only the results that stand out for
                this query (:func:`searchindex.query.auto_cutoff`).
            sort: ``"score"`` (best first) or ``"date"`` (newest first by date taken,
                unknown dates last): the same results (top ``k`` by score, or the
                cutoff's set), reordered; ``rank`` stays the rank by score.
            tag: only images carrying this zero-shot label (see :meth:`tag`).
            like, unlike: example images (paths, or image ids from earlier results)
                that show / do not show what is meant; the top ``pool`` candidates
                are reranked by :class:`~searchindex.fewshot.FewShotReranker` and
                the examples themselves are left out of the results.  Not combinable
                with ``min_score``/``threshold`` (yet).
            pool: how many CLIP candidates the few-shot reranker sees.
            mode: ``"vector"`` (CLIP only), ``"text"`` (words only: BM25 over
                keywords, descriptions, captions and file names; no model is
                loaded), ``"hybrid"`` (both rankings fused, see
                :mod:`searchindex.hybrid`), or ``"auto"``: hybrid when some image's
                words match every word of the query's text, else vector.  Cutoffs
                (``min_score``, ``threshold``) judge CLIP scores: in hybrid mode
                they cut the vector ranking and word matches are kept; text mode
                refuses them, and ``like``/``unlike``.  Negative text terms also
                remove the images whose words match them from the word ranking.
            rerank: ``"itm"``: re-score the top ``rerank_top`` results with BLIP's
                image-text matching head (needs the ``caption`` extra) and reorder
                them by it (then keep ``k``); ``score`` becomes its match probability.
            rerank_model: the ITM model (default: that of :mod:`searchindex.captioning`).
            fusion: a key of :data:`searchindex.hybrid.FUSIONS` (for evaluation).

        Raises:
            QueryError: empty query, unreadable image term, unknown tag, an example
                image that cannot be used, bad option values, a mode the query
                cannot use (text mode without words, ...).
        """
        q = Query.coerce(query)
        self._check_options(k, pool, min_score, threshold, sort, like, unlike)
        if mode not in MODES:
            raise QueryError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
        if fusion not in FUSIONS:
            raise QueryError(f"fusion must be one of {', '.join(FUSIONS)}, not {fusion!r}")
        if rerank not in (None, "itm"):
            raise QueryError(f"rerank must be 'itm' or None, not {rerank!r}")
        if rerank_top < 1:
            raise QueryError("rerank_top must be at least 1")
        positive = " ".join(t.text for t in q.terms if t.text is not None and t.weight > 0)
        words = query_words(positive) if positive else []
        if rerank == "itm" and not positive:
            raise QueryError("--rerank itm judges an image against words: the query needs a text term")
        if mode in ("text", "hybrid") and not words:
            raise QueryError(f"--mode {mode} needs words to search for: give a text query (or use --mode vector)")
        if mode == "text":
            if like or unlike:
                raise QueryError("--like/--unlike rerank by pictures: use them with --mode vector or hybrid")
            if min_score is not None or threshold is not None:
                raise QueryError("--min-score/--threshold cut CLIP scores: use them with --mode vector or hybrid")
        limit = k
        if rerank is not None and k is not None:
            k = max(k, rerank_top)  # the reranker sees its whole shortlist; the answer is cut to ``limit`` after
        candidates = self._candidates(filters, tag)
        text = TextRanking.empty()
        if mode != "vector" and words and (candidates is None or len(candidates)):
            text = self._text_ranking(q, words, candidates)
        if mode == "auto":
            mode = "hybrid" if len(text.full()) else "vector"
        if mode == "text":
            ids, scores = text.ids, text.scores
            if k is not None:
                ids, scores = ids[:k], scores[:k]
            results = self._results(ids, scores, text=text)
        else:
            vector = self.embed(q)
            depth = k
            if mode == "hybrid" and k is not None:
                depth = max(k, FUSION_DEPTH)
            scores, ids, shot_ids = self._vector_ranking(vector, depth, candidates, min_score, threshold, like,
                                                         unlike, pool)
            if mode == "hybrid":
                full = text.full().without(shot_ids)
                ids, scores = fuse(fusion, ids, scores, full, lambda i: self._cosines(vector, i))
                text = full
            if k is not None:
                scores, ids = scores[:k], ids[:k]
            results = self._results(ids, scores, text=text if mode == "hybrid" else None,
                                    vector=vector if mode == "hybrid" else None)
        if rerank == "itm":
            results = self._rerank_itm(results, positive, rerank_top, rerank_model)
        return _sorted(results[:limit] if limit is not None else results, sort)

    def search_image(self, path: str | os.PathLike[str], k: int | None = 10, **options: Any) -> list[SearchResult]:
        """The images most similar to the image file at ``path`` (options as in :meth:`search`).

        Raises:
            QueryError: the file cannot be read or decoded.
        """
        return self.search(Term.of_image(path), k, **options)

    def embed(self, query: str | Term | Query | Sequence[Term]) -> np.ndarray:
        """The unit-length query vector of a text, term, query or list of terms."""
        q = Query.coerce(query)
        texts = [t.text for t in q.terms if t.text is not None]
        text_vecs = iter(self.encode_texts(texts)) if texts else iter(())
        vectors = []
        for term in q.terms:
            if term.text is not None:
                vectors.append(next(text_vecs))
            else:
                assert term.image is not None
                vectors.append(self._encode_file(term.image, "query image"))
        return combine(np.stack(vectors), [t.weight for t in q.terms])

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Unit embeddings of query texts: from the query cache, else the cheapest text encoder at hand.

        A text seen before (by any process) comes from ``query_cache.sqlite`` in
        the index folder, with no model loaded.  Otherwise the loaded model
        encodes it if there is one; else the ONNX Runtime copy of the text tower
        (no torch import, see :mod:`searchindex.onnxmodels`); else the full model.
        """
        cache = self._queries()
        found = cache.get_many(texts)
        missing = [t for t in dict.fromkeys(texts) if t not in found]
        if missing:
            new = dict(zip(missing, self._text_model().encode_texts(missing), strict=True))
            cache.put_many(new)
            found.update(new)
        return np.stack([found[t] for t in texts]).astype(np.float32, copy=False)

    def _queries(self) -> QueryCache:
        with self._lock:
            if self._query_cache is None:
                self._query_cache = QueryCache(self.path, tower_key(self.spec), self.dim)
            return self._query_cache

    def _text_model(self) -> TextEncoder:
        """The loaded model, else the exported text tower, else the model (exporting its tower for next time)."""
        with self._lock:
            if self._encoder is not None:
                return self._encoder
            if self._text_encoder is None and text_backend(self._device) == "onnx":
                self._text_encoder = load_text_encoder(self.spec)
                if self._text_encoder is not None and self._text_encoder.dim != self.dim:
                    self._text_encoder = None
            if self._text_encoder is not None:
                return self._text_encoder
            encoder = self.encoder
            if text_backend(self._device) == "onnx":
                export_text_tower(encoder)
            return encoder

    def _encode_file(self, path: str | os.PathLike[str], what: str) -> np.ndarray:
        try:
            data = Path(path).expanduser().read_bytes()
        except OSError as exc:
            raise QueryError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
        try:
            image = decode_image(data, str(path)).image
        except Exception as exc:
            raise QueryError(f"cannot use {what} {path}: {getattr(exc, 'reason', exc)}") from None
        return self.encoder.encode_images([image])[0]

    def _shot_vectors(self, shots: Sequence[Shot], what: str) -> tuple[np.ndarray, list[int]]:
        """Embeddings of example images (ids or paths) and the ids of those in the index."""
        if isinstance(shots, (str, int, os.PathLike)):
            shots = [shots]
        vectors: list[np.ndarray] = []
        ids: list[int] = []
        wanted_ids = [int(x) for x in shots if isinstance(x, (int, np.integer))]
        stored = self._catalog.embeddings_by_id(wanted_ids, self.dim) if wanted_ids else {}
        paths = [x for x in shots if not isinstance(x, (int, np.integer))]
        by_path = self._catalog.image_ids_by_path(
            [os.fspath(Path(p).expanduser().absolute()) for p in paths]) if paths else {}
        for item in shots:
            if isinstance(item, (int, np.integer)):
                if int(item) not in stored:
                    raise QueryError(f"no image with id {int(item)} in this index ({what} example)")
                vectors.append(stored[int(item)])
                ids.append(int(item))
                continue
            key = os.fspath(Path(item).expanduser().absolute())
            if key in by_path:  # indexed: use the stored embedding, no decoding
                image_id = int(by_path[key])
                vec = self._catalog.embeddings_by_id([image_id], self.dim).get(image_id)
                if vec is not None:
                    vectors.append(vec)
                    ids.append(image_id)
                    continue
            vectors.append(self._encode_file(item, f"{what} example"))
        return np.asarray(vectors, dtype=np.float32).reshape(len(vectors), self.dim), ids

    def search_vector(
        self,
        vector: np.ndarray,
        k: int | None = 10,
        *,
        filters: Filters | None = None,
        min_score: float | None = None,
        threshold: str | None = None,
        sort: str = "score",
        tag: str | None = None,
        like: Sequence[Shot] = (),
        unlike: Sequence[Shot] = (),
        pool: int = DEFAULT_POOL,
    ) -> list[SearchResult]:
        """The images nearest to an embedding from this index's model (options as in :meth:`search`).

        Filters (and ``tag``) are resolved by SQL into the set of matching image
        ids; FAISS then ranks exactly those (an id selector skips every other
        vector before any distance is computed; a few hundred candidates are
        scored directly).  So the top ``k`` under a filter is the exact top ``k``
        of the matching images, however few they are.
        """
        self._check_options(k, pool, min_score, threshold, sort, like, unlike)
        vector = np.asarray(vector, dtype=np.float32).reshape(-1)
        if vector.shape[0] != self.dim:
            raise QueryError(f"query vector has {vector.shape[0]} dimensions, the index {self.dim}")
        candidates = self._candidates(filters, tag)
        scores, ids, _ = self._vector_ranking(vector, k, candidates, min_score, threshold, like, unlike, pool)
        if k is not None:
            scores, ids = scores[:k], ids[:k]
        return _sorted(self._results(ids, scores), sort)

    @staticmethod
    def _check_options(k: int | None, pool: int, min_score: float | None, threshold: str | None, sort: str,
                       like: Sequence[Shot], unlike: Sequence[Shot]) -> None:
        if k is not None and k < 1:
            raise QueryError("k must be at least 1")
        if pool < 1:
            raise QueryError("pool must be at least 1")
        if threshold not in (None, "auto"):
            raise QueryError(f"threshold must be 'auto' or None, not {threshold!r} (use min_score for a number)")
        if sort not in SORT_KEYS:
            raise QueryError(f"sort must be one of {', '.join(SORT_KEYS)}, not {sort!r}")
        if min_score is not None and not -1.0 <= min_score <= 1.0:
            raise QueryError(f"min_score is a cosine similarity between -1 and 1, not {min_score}")
        if (like or unlike) and (min_score is not None or threshold is not None):
            raise QueryError("a score cutoff (--threshold/--min-score) cannot be combined with --like/--unlike yet")

    def _candidates(self, filters: Filters | None, tag: str | None) -> np.ndarray | None:
        """The sorted ids meeting ``filters`` and ``tag``; ``None`` when nothing restricts the search."""
        candidates = None
        if tag is not None:
            known = [name for name, _ in self._catalog.tag_counts()]
            if tag not in known:
                listing = ", ".join(known) if known else "none yet"
                raise QueryError(f"unknown tag {tag!r} (labels in this index: {listing}); "
                                 "add labels with `searchindex tag --labels ...`")
            candidates = np.sort(np.asarray(self._catalog.ids_with_tag(tag), dtype=np.int64))
        if filters is not None and filters.active:
            matching = self._catalog.filtered_ids(filters)
            candidates = matching if candidates is None else np.intersect1d(candidates, matching)
        return candidates

    def _vector_ranking(
        self, vector: np.ndarray, k: int | None, candidates: np.ndarray | None, min_score: float | None,
        threshold: str | None, like: Sequence[Shot], unlike: Sequence[Shot], pool: int,
    ) -> tuple[np.ndarray, np.ndarray, list[int]]:
        """(scores, ids, example ids) of the CLIP ranking, best first: top ``k``, a cutoff's set, or few-shot
        reranked (the indexed examples left out)."""
        like_vecs, like_ids = self._shot_vectors(like, "like")
        unlike_vecs, unlike_ids = self._shot_vectors(unlike, "unlike")
        vecs = self._fresh_vectors()
        searched = vecs.ntotal if candidates is None else len(candidates)
        shot_ids = set(like_ids) | set(unlike_ids)
        if searched == 0 or vecs.ntotal == 0:
            return np.zeros(0, np.float32), np.zeros(0, np.int64), sorted(shot_ids)
        if len(like_vecs) or len(unlike_vecs):
            from .fewshot import FewShotReranker

            base, cand_ids = vecs.top_k(vector, max(pool, (k or 0) + len(shot_ids)), candidates)
            exclude = np.isin(cand_ids, list(shot_ids))
            new, fit = FewShotReranker().fit_scores(vector, vecs.vectors(cand_ids), like_vecs,
                                                    unlike_vecs, base_scores=base, exclude=exclude)
            log.info("few-shot rerank of %d candidates: %s", len(cand_ids), fit)
            order = np.array([i for i in np.argsort(-new, kind="stable") if not exclude[i]], dtype=np.int64)
            return new[order].astype(np.float32), cand_ids[order], sorted(shot_ids)
        if threshold == "auto":
            scores, ids = self._auto_cut(vecs, vector, candidates, searched)
            if min_score is not None:
                keep = scores >= min_score
                scores, ids = scores[keep], ids[keep]
        elif min_score is not None:
            scores, ids = vecs.scores_above(vector, min_score, candidates)
        else:
            scores, ids = vecs.top_k(vector, k if k is not None else searched, candidates)
        return scores, ids, []

    def _cosines(self, vector: np.ndarray, ids: np.ndarray) -> np.ndarray:
        """Cosine similarity of ``vector`` to the stored vectors of ``ids`` (0 for ids not in the index)."""
        vecs = self._fresh_vectors()
        ids = np.asarray(ids, dtype=np.int64)
        out = np.zeros(len(ids), dtype=np.float32)
        present = vecs.contains(ids) if len(ids) else np.zeros(0, bool)
        if present.any():
            out[present] = vecs.vectors(ids[present]) @ vector
        return out

    def _text_ranking(self, q: Query, words: Sequence[str], candidates: np.ndarray | None) -> TextRanking:
        """The word ranking of ``words`` among ``candidates``, minus images matching a negative text term.

        A word found in more than half of the searched images is left out (see
        :func:`searchindex.hybrid.rank_text`); so is the ranking when no word is left.
        """
        searched = self.count() if candidates is None else len(candidates)
        common = searched // 2
        # Enough hits to tell a common word, and at least TEXT_DEPTH of the others.
        limit = max(TEXT_DEPTH, common + 1)

        def search_word(word: str) -> list[tuple[int, float]]:
            return self._catalog.text_search(word, limit, candidates)

        ranking = rank_text(words, search_word, max_hits=common if searched >= 2 else None)
        for term in q.terms:
            if term.text is not None and term.weight < 0 and len(ranking):
                unwanted = rank_text(query_words(term.text), search_word).full()
                ranking = ranking.without(unwanted.ids)
        return ranking

    def _results(self, ids: np.ndarray, scores: np.ndarray, *, text: TextRanking | None = None,
                 vector: np.ndarray | None = None) -> list[SearchResult]:
        """Catalog rows, tags, captions and keywords of ranked ids, as results.

        ``text``: the word ranking (fills ``text_score``); ``vector``: the query
        vector when ``score`` is not the cosine (fills ``vector_score``).
        """
        id_list = [int(i) for i in ids]
        rows = self._catalog.images_by_id(id_list)
        tags = self._catalog.tags_by_id(id_list)
        captions = self._catalog.captions_by_id(id_list)
        texts = self._catalog.texts_by_id(id_list)
        bm25 = dict(zip(text.ids.tolist(), text.scores.tolist(), strict=True)) if text is not None else {}
        cosines = dict(zip(id_list, self._cosines(vector, ids).tolist(), strict=True)) if vector is not None else {}
        out = []
        for score, image_id in zip(np.asarray(scores).tolist(), id_list, strict=True):
            row = rows.get(image_id)
            if row is None:  # removed by a concurrent writer since the vectors were read
                continue
            if text is not None and vector is None:  # text mode: no CLIP score
                vector_score = None
            else:
                vector_score = cosines.get(image_id, score)
            out.append(SearchResult(
                len(out) + 1, score, row.path, row.id, row.width, row.height, row.format, row.size, row.sha256,
                row.taken_at, row.taken_offset, row.date_source, row.camera_make, row.camera_model, row.lens,
                row.gps_lat, row.gps_lon, tuple(name for name, _ in tags.get(image_id, ())),
                caption=_first_caption(captions.get(image_id)), keywords=_keywords(texts.get(image_id)),
                vector_score=vector_score, text_score=bm25.get(image_id),
            ))
        return out

    def _rerank_itm(self, results: list[SearchResult], text: str, top: int,
                    model: str | None) -> list[SearchResult]:
        """Re-score the first ``top`` results with BLIP's image-text matching head (a cross-encoder)."""
        head, tail = results[:top], results[top:]
        if not head:
            return results
        scorer = self._itm_scorer(model)
        images, usable = [], []
        for r in head:
            try:
                images.append(decode_image(Path(r.path).read_bytes(), r.path).image)
                usable.append(r)
            except Exception as exc:  # gone or changed since indexing: keep it, unscored, after the others
                log.info("cannot rerank %s: %s", r.path, getattr(exc, "reason", exc))
        probs = np.asarray(scorer.score(images, text), dtype=np.float64).reshape(-1) if images else np.zeros(0)
        order = np.argsort(-probs, kind="stable")
        scored = [dataclasses.replace(usable[i], score=float(probs[i])) for i in order]
        rest = [r for r in head if r not in usable] + tail
        return [dataclasses.replace(r, rank=n) for n, r in enumerate(scored + rest, 1)]

    def _itm_scorer(self, model: str | None) -> Any:
        """The ITM scorer for ``model``, loaded once per index object."""
        with self._lock:
            key = model or ""
            if key not in self._itm:
                from .captioning import load_itm  # transformers loads inside, or MissingExtraError says what to install

                self._itm[key] = load_itm(model, device=self._device) if model else load_itm(device=self._device)
            return self._itm[key]

    def _auto_cut(
        self, vecs: VectorIndex, vector: np.ndarray, candidates: np.ndarray | None, searched: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """The top results that stand out (see :func:`searchindex.query.auto_cutoff`)."""
        pool = min(searched, AUTO_POOL)
        rng = np.random.default_rng(0)  # same background sample for the same index: stable answers
        universe = vecs.ids() if candidates is None else candidates[vecs.contains(candidates)]
        sample = universe if len(universe) <= AUTO_BACKGROUND else rng.choice(universe, AUTO_BACKGROUND, replace=False)
        background = vecs.vectors(np.sort(sample)) @ vector
        while True:
            scores, ids = vecs.top_k(vector, pool, candidates)
            exhaustive = len(scores) < pool or pool >= searched
            cut = auto_cutoff(scores, background, exhaustive=exhaustive)
            # A cut in the lower half of the pool may belong further down: look at more.
            if exhaustive or cut <= pool // 2 or pool >= AUTO_MAX_POOL:
                break
            pool = min(pool * 4, searched, AUTO_MAX_POOL)
        log.debug("auto cutoff: %d of the top %d (of %d searched)", cut, len(scores), searched)
        return scores[:cut], ids[:cut]

    def duplicates(self, threshold: float = DEFAULT_DUPLICATE_THRESHOLD) -> list[DuplicateGroup]:
        """Groups of near-identical images (resized, recompressed, lightly cropped or edited copies).

        Two images belong together when their embeddings' cosine similarity is at
        least ``threshold`` (directly or through other copies); see
        :mod:`searchindex.duplicates`.  Each group lists its best copy first
        (largest resolution, then oldest); groups come largest first.
        """
        if not 0 < threshold <= 1:
            raise QueryError(f"a duplicate threshold is a cosine similarity in (0, 1], not {threshold}")
        ids, x = self._fresh_vectors().all_vectors()
        groups = group_pairs(find_pairs(x, threshold), len(ids))
        rows = self._catalog.images_by_id(int(ids[i]) for g in groups for i in g)
        out = []
        for g in groups:
            members = [(int(i), rows[int(ids[i])]) for i in g if int(ids[i]) in rows]
            if len(members) < 2:  # removed by a concurrent writer
                continue
            # Best copy: most pixels, then oldest (date taken; unknown dates after known ones).
            members.sort(key=lambda m: (-m[1].width * m[1].height, m[1].taken_at is None, m[1].taken_at or "",
                                        m[1].mtime_ns, m[1].path))
            best = x[members[0][0]]
            out.append(DuplicateGroup(tuple(
                DuplicateImage(r.path, r.id, r.width, r.height, r.size, r.mtime_ns, r.taken_at,
                               1.0 if n == 0 else min(1.0, float(x[i] @ best)))
                for n, (i, r) in enumerate(members)
            )))
        out.sort(key=lambda grp: (-len(grp.images), grp.best.path))
        return out

    # -- zero-shot tags ---------------------------------------------------

    def tag(
        self, labels: Sequence[str] | None = None, templates: str | os.PathLike[str] | Sequence[str] | None = None,
    ) -> list[LabelReport]:
        """Define zero-shot labels (or re-tag the stored ones) and tag every image.

        Each label gets a text classifier from a prompt-template ensemble and a
        threshold calibrated on the collection (see :mod:`searchindex.tagging`);
        it is stored, and images indexed later are tagged by :meth:`add_folder`.

        Args:
            labels: label names; ``None`` re-tags every stored label (recalibrating).
            templates: ``"default"`` (the CLIP-paper ensemble), ``"single"``, a file
                with one template per line, or a list; each contains ``{}``.  Only
                used for ``labels``; stored labels keep their own templates.

        Raises:
            QueryError: no labels (given or stored), bad templates.
            IndexLockedError, IndexWriteError: as for :meth:`add_folder`.
        """
        from .catalog import TagLabel
        from .tagging import label_classifier, load_templates, null_classifier, tag_catalog

        stored = {lab.name: lab for lab in self._catalog.tag_labels()}
        if labels is None:
            if not stored:
                raise QueryError("this index has no labels yet; give some with --labels")
            todo = list(stored.values())
        else:
            labels = [str(lab).strip() for lab in labels if str(lab).strip()]
            if not labels:
                raise QueryError("no labels given")
            chosen = load_templates(templates)
            null = null_classifier(self.encoder, chosen)
            todo = [TagLabel(name, chosen, label_classifier(self.encoder, name, chosen), null, 0.0, 0, 0)
                    for name in labels]
        with self._write_locked():
            return tag_catalog(self._catalog, self.dim, todo, recalibrate=True)

    def untag(self, labels: Sequence[str]) -> int:
        """Forget labels and their tags; returns how many of them existed."""
        with self._write_locked():
            return self._catalog.remove_labels(list(labels))

    def tags(self) -> list[tuple[str, int]]:
        """(label, number of images tagged) for every stored label."""
        return self._catalog.tag_counts()

    def _tag_new_images(self) -> None:
        """Tag images written since each label last ran (called under the writer lock)."""
        labels = self._catalog.tag_labels()
        if labels:
            from .tagging import tag_catalog

            tag_catalog(self._catalog, self.dim, labels, recalibrate=False)

    # -- captions ---------------------------------------------------------

    def caption(
        self,
        model: str | Captioner | None = None,
        *,
        prompt: str | None = None,
        batch_size: int = 16,
        device: str | None = None,
        max_new_tokens: int = 30,
        num_beams: int = 3,
        progress: Callable[[CaptionProgress], None] | None = None,
        stop: threading.Event | None = None,
    ) -> CaptionSummary:
        """Caption every indexed image that has no caption from ``model`` yet.

        Captions are stored with the model that wrote them (one per image and
        model: captioning with another model keeps both).  Each batch is committed
        at once, so an interrupted run loses at most the batch in flight and the
        next run resumes; images added later are captioned by the next run.  The
        model is loaded only if some image needs a caption.

        Args:
            model: a Hugging Face hub id or local folder of an image-to-text model
                (default :data:`~searchindex.captioning.DEFAULT_CAPTION_MODEL`), or a
                loaded :class:`~searchindex.captioning.Captioner`.
            prompt: conditional captioning: captions continue this text ("a photo of").
                It does not make a new caption set: images the model captioned before
                keep their caption.
            batch_size: images per model call and per commit.
            device: where the captioner runs (default: the index's device).
            max_new_tokens, num_beams: generation length and beam width (1 = greedy).
            progress: called with a :class:`~searchindex.captioning.CaptionProgress`
                after every committed batch.
            stop: when set, the run ends after the batch in flight is committed.

        Raises:
            MissingExtraError: transformers is not installed (``searchindex[caption]``).
            WeightsUnavailableError, UnknownModelError: see :func:`~searchindex.captioning.load_captioner`.
            IndexLockedError, IndexWriteError: as for :meth:`add_folder`.
        """
        from .captioning import DEFAULT_CAPTION_MODEL, Captioner, caption_catalog, load_captioner

        if isinstance(model, Captioner):
            loaded = model
            model_id, load = model.model_id, lambda: loaded
        else:
            model_id = model or DEFAULT_CAPTION_MODEL

            def load() -> Captioner:
                return load_captioner(model_id, device=device or self._device, prompt=prompt,
                                      max_new_tokens=max_new_tokens, num_beams=num_beams)

        with self._write_locked():
            return caption_catalog(self._catalog, model_id, load, batch_size=batch_size, progress=progress,
                                   stop=stop)

    def caption_counts(self) -> dict[str, int]:
        """Model -> number of images it has captioned."""
        return dict(self._catalog.caption_counts())

    # -- facts ------------------------------------------------------------

    def count(self) -> int:
        """Number of indexed images."""
        return self._catalog.count()

    def failures(self) -> list[Any]:
        """Files that could not be indexed, with their reasons."""
        return self._catalog.failures()

    def info(self) -> IndexInfo:
        """What the index is made of; the FAISS figures describe the saved vector file (no loading)."""
        meta = self._catalog.meta()
        found = latest_vector_file(self.path)
        catalog_bytes = sum(
            p.stat().st_size for p in self.path.glob(CATALOG_FILE + "*") if p.is_file()
        )
        images = self.count()
        vector_bytes = found[0].stat().st_size if found else 0
        return IndexInfo(
            path=str(self.path), model=self.spec.model, pretrained=self.spec.pretrained,
            checkpoint_sha256=self.spec.checkpoint_sha256, dim=self.dim, images=images,
            failures=self._catalog.failure_count(), generation=int(meta["generation"]),
            faiss_factory=meta.get("faiss_factory", DEFAULT_FACTORY), schema_version=int(meta["schema_version"]),
            catalog_bytes=catalog_bytes, vector_bytes=vector_bytes,
            index_type=meta.get("faiss_index_type") or "auto",
            nprobe=int(meta["faiss_nprobe"]) if meta.get("faiss_nprobe") else None,
            tuned_recall=float(meta["faiss_recall"]) if meta.get("faiss_recall") else None,
            built_at=int(meta.get("faiss_built_at") or 0),
            # A FAISS index in memory is its serialized form (codes, ids, centroids), so the file measures it.
            faiss_memory_bytes=vector_bytes, bytes_per_image=vector_bytes / images if images else 0.0,
            captions=self.caption_counts(),
        )
