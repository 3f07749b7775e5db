"""Embeddings as Parquet: export an index's vectors, import vectors computed elsewhere.

The two file layouts (``parquet`` and ``clip-retrieval``) are described and read
and written in :mod:`searchindex.ingest.parquet`; ``docs/scaling.md`` describes
them for users.

Importing joins rows to files by ``image_path`` (and ``sha256`` when the file has
one): each file is read and hashed, under the rules indexing reads by (regular files
only, at most ``max_file_bytes``), so the catalog row describes the file on disk and
a later ``add_folder`` sees it as unchanged.  Files that are missing or whose content
differs from the recorded hash become failures with their reason.

Imported rows are never trusted further than they can be checked:

- every vector must be finite and not (near) zero; it is stored as the unit vector
  the index holds.  A row that fails is reported and skipped: it writes nothing, so
  it cannot cost an indexed photo its good row, nor keep a new photo from being
  indexed later;
- a file already indexed with the same content keeps its embedding (and its tags
  and captions) unless ``replace`` is asked for;
- a row that does not describe the file on disk (a sha256 mismatch, a missing
  file) never removes the row of a file that is indexed: it is reported only.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..defaults import DEFAULT_MAX_MEGAPIXELS
from ..errors import EmbeddingFileError, ImageDecodeError, ModelMismatchError
from ..fileio import DEFAULT_MAX_FILE_BYTES, FileTooLargeError, NotRegularFileError, read_bounded
from ..models.images import decode_image
from ..models.spec import ModelSpec
from ..results import FailureRecord
from ..store.catalog.database import Catalog
from ..store.catalog.records import ImageState, NewImage, PhotoMetadata
from . import parquet
from .keywords import read_texts, sidecar_signature
from .metadata import read_metadata
from .parquet import LAYOUTS, EmbeddingBatch, read_embedding_files

__all__ = ["ExportSummary", "ImportProgress", "ImportSummary", "export_embeddings", "import_embeddings", "unit_vectors"]

log = logging.getLogger(__name__)

#: Rows per exported file (a 512-d part is ~100 MB).
ROWS_PER_FILE = 50_000


@dataclass(frozen=True)
class ExportSummary:
    """What :func:`export_embeddings` wrote."""

    rows: int
    files: tuple[str, ...]
    layout: str
    dim: int


@dataclass(frozen=True)
class ImportProgress:
    """Reported after each committed batch of an import."""

    done: int
    total: int
    imported: int
    failed: int


@dataclass(frozen=True)
class ImportSummary:
    """What one import did."""

    rows: int  # rows read from the files
    imported: int  # rows written to the catalog (new, or a file changed since it was indexed)
    unchanged: int  # rows whose file is already indexed with the same content
    failed: int  # rows not imported, each in ``failures`` with its reason
    failures: tuple[FailureRecord, ...] = ()
    replaced: int = 0  # of ``unchanged``, rows whose embedding was replaced (``replace=True``)


# -- export ---------------------------------------------------------------


def _export_chunks(catalog: Catalog, dim: int, rows_per_file: int) -> Iterator[tuple[list[Any], np.ndarray]]:
    """(records, vectors) of every indexed image, about ``rows_per_file`` at a time, in id order."""
    records: list[Any] = []
    vectors: list[np.ndarray] = []
    n = 0
    for ids, vecs in catalog.read.embeddings_since(0, dim):
        facts = catalog.read.records(ids.tolist())
        keep = [k for k, i in enumerate(ids) if int(i) in facts]  # rows deleted meanwhile are skipped
        records.extend(facts[int(ids[k])] for k in keep)
        vectors.append(vecs[keep])
        n += len(keep)
        while n >= rows_per_file:
            all_vecs = np.concatenate(vectors)
            yield records[:rows_per_file], all_vecs[:rows_per_file]
            records, vectors = records[rows_per_file:], [all_vecs[rows_per_file:]]
            n -= rows_per_file
    if n:
        yield records, np.concatenate(vectors)


def export_embeddings(
    catalog: Catalog, spec: ModelSpec, dim: int, out: str | os.PathLike[str], *, layout: str = "parquet",
    rows_per_file: int = ROWS_PER_FILE,
) -> ExportSummary:
    """Write every image's embedding and facts under the new folder ``out`` in ``layout``.

    Raises:
        ValueError: unknown ``layout``.
        EmbeddingFileError: ``out`` exists and is not an empty folder.
        MissingExtraError: pyarrow is not installed.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; use one of {', '.join(LAYOUTS)}")
    table_schema = parquet.schema(dim, spec, with_embedding=layout == "parquet")
    folder = Path(out).expanduser()
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise EmbeddingFileError(f"{folder} exists and is not an empty folder; export into a new folder")
    written: list[str] = []
    rows = 0
    tmp = folder.with_name(folder.name + ".partial")
    tmp.mkdir(parents=True, exist_ok=True)
    if layout == "clip-retrieval":
        (tmp / "img_emb").mkdir(exist_ok=True)
        (tmp / "metadata").mkdir(exist_ok=True)
    try:
        for part, (records, vectors) in enumerate(_export_chunks(catalog, dim, max(1, rows_per_file))):
            written += parquet.write_part(tmp, layout, part, records, vectors, spec, table_schema)
            rows += len(records)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # nothing half-written is left behind
        raise
    # The folder appears complete or not at all.
    if folder.exists():
        folder.rmdir()
    os.replace(tmp, folder)
    log.info("exported %d embeddings to %s (%s)", rows, folder, layout)
    return ExportSummary(rows, tuple(str(folder / w) for w in written), layout, dim)


