"""Embedding files: the two Parquet layouts searchindex reads and writes.

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

This module knows the files only; :mod:`searchindex.ingest.exchange` moves
embeddings between them and an index.  pyarrow (the ``parquet`` extra) is
imported on first use.
"""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import EmbeddingFileError, MissingExtraError
from ..models.spec import ModelSpec

if TYPE_CHECKING:
    from ..store.catalog.records import ImageRecord

__all__ = ["LAYOUTS", "EmbeddingBatch", "first_batches", "model_of", "read_embedding_files", "recorded_model",
           "row_count", "schema", "write_part"]

LAYOUTS = ("parquet", "clip-retrieval")
_META_KEY = b"searchindex"
_PHOTO_COLUMNS = ("taken_at", "taken_offset", "date_source", "camera_make", "camera_model", "lens",
                  "gps_lat", "gps_lon", "orientation")


def _pyarrow() -> tuple[Any, Any]:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise MissingExtraError("Parquet export and import need pyarrow", extra="parquet") from None
    return pa, pq


# -- writing ---------------------------------------------------------------


def _model_meta(spec: ModelSpec, dim: int) -> dict[str, Any]:
    return {"model": spec.model, "pretrained": spec.pretrained, "checkpoint_sha256": spec.checkpoint_sha256,
            "dim": dim, "format": 1}


def schema(dim: int, spec: ModelSpec, with_embedding: bool) -> Any:
    """The pyarrow schema of an export of ``spec``'s ``dim``-d embeddings (``with_embedding``: the
    ``parquet`` layout's ``embedding`` column).

    Raises:
        MissingExtraError: pyarrow is not installed.
    """
    pa, _ = _pyarrow()
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
        # The exact bytes of a path that is not UTF-8 (Parquet strings must be); null for the others.
        pa.field("image_path_bytes", pa.binary()),
    ]
    if with_embedding:
        fields.append(pa.field("embedding", pa.list_(pa.float32(), dim)))
    return pa.schema(fields, metadata={_META_KEY: json.dumps(_model_meta(spec, dim)).encode()})


def write_part(folder: Path, layout: str, part: int, records: Sequence[ImageRecord], vectors: np.ndarray,
               spec: ModelSpec, table_schema: Any) -> list[str]:
    """Write one part of an export (``records`` and their ``vectors``, with :func:`schema`'s
    ``table_schema``) under ``folder``; returns the names written, relative to ``folder``."""
    pa, pq = _pyarrow()
    columns: dict[str, Any] = {
        "image_path": [_utf8(r.path) for r in records], "image_id": [r.id for r in records],
        "sha256": [r.sha256 for r in records], "size": [r.size for r in records],
        "mtime_ns": [r.mtime_ns for r in records], "width": [r.width for r in records],
        "height": [r.height for r in records], "format": [r.format for r in records],
        **{c: [_utf8(getattr(r, c)) for r in records] for c in _PHOTO_COLUMNS},
        "model": [spec.model] * len(records), "pretrained": [spec.pretrained] * len(records),
        "image_path_bytes": [None if _utf8(r.path) == r.path else os.fsencode(r.path) for r in records],
    }
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if layout == "parquet":
        columns["embedding"] = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), vectors.shape[1])
        name = f"part-{part:05d}.parquet"
        pq.write_table(pa.Table.from_pydict(columns, schema=table_schema), folder / name)
        return [name]
    np.save(folder / "img_emb" / f"img_emb_{part}.npy", vectors)
    pq.write_table(pa.Table.from_pydict(columns, schema=table_schema), folder / "metadata" / f"metadata_{part}.parquet")
    return [f"img_emb/img_emb_{part}.npy", f"metadata/metadata_{part}.parquet"]


def _utf8(value: Any) -> Any:
    """``value`` as text Parquet can hold: bytes that were not UTF-8 (lone surrogates, as Python
    decodes file names) shown as U+FFFD; anything else unchanged."""
    if not isinstance(value, str):
        return value
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return value


# -- reading ---------------------------------------------------------------


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
            exact = cols.pop("image_path_bytes", None)
            if exact is not None:  # a path that is not UTF-8: its exact bytes, as the file system has them
                cols["image_path"] = [os.fsdecode(b) if isinstance(b, bytes) else p
                                      for p, b in zip(cols["image_path"], exact, strict=True)]
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


def row_count(files: Sequence[str | os.PathLike[str]]) -> int:
    """The number of rows in ``files`` (from the Parquet footers, nothing else read)."""
    _, pq = _pyarrow()
    return sum(pq.ParquetFile(p).metadata.num_rows for p, _ in _expand(files))


def model_of(found: dict[str, Any]) -> ModelSpec:
    """The model a file's metadata names."""
    return ModelSpec(found.get("model", ""), found.get("pretrained", ""), found.get("checkpoint_sha256"))


def recorded_model(files: Sequence[str | os.PathLike[str]]) -> ModelSpec | None:
    """The model the first of ``files`` says made its embeddings (``None``: it does not say)."""
    for batch in first_batches(files):
        if batch.model is None:
            return None
        return model_of(batch.model)
    return None


def first_batches(files: Sequence[str | os.PathLike[str]]) -> Iterator[EmbeddingBatch]:
    """The first (small) batch of each file: enough to check its model and vector size."""
    for pair in _expand(files):
        yield next(_read_pairs([pair], batch_rows=1), EmbeddingBatch({}, np.zeros((0, 0), np.float32), None, pair[0]))
