"""Embeddings as Parquet: export an index's vectors, import vectors computed elsewhere.

Two layouts are read and written (``docs/scaling.md`` describes them):

- ``parquet`` (the default export): ``OUT/part-00000.parquet``, ... with one row per
  image: ``image_path`` (clip-retrieval's column name), ``image_id``, ``sha256``,
  ``size``, ``mtime_ns``, ``width``, ``height``, ``format``, the photo metadata
  columns, ``model``, ``pretrained`` and ``embedding`` (a fixed-size list of
  float32).  The model is also in the file's key-value metadata.  DuckDB,
  Spark, pandas and embedding-reader (``file_format="parquet"``,
  ``embedding_column="embedding"``) read it as is.
- ``clip-retrieval``: what ``clip-retrieval inference`` writes:
  ``OUT/img_emb/img_emb_0.npy`` (float32 matrix) and
  ``OUT/metadata/metadata_0.parquet`` (``image_path`` and the other columns, same
  row order).  autofaiss builds an index from ``img_emb`` directly.

Importing joins rows to files by ``image_path`` (and ``sha256`` when the file has
one): each file is read and hashed, so the catalog row describes the file on disk
and a later ``add_folder`` sees it as unchanged.  Files that are missing or whose
content differs from the recorded hash become failures with their reason.
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..defaults import DEFAULT_MAX_MEGAPIXELS
from ..errors import EmbeddingFileError, ImageDecodeError, MissingExtraError, ModelMismatchError
from ..models.images import decode_image
from ..models.spec import ModelSpec
from ..store.catalog import Catalog
from ..store.records import FailureRecord, NewImage, PhotoMetadata
from .keywords import read_texts, sidecar_signature
from .metadata import read_metadata

__all__ = ["LAYOUTS", "ExportSummary", "ImportProgress", "ImportSummary", "export_embeddings",
           "import_embeddings", "read_embedding_files", "recorded_model"]

log = logging.getLogger(__name__)

LAYOUTS = ("parquet", "clip-retrieval")
#: Rows per exported file (a 512-d part is ~100 MB).
ROWS_PER_FILE = 50_000
_META_KEY = b"searchindex"
_PHOTO_COLUMNS = ("taken_at", "taken_offset", "date_source", "camera_make", "camera_model", "lens",
                  "gps_lat", "gps_lon", "orientation")


def _pyarrow() -> tuple[Any, Any]:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise MissingExtraError("Parquet export and import need pyarrow: pip install 'searchindex[parquet]'") from None
    return pa, pq


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


def _model_meta(spec: ModelSpec, dim: int) -> dict[str, Any]:
    return {"model": spec.model, "pretrained": spec.pretrained, "checkpoint_sha256": spec.checkpoint_sha256,
            "dim": dim, "format": 1}


def _schema(pa: Any, dim: int, spec: ModelSpec, with_embedding: bool) -> Any:
    fields = [
        pa.field("image_path", pa.string()), pa.field("image_id", pa.int64()), pa.field("sha256", pa.string()),
        pa.field("size", pa.int64()), pa.field("mtime_ns", pa.int64()), pa.field("width", pa.int32()),
        pa.field("height", pa.int32()), pa.field("format", pa.string()),
        pa.field("taken_at", pa.string()), pa.field("taken_offset", pa.string()),
        pa.field("date_source", pa.string()), pa.field("camera_make", pa.string()),
        pa.field("camera_model", pa.string()), pa.field("lens", pa.string()),
        pa.field("gps_lat", pa.float64()), pa.field("gps_lon", pa.float64()),
        pa.field("orientation", pa.int32()),
        pa.field("model", pa.string()), pa.field("pretrained", pa.string()),
    ]
    if with_embedding:
        fields.append(pa.field("embedding", pa.list_(pa.float32(), dim)))
    return pa.schema(fields, metadata={_META_KEY: json.dumps(_model_meta(spec, dim)).encode()})


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
    """Write every image's embedding and facts under the folder ``out`` (see the module docstring).

    Raises:
        ValueError: unknown ``layout``.
        EmbeddingFileError: ``out`` exists and is not an empty folder.
        MissingExtraError: pyarrow is not installed.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; use one of {', '.join(LAYOUTS)}")
    pa, pq = _pyarrow()
    folder = Path(out).expanduser()
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise EmbeddingFileError(f"{folder} exists and is not an empty folder; export into a new folder")
    schema = _schema(pa, dim, spec, with_embedding=layout == "parquet")
    written: list[str] = []
    rows = 0
    tmp = folder.with_name(folder.name + ".partial")
    tmp.mkdir(parents=True, exist_ok=True)
    if layout == "clip-retrieval":
        (tmp / "img_emb").mkdir(exist_ok=True)
        (tmp / "metadata").mkdir(exist_ok=True)
    for part, (records, vectors) in enumerate(_export_chunks(catalog, dim, max(1, rows_per_file))):
        columns: dict[str, Any] = {
            "image_path": [r.path for r in records], "image_id": [r.id for r in records],
            "sha256": [r.sha256 for r in records], "size": [r.size for r in records],
            "mtime_ns": [r.mtime_ns for r in records], "width": [r.width for r in records],
            "height": [r.height for r in records], "format": [r.format for r in records],
            **{c: [getattr(r, c) for r in records] for c in _PHOTO_COLUMNS},
            "model": [spec.model] * len(records), "pretrained": [spec.pretrained] * len(records),
        }
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if layout == "parquet":
            columns["embedding"] = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), dim)
            name = f"part-{part:05d}.parquet"
            pq.write_table(pa.Table.from_pydict(columns, schema=schema), tmp / name)
            written.append(name)
        else:
            np.save(tmp / "img_emb" / f"img_emb_{part}.npy", vectors)
            pq.write_table(pa.Table.from_pydict(columns, schema=schema), tmp / "metadata" / f"metadata_{part}.parquet")
            written += [f"img_emb/img_emb_{part}.npy", f"metadata/metadata_{part}.parquet"]
        rows += len(records)
    # The folder appears complete or not at all.
    if folder.exists():
        folder.rmdir()
    os.replace(tmp, folder)
    log.info("exported %d embeddings to %s (%s)", rows, folder, layout)
    return ExportSummary(rows, tuple(str(folder / w) for w in written), layout, dim)