# -- import ---------------------------------------------------------------


def check_model(found: dict[str, Any] | None, spec: ModelSpec, dim: int, source: str,
                declared: ModelSpec | None) -> None:
    """Refuse embeddings that another model made (or whose model is unknown and not declared)."""
    if found is not None:
        theirs = parquet.model_of(found)
        if not theirs.same_weights(spec):
            raise ModelMismatchError(f"{source} holds embeddings of {theirs.describe()}, but this index uses "
                                     f"{spec.describe()}; vectors from different models cannot be mixed")
        if int(found.get("dim", dim)) != dim:
            raise ModelMismatchError(f"{source} holds {found['dim']}-d embeddings; this index holds {dim}-d")
    elif declared is None:
        raise ModelMismatchError(f"{source} does not say which model made its embeddings (clip-retrieval does not "
                                 "record it); state it with model=/pretrained= (--model/--pretrained) so it can "
                                 "be checked against the index's model")
    elif not declared.same_weights(spec):
        raise ModelMismatchError(f"the embeddings were made with {declared.describe()}, but this index uses "
                                 f"{spec.describe()}; vectors from different models cannot be mixed")


def _read_file(path: str, expect_sha: str | None, max_megapixels: float,
               max_file_bytes: int) -> tuple[Any, ...] | FailureRecord:
    """(size, mtime_ns, sha256, width, height, format, metadata, texts, sidecars) of a file on disk,
    read as indexing reads it: a regular file of at most ``max_file_bytes``."""
    try:
        st = os.stat(path)
        data, sha = read_bounded(path, max_file_bytes, digest=True)
    except FileNotFoundError:
        return FailureRecord(path, 0, 0, "file not found (its embedding was imported from elsewhere)")
    except (NotRegularFileError, FileTooLargeError) as exc:
        return FailureRecord(path, 0, 0, exc.strerror or str(exc))
    except OSError as exc:
        return FailureRecord(path, 0, 0, f"unreadable: {exc.strerror or exc}")
    assert sha is not None
    if expect_sha and expect_sha != sha:
        return FailureRecord(path, st.st_size, st.st_mtime_ns,
                             "content differs from the imported embedding's (sha256 mismatch)")
    try:
        # Decoded (JPEGs at a reduced scale) to check the file is an image and get its size.
        decoded = decode_image(data, path, max_megapixels=max_megapixels, min_side=32)
    except ImageDecodeError as exc:
        return FailureRecord(path, st.st_size, st.st_mtime_ns, exc.reason)
    meta = read_metadata(data, st.st_mtime_ns)
    sidecars = sidecar_signature(path)
    texts = read_texts(path, data)
    return st.st_size, st.st_mtime_ns, sha, decoded.width, decoded.height, decoded.format, meta, texts, sidecars


