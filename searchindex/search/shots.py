"""Example images of a few-shot search (``like``/``unlike``): their vectors, stored or encoded."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import QueryError
from ..fileio import INT64_MAX
from ..models.session import ModelSession
from ..store.catalog import Catalog
from .request import Shot

__all__ = ["shot_vectors"]


def shot_vectors(catalog: Catalog, models: ModelSession, shots: Sequence[Shot],
                 what: str) -> tuple[np.ndarray, list[int]]:
    """Embeddings of example images (ids or paths) and the ids of those in the index.

    An indexed example (by id, or by a path the index holds) uses its stored
    embedding with no decoding; any other file is decoded and encoded.

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
    by_path = catalog.read.ids_by_path(
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
            vec = catalog.read.embeddings([image_id], dim).get(image_id)
            if vec is not None:
                vectors.append(vec)
                ids.append(image_id)
                continue
        vectors.append(models.encode_image_file(item, f"{what} example"))
    return np.asarray(vectors, dtype=np.float32).reshape(len(vectors), dim), ids
