"""Example images of a few-shot search (``like``/``unlike``): their vectors, stored or encoded.

An example is a file, the id of an indexed image, or a moment of an indexed video
(:class:`~searchindex.search.request.Moment`, ``ID@SECONDS``): the embedding of that
video's kept frame nearest to the second, rather than the video's mean picture.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import QueryError
from ..fileio import INT64_MAX, clamp_int64
from ..models.session import ModelSession
from ..store.catalog.database import Catalog
from ..store.catalog.videos import VideoReader
from .request import Moment, Shot

__all__ = ["moment_vector", "shot_vectors", "unchanged_ids"]


def moment_vector(catalog: Catalog, moment: Moment, dim: int, what: str) -> np.ndarray:
    """The embedding of the kept frame of ``moment``'s video nearest to its second (a second past
    the end takes the last frame).

    Raises:
        QueryError: no such image, or an image that is no video (or a video with no frames).
    """
    if not 0 <= moment.image_id <= INT64_MAX:
        raise QueryError(f"no video with id {moment.image_id} in this index ({what} moment {moment})")
    frames = VideoReader(catalog.read).frames(moment.image_id, dim)
    if frames is None or not len(frames.times):
        if catalog.read.embeddings([moment.image_id], dim):
            raise QueryError(f"image {moment.image_id} is no video: like it as {moment.image_id}, "
                             f"without @SECONDS ({what} moment {moment})")
        raise QueryError(f"no video with id {moment.image_id} in this index ({what} moment {moment})")
    nearest = int(np.argmin(np.abs(frames.times - moment.time)))
    return np.asarray(frames.vectors[nearest], dtype=np.float32)


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
    uses its stored embedding with no decoding; a moment of a video uses its nearest kept
    frame's; any other file (one changed since it was indexed too) is decoded and encoded.

    Raises:
        QueryError: an id not in the index, a moment of no video, or a file that cannot be
            read or decoded.
    """
    dim = models.dim
    if isinstance(shots, (str, int, os.PathLike, Moment)):
        shots = [shots]
    vectors: list[np.ndarray] = []
    ids: list[int] = []
    wanted_ids = [int(x) for x in shots if isinstance(x, (int, np.integer))]
    for i in wanted_ids:
        if not 0 <= i <= INT64_MAX:
            raise QueryError(f"no image with id {i} in this index ({what} example)")
    stored = catalog.read.embeddings(wanted_ids, dim) if wanted_ids else {}
    paths = [x for x in shots if not isinstance(x, (int, np.integer, Moment))]
    by_path = unchanged_ids(catalog, [os.fspath(Path(p).expanduser().absolute()) for p in paths])
    for item in shots:
        if isinstance(item, Moment):  # its video is an example: left out of the results as an image is
            vectors.append(moment_vector(catalog, item, dim, what))
            ids.append(item.image_id)
            continue
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
