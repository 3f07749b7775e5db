"""Example images of a few-shot search (``like``/``unlike``): their vectors, stored or encoded."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import QueryError
from ..fileio import INT64_MAX, clamp_int64
from ..models.session import ModelSession
from ..store.catalog.database import Catalog
from .request import Shot

__all__ = ["shot_vectors", "unchanged_ids"]


def unchanged_ids(catalog: Catalog, paths: Sequence[str]) -> dict[str, int]:
    """path -> image id of those absolute ``paths`` that are indexed and whose file has not
    changed since (same size and mtime as recorded): only their stored embedding describes
    the file.  A file changed, replaced or gone since it was indexed is left out (its caller
    encodes it afresh, or reports that it cannot be read)."""
    by_path = catalog.read.ids_by_path(list(paths)) if paths else {}
    records = catalog.read.records(list(by_path.values())) if by_path else {}
    out: dict[str, int] = {}
    for path, image_id in by_path.items():
        record = records.get(image_id)
        try:
            st = os.stat(path)
        except (OSError, ValueError):
            continue
        if record is not None and (st.st_size, clamp_int64(st.st_mtime_ns)) == (record.size, record.mtime_ns):
            out[path] = image_id
    return out


def shot_vectors(catalog: Catalog, models: ModelSession, shots: Sequence[Shot],
                 what: str) -> tuple[np.ndarray, list[int]]:
    """Embeddings of example images (ids or paths) and the ids of those in the index.

    An indexed example (by id, or by a path the index holds for a file unchanged since)
    uses its stored embedding with no decoding; any other file (one changed since it was
    indexed too) is decoded and encoded.

    Raises:
        QueryError: an id not in the index, or a file that cannot be read or decoded.
    """
    dim = models.dim
    if isinstance(shots, (str, int, os.PathLike)):
        shots = [shots]
    vectors: list[np.ndarray] = []
    ids: list[int] = []
    wanted_ids = [int(x) for x in shots if isinstance(x, (int, np.integer))]
    for i in wanted_ids:
        if not 0 <= i <= INT64_MAX:
            raise QueryError(f"no image with id {i} in this index ({what} example)")
    stored = catalog.read.embeddings(wanted_ids, dim) if wanted_ids else {}
    paths = [x for x in shots if not isinstance(x, (int, np.integer))]
    by_path = unchanged_ids(catalog, [os.fspath(Path(p).expanduser().absolute()) for p in paths])
    for item in shots:
        if isinstance(item, (int, np.integer)):
            if int(item) not in stored:
                raise QueryError(f"no image with id {int(item)} in this index ({what} example)")
            vectors.append(stored[int(item)])
            ids.append(int(item))
            continue
        key = os.fspath(Path(item).expanduser().absolute())
        if key in by_path:  # indexed and unchanged: use the stored embedding, no decoding
            image_id = int(by_path[key])
            vec = catalog.read.embeddings([image_id], dim).get(image_id)
            if vec is not None:
                vectors.append(vec)
                ids.append(image_id)
                continue
        vectors.append(models.encode_image_file(item, f"{what} example"))
        indexed = catalog.read.ids_by_path([key]).get(key)
        if indexed is not None:  # changed since it was indexed: encoded afresh, still left out of results
            ids.append(int(indexed))
    return np.asarray(vectors, dtype=np.float32).reshape(len(vectors), dim), ids