def import_embeddings(
    catalog: Catalog, spec: ModelSpec, dim: int,
    files: str | os.PathLike[str] | Sequence[str | os.PathLike[str]], *, declared: ModelSpec | None = None,
    base: str | os.PathLike[str] | None = None, batch_size: int = 1000,
    max_megapixels: float = DEFAULT_MAX_MEGAPIXELS, max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
    replace: bool = False, progress: Callable[[ImportProgress], None] | None = None,
) -> ImportSummary:
    """Add precomputed embeddings from ``files`` (either layout) to the catalog, batch by batch.

    Every file is checked before any row is written: a model or dimension
    mismatch refuses the whole import.  Each row is then checked on its own (see
    the module docstring): a bad one is reported in the summary and skipped.

    Args:
        files: files or folders, in either layout.
        declared: the model that made embeddings whose files do not record it.
        base: relative ``image_path`` values are taken relative to this folder
            (default: the current directory).
        max_file_bytes: larger image files are not read (their rows fail), as in indexing.
        replace: replace the embedding of a file already indexed with the same content
            (its tags and captions go with it); by default it keeps its own.
    """
    from .produce import default_workers

    files = [files] if isinstance(files, (str, os.PathLike)) else list(files)
    if max_file_bytes < 1:
        raise ValueError(f"the file size limit must be positive, not {max_file_bytes}")
    for batch in parquet.first_batches(files):  # check every file's model and size before writing anything
        check_model(batch.model, spec, dim, batch.source, declared)
        _check_dim(batch, dim, allow_empty=True)
    total = parquet.row_count(files)
    root = Path(base).expanduser() if base is not None else Path.cwd()
    counts = _ImportCounts()
    rules = _Rules(max_megapixels, max_file_bytes, replace, catalog.read.image_states())
    with ThreadPoolExecutor(max_workers=default_workers(), thread_name_prefix="import") as pool:
        for batch in read_embedding_files(files, batch_rows=batch_size):
            _check_dim(batch, dim, allow_empty=False)
            _import_batch(catalog, batch, root, pool, rules, counts)
            if progress:
                progress(ImportProgress(counts.done, total, counts.imported + counts.unchanged, len(counts.failures)))
    return ImportSummary(counts.done, counts.imported, counts.unchanged, len(counts.failures),
                         tuple(counts.failures), counts.replaced)


def _check_dim(batch: EmbeddingBatch, dim: int, *, allow_empty: bool) -> None:
    if (len(batch.vectors) or not allow_empty) and batch.vectors.shape[1] != dim:
        raise ModelMismatchError(f"{batch.source} holds {batch.vectors.shape[1]}-d embeddings; "
                                 f"this index holds {dim}-d")


@dataclass
class _ImportCounts:
    done: int = 0
    imported: int = 0
    unchanged: int = 0
    replaced: int = 0
    failures: list[FailureRecord] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)  # paths imported so far (a second row for one is refused)


@dataclass(frozen=True)
class _Rules:
    max_megapixels: float
    max_file_bytes: int
    replace: bool
    states: dict[str, ImageState]  # path -> state of every indexed image


#: Below this length a vector is taken for all zeros: its direction is rounding noise.
_MIN_NORM = 1e-6