# -- reading --------------------------------------------------------------


@dataclass
class EmbeddingBatch:
    """Rows read from an embedding file: columns by name, and the (n, dim) vectors."""

    columns: dict[str, list[Any]]
    vectors: np.ndarray
    model: dict[str, Any] | None  # what the file says made it (None: it does not say)
    source: str


def _expand(files: Sequence[str | os.PathLike[str]]) -> list[tuple[str, str | None]]:
    """(parquet file, matching .npy or None) pairs: folders are looked into for either layout."""
    out: list[tuple[str, str | None]] = []
    for f in files:
        p = Path(f).expanduser()
        if p.is_dir():
            if (p / "metadata").is_dir() and (p / "img_emb").is_dir():
                for meta in sorted(glob.glob(str(p / "metadata" / "metadata_*.parquet"))):
                    suffix = Path(meta).stem.removeprefix("metadata_")
                    npy = p / "img_emb" / f"img_emb_{suffix}.npy"
                    if not npy.is_file():
                        raise EmbeddingFileError(f"{meta} has no matching {npy}")
                    out.append((meta, str(npy)))
            else:
                parts = sorted(glob.glob(str(p / "*.parquet")))
                if not parts:
                    raise EmbeddingFileError(f"{p} holds no .parquet files (nor clip-retrieval's img_emb/ and "
                                             "metadata/ folders)")
                out += [(q, None) for q in parts]
        elif p.is_file():
            out.append((str(p), None))
        else:
            raise EmbeddingFileError(f"no such file or folder: {p}")
    return out


def read_embedding_files(
    files: Sequence[str | os.PathLike[str]], batch_rows: int = 10_000,
) -> Iterator[EmbeddingBatch]:
    """Stream rows from embedding files in either layout, ``batch_rows`` at a time.

    Raises:
        EmbeddingFileError: a file is not Parquet, has no ``image_path`` (or ``path``)
            column, or no embedding (an ``embedding`` column, or clip-retrieval's .npy).
    """
    yield from _read_pairs(_expand(files), batch_rows)


def _read_pairs(pairs: Sequence[tuple[str, str | None]], batch_rows: int) -> Iterator[EmbeddingBatch]:
    _, pq = _pyarrow()
    for parquet, npy in pairs:
        try:
            pf = pq.ParquetFile(parquet)
        except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, ...
            raise EmbeddingFileError(f"{parquet}: not a Parquet file ({exc})") from exc
        raw = (pf.schema_arrow.metadata or {}).get(_META_KEY)
        model = json.loads(raw) if raw else None
        names = pf.schema_arrow.names
        path_col = "image_path" if "image_path" in names else "path" if "path" in names else None
        if path_col is None:
            raise EmbeddingFileError(f"{parquet}: no image_path column (the file each embedding belongs to)")
        emb = np.load(npy, mmap_mode="r") if npy else None
        if emb is None and "embedding" not in names:
            raise EmbeddingFileError(f"{parquet}: no embedding column")
        if emb is not None and (emb.ndim != 2 or len(emb) != pf.metadata.num_rows):
            raise EmbeddingFileError(f"{npy}: {emb.shape} does not match {pf.metadata.num_rows} rows of {parquet}")
        start = 0
        for batch in pf.iter_batches(batch_size=batch_rows):
            cols = batch.to_pydict() if emb is not None else batch.drop_columns(["embedding"]).to_pydict()
            if path_col != "image_path":
                cols["image_path"] = cols.pop(path_col)
            if emb is not None:
                vectors = np.asarray(emb[start:start + batch.num_rows], dtype=np.float32)
            else:
                vectors = _embedding_matrix(batch.column("embedding"), parquet)
            start += batch.num_rows
            yield EmbeddingBatch(cols, vectors, model, parquet)


