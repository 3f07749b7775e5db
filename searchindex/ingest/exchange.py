"""Embeddings as Parquet: export an index's vectors, import vectors computed elsewhere.

The two file layouts (``parquet`` and ``clip-retrieval``) are described and read
and written in :mod:`searchindex.ingest.parquet`; ``docs/scaling.md`` describes
them for users.

Importing joins rows to files by ``image_path`` (and ``sha256`` when the file has
one): each file is read and hashed, so the catalog row describes the file on disk
and a later ``add_folder`` sees it as unchanged.  Files that are missing or whose
content differs from the recorded hash become failures with their reason.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..defaults import DEFAULT_MAX_MEGAPIXELS
from ..errors import EmbeddingFileError, ImageDecodeError, ModelMismatchError
from ..models.images import decode_image
from ..models.spec import ModelSpec
from ..store.catalog import Catalog
from ..store.records import FailureRecord, NewImage, PhotoMetadata
from . import parquet
from .keywords import read_texts, sidecar_signature
from .metadata import read_metadata
from .parquet import LAYOUTS, EmbeddingBatch, read_embedding_files, recorded_model

__all__ = ["LAYOUTS", "ExportSummary", "ImportProgress", "ImportSummary", "export_embeddings",
           "import_embeddings", "read_embedding_files", "recorded_model"]

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
    imported: int  # rows written to the catalog (new or replacing a row at the same path)
    unchanged: int  # rows whose file is already indexed with the same content (vector replaced)
    failed: int
    failures: tuple[FailureRecord, ...] = ()


# -- export ---------------------------------------------------------------


def _export_chunks(catalog: Catalog, dim: int, rows_per_file: int) -> Iterator[tuple[list[Any], np.ndarray]]:
    """(records, vectors) of every indexed image, about ``rows_per_file`` at a time, in id order."""
    records: list[Any] = []
    vectors: list[np.ndarray] = []
    n = 0
    for ids, vecs in catalog.images.embeddings_since(0, dim):
        facts = catalog.images.by_id(ids.tolist())
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
    for part, (records, vectors) in enumerate(_export_chunks(catalog, dim, max(1, rows_per_file))):
        written += parquet.write_part(tmp, layout, part, records, vectors, spec, table_schema)
        rows += len(records)
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


def _read_file(path: str, expect_sha: str | None, max_megapixels: float) -> tuple[Any, ...] | FailureRecord:
    """(size, mtime_ns, sha256, width, height, format, metadata, texts, sidecars) of a file on disk."""
    try:
        st = os.stat(path)
        with open(path, "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        return FailureRecord(path, 0, 0, "file not found (its embedding was imported from elsewhere)")
    except OSError as exc:
        return FailureRecord(path, 0, 0, f"unreadable: {exc.strerror or exc}")
    sha = hashlib.sha256(data).hexdigest()
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
    max_megapixels: float = DEFAULT_MAX_MEGAPIXELS, progress: Callable[[ImportProgress], None] | None = None,
) -> ImportSummary:
    """Add precomputed embeddings from ``files`` (either layout) to the catalog, batch by batch.

    Every file is checked before any row is written: a model or dimension
    mismatch refuses the whole import.

    Args:
        files: files or folders, in either layout.
        declared: the model that made embeddings whose files do not record it.
        base: relative ``image_path`` values are taken relative to this folder
            (default: the current directory).
    """
    from .produce import default_workers

    files = [files] if isinstance(files, (str, os.PathLike)) else list(files)
    for batch in parquet.first_batches(files):  # check every file's model and size before writing anything
        check_model(batch.model, spec, dim, batch.source, declared)
        _check_dim(batch, dim, allow_empty=True)
    total = parquet.row_count(files)
    root = Path(base).expanduser() if base is not None else Path.cwd()
    counts = _ImportCounts()
    states = catalog.images.states()
    with ThreadPoolExecutor(max_workers=default_workers(), thread_name_prefix="import") as pool:
        for batch in read_embedding_files(files, batch_rows=batch_size):
            _check_dim(batch, dim, allow_empty=False)
            _import_batch(catalog, batch, root, pool, max_megapixels, states, counts)
            if progress:
                progress(ImportProgress(counts.done, total, counts.imported + counts.unchanged, len(counts.failures)))
    return ImportSummary(counts.done, counts.imported, counts.unchanged, len(counts.failures),
                         tuple(counts.failures))


def _check_dim(batch: EmbeddingBatch, dim: int, *, allow_empty: bool) -> None:
    if (len(batch.vectors) or not allow_empty) and batch.vectors.shape[1] != dim:
        raise ModelMismatchError(f"{batch.source} holds {batch.vectors.shape[1]}-d embeddings; "
                                 f"this index holds {dim}-d")


@dataclass
class _ImportCounts:
    done: int = 0
    imported: int = 0
    unchanged: int = 0
    failures: list[FailureRecord] = field(default_factory=list)


def _import_batch(catalog: Catalog, batch: EmbeddingBatch, root: Path, pool: ThreadPoolExecutor,
                  max_megapixels: float, states: dict[str, tuple[int, int, int, str]], counts: _ImportCounts) -> None:
    """Read and hash the files of one batch of rows and commit their rows and failures."""
    paths = [os.path.abspath(root / p) for p in batch.columns["image_path"]]
    shas = batch.columns.get("sha256") or [None] * len(paths)
    norms = np.linalg.norm(batch.vectors, axis=1, keepdims=True)
    vectors = batch.vectors / np.where(norms > 0, norms, 1)  # the index holds unit vectors
    read = list(pool.map(lambda a: _read_file(a[0], a[1], max_megapixels), zip(paths, shas, strict=True)))
    rows: list[NewImage] = []
    bad: list[FailureRecord] = []
    texts: dict[str, tuple[list[tuple[str, str]], str]] = {}
    for path, vec, r in zip(paths, vectors, read, strict=True):
        if isinstance(r, FailureRecord):
            bad.append(r)
            continue
        size, mtime_ns, sha, w, h, fmt, meta, found_texts, sidecars = r
        meta = meta if isinstance(meta, PhotoMetadata) else None
        rows.append(NewImage(path, size, mtime_ns, sha, w, h, fmt, vec, meta))
        texts[path] = (found_texts, sidecars)
        state = states.get(path)
        if state is not None and state[3] == sha:
            counts.unchanged += 1
        else:
            counts.imported += 1
    catalog.commit_batch(rows, bad)
    _store_texts(catalog, texts, {f.path for f in bad})
    counts.failures += bad
    counts.done += len(paths)


def _store_texts(catalog: Catalog, texts: dict[str, tuple[list[tuple[str, str]], str]], failed: set[str]) -> None:
    """Store the keywords read for the rows a batch committed (as indexing does)."""
    paths = [p for p in texts if p not in failed]
    ids = catalog.images.ids_by_path(paths) if paths else {}
    if ids:
        catalog.texts.store({ids[p]: texts[p][0] for p in paths if p in ids})
        catalog.texts.store_states({ids[p]: texts[p][1] for p in paths if p in ids})