def unit_vectors(vectors: np.ndarray) -> tuple[np.ndarray, list[str | None]]:
    """``vectors`` as the unit float32 vectors the index holds, and per row why it cannot be
    used (``None``: it can): a NaN or infinite component, or a (near) zero length."""
    wide = np.asarray(vectors, dtype=np.float64)  # float32 squares of 1e20 overflow; these do not
    finite: np.ndarray = np.asarray(np.isfinite(wide).all(axis=1))
    norms = np.linalg.norm(np.where(finite[:, None], wide, 0.0), axis=1)
    ok = finite & (norms > _MIN_NORM) & np.isfinite(norms)
    unit = np.zeros(wide.shape, dtype=np.float32)
    unit[ok] = (wide[ok] / norms[ok, None]).astype(np.float32)
    reasons: list[str | None] = [
        None if good else
        "imported embedding is not finite (NaN or infinity)" if not fin else
        "imported embedding is all zeros (it has no direction)"
        for good, fin in zip(ok.tolist(), finite.tolist(), strict=True)
    ]
    return unit, reasons


def _path_of(root: Path, value: Any) -> str | None:
    """The absolute path an ``image_path`` value names, or ``None`` when it names none."""
    if not isinstance(value, str) or not value.strip() or "\x00" in value:
        return None
    return os.path.abspath(root / value)


def _import_batch(catalog: Catalog, batch: EmbeddingBatch, root: Path, pool: ThreadPoolExecutor,
                  rules: _Rules, counts: _ImportCounts) -> None:
    """Check the rows of one batch, read and hash their files, and commit what may be written."""
    raw_paths = batch.columns["image_path"]
    shas = batch.columns.get("sha256") or [None] * len(raw_paths)
    vectors, vector_problems = unit_vectors(batch.vectors)
    rejected: list[FailureRecord] = []  # reported, never written: they say nothing about the file
    todo: list[tuple[str, np.ndarray, str | None]] = []
    for raw, vec, sha, problem in zip(raw_paths, vectors, shas, vector_problems, strict=True):
        path = _path_of(root, raw)
        if path is None:
            rejected.append(FailureRecord(str(raw), 0, 0, "row without a usable image_path"))
        elif problem is not None:
            rejected.append(FailureRecord(path, 0, 0, problem))
        elif path in counts.seen:
            rejected.append(FailureRecord(path, 0, 0, "a second row for this file (the first was imported)"))
        else:
            counts.seen.add(path)
            todo.append((path, vec, sha if isinstance(sha, str) and sha else None))
    read = list(pool.map(lambda a: _read_file(a[0], a[2], rules.max_megapixels, rules.max_file_bytes), todo))
    rows: list[NewImage] = []
    bad: list[FailureRecord] = []
    texts: dict[str, tuple[list[tuple[str, str]], str]] = {}
    for (path, vec, _), r in zip(todo, read, strict=True):
        state = rules.states.get(path)
        if isinstance(r, FailureRecord):
            # A row that does not match the file never costs an indexed file its own row.
            (rejected if state is not None else bad).append(r)
            continue
        size, mtime_ns, sha, w, h, fmt, meta, found_texts, sidecars = r
        if state is not None and state.sha256 == sha:
            counts.unchanged += 1
            if not rules.replace:
                continue  # the indexed row is as good and carries tags and captions
            counts.replaced += 1
        else:
            counts.imported += 1
        meta = meta if isinstance(meta, PhotoMetadata) else None
        rows.append(NewImage(path, size, mtime_ns, sha, w, h, fmt, vec, meta))
        texts[path] = (found_texts, sidecars)
    if rows or bad:
        catalog.commit_batch(rows, bad)
        _store_texts(catalog, texts, {f.path for f in bad})
    counts.failures += bad + rejected
    counts.done += len(raw_paths)


def _store_texts(catalog: Catalog, texts: dict[str, tuple[list[tuple[str, str]], str]], failed: set[str]) -> None:
    """Store the keywords read for the rows a batch committed (as indexing does)."""
    paths = [p for p in texts if p not in failed]
    ids = catalog.read.ids_by_path(paths) if paths else {}
    if ids:
        catalog.texts.store({ids[p]: texts[p][0] for p in paths if p in ids})
        catalog.texts.store_states({ids[p]: texts[p][1] for p in paths if p in ids})