def _embedding_matrix(column: Any, source: str) -> np.ndarray:
    import pyarrow as pa

    if column.null_count:
        raise EmbeddingFileError(f"{source}: {column.null_count} rows have no embedding")
    if pa.types.is_fixed_size_list(column.type):
        dim = column.type.list_size
        return np.asarray(column.flatten().to_numpy(zero_copy_only=False), dtype=np.float32).reshape(-1, dim)
    if pa.types.is_list(column.type) or pa.types.is_large_list(column.type):
        lengths = set(column.value_lengths().to_pylist())
        if len(lengths) > 1:
            raise EmbeddingFileError(f"{source}: embeddings of different lengths {sorted(lengths)}")
        dim = lengths.pop() if lengths else 0
        return np.asarray(column.flatten().to_numpy(zero_copy_only=False), dtype=np.float32).reshape(-1, dim)
    raise EmbeddingFileError(f"{source}: the embedding column is {column.type}, not a list of floats")


# -- import ---------------------------------------------------------------


def check_model(found: dict[str, Any] | None, spec: ModelSpec, dim: int, source: str,
                declared: ModelSpec | None) -> None:
    """Refuse embeddings that another model made (or whose model is unknown and not declared)."""
    if found is not None:
        theirs = ModelSpec(found.get("model", ""), found.get("pretrained", ""), found.get("checkpoint_sha256"))
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
    catalog: Catalog, spec: ModelSpec, dim: int, files: Sequence[str | os.PathLike[str]], *,
    declared: ModelSpec | None = None, base: str | os.PathLike[str] | None = None, batch_size: int = 1000,
    max_megapixels: float = DEFAULT_MAX_MEGAPIXELS, progress: Callable[[ImportProgress], None] | None = None,
) -> ImportSummary:
    """Add precomputed embeddings from ``files`` (either layout) to the catalog, batch by batch.

    Every file is checked before any row is written: a model or dimension
    mismatch refuses the whole import.

    Args:
        declared: the model that made embeddings whose files do not record it.
        base: relative ``image_path`` values are taken relative to this folder
            (default: the current directory).
    """
    from concurrent.futures import ThreadPoolExecutor

    from .produce import default_workers

    for batch in _first_batches(files):  # check every file's model and size before writing anything
        check_model(batch.model, spec, dim, batch.source, declared)
        if len(batch.vectors) and batch.vectors.shape[1] != dim:
            raise ModelMismatchError(f"{batch.source} holds {batch.vectors.shape[1]}-d embeddings; "
                                     f"this index holds {dim}-d")
    _, pq = _pyarrow()
    total = sum(pq.ParquetFile(p).metadata.num_rows for p, _ in _expand(files))
    root = Path(base).expanduser() if base is not None else Path.cwd()
    imported = unchanged = done = 0
    failures: list[FailureRecord] = []
    states = catalog.images.states()
    with ThreadPoolExecutor(max_workers=default_workers(), thread_name_prefix="import") as pool:
        for batch in read_embedding_files(files, batch_rows=batch_size):
            if batch.vectors.shape[1] != dim:
                raise ModelMismatchError(f"{batch.source} holds {batch.vectors.shape[1]}-d embeddings; "
                                         f"this index holds {dim}-d")
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
                    unchanged += 1
                else:
                    imported += 1
            catalog.commit_batch(rows, bad)
            _store_texts(catalog, texts, {f.path for f in bad})
            failures += bad
            done += len(paths)
            if progress:
                progress(ImportProgress(done, total, imported + unchanged, len(failures)))
    return ImportSummary(done, imported, unchanged, len(failures), tuple(failures))


def recorded_model(files: Sequence[str | os.PathLike[str]]) -> ModelSpec | None:
    """The model the first of ``files`` says made its embeddings (``None``: it does not say)."""
    for batch in _first_batches(files):
        if batch.model is None:
            return None
        m = batch.model
        return ModelSpec(m.get("model", ""), m.get("pretrained", ""), m.get("checkpoint_sha256"))
    return None


def _store_texts(catalog: Catalog, texts: dict[str, tuple[list[tuple[str, str]], str]], failed: set[str]) -> None:
    """Store the keywords read for the rows a batch committed (as indexing does)."""
    paths = [p for p in texts if p not in failed]
    ids = catalog.images.ids_by_path(paths) if paths else {}
    if ids:
        catalog.texts.store({ids[p]: texts[p][0] for p in paths if p in ids})
        catalog.texts.store_states({ids[p]: texts[p][1] for p in paths if p in ids})


def _first_batches(files: Sequence[str | os.PathLike[str]]) -> Iterator[EmbeddingBatch]:
    """The first (small) batch of each file: enough to check its model and vector size."""
    for pair in _expand(files):
        yield next(_read_pairs([pair], batch_rows=1), EmbeddingBatch({}, np.zeros((0, 0), np.float32), None, pair[0]))
