"""Synthetic vector indexes for tests and benchmarks: catalog rows and vectors, no images, no model.

Test-only (not part of the installed package): the rows go through the real
catalog writer and the vectors through the real FAISS index on first open.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

from searchindex.models.spec import ModelSpec
from searchindex.store.catalog.database import Catalog
from searchindex.store.catalog.records import NewImage, PhotoMetadata
from searchindex.store.vectors.kinds import DEFAULT_FACTORY

__all__ = ["CAMERAS", "PLACES", "write_vector_index"]

#: (make, model) of the synthetic rows' cameras.
CAMERAS: tuple[tuple[str, str], ...] = (
    ("Canon", "Canon EOS R5"), ("NIKON CORPORATION", "NIKON Z 6"), ("Apple", "iPhone 12"),
    ("SONY", "ILCE-7M3"), ("FUJIFILM", "X-T4"), ("Canon", "Canon EOS 5D Mark IV"),
)
#: (lat, lon) around which the synthetic rows' positions cluster (the last two straddle the antimeridian).
PLACES: tuple[tuple[float, float], ...] = (
    (48.8566, 2.3522), (-33.8688, 151.2093), (40.7128, -74.0060), (64.1466, -21.9426),
    (-17.7134, 178.0650), (-16.5, -179.9),
)


def write_vector_index(
    path: str | Path,
    count: int,
    dim: int = 512,
    seed: int = 0,
    folders: int = 100,
    duplicate_fraction: float = 0.0,
    batch: int = 10_000,
) -> np.ndarray:
    """Create an index at ``path`` of ``count`` synthetic rows and vectors (no images, no model).

    Rows go through the real catalog and the vectors through the real FAISS index
    on first open, exactly like indexed photos.  Paths are
    ``/synthetic/fNN/img_NNNNNNN.jpg`` spread evenly over ``folders`` folders (so
    one folder is a ``1/folders`` selective filter); widths are 640, 1024, 2048 or
    4032 px; dates spread over 2015-2024 (local time, one in ten from the file's
    mtime); cameras from :data:`CAMERAS` (one in seven without); three in five
    rows have a GPS position within ~50 km of one of :data:`PLACES`.  Vectors are
    unit-length points around 256 random centres (real embeddings cluster too);
    a ``duplicate_fraction`` of them are near-copies (cosine ~0.99) of another
    vector.

    Returns:
        An ``(n, 2)`` array of the planted near-duplicate (original id, copy id) pairs.
    """
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((256, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    n_dup = int(count * duplicate_fraction)
    copy_of = np.full(count, -1, dtype=np.int64)
    if n_dup:
        copies = rng.choice(np.arange(1, count), n_dup, replace=False)
        for c in np.sort(copies):
            copy_of[c] = rng.integers(0, c)
    # Ids are assigned 1..count in insertion order (a fresh catalog, AUTOINCREMENT).
    vectors = np.empty((count, dim), dtype=np.float32)
    catalog = Catalog.create(folder, ModelSpec("synthetic", "none"), dim, DEFAULT_FACTORY)
    widths = np.array([640, 1024, 2048, 4032])
    try:
        for start in range(0, count, batch):
            stop = min(count, start + batch)
            v = centres[rng.integers(0, len(centres), stop - start)] + 0.9 * rng.standard_normal(
                (stop - start, dim)).astype(np.float32) / np.sqrt(dim) * 4
            for i in range(start, stop):
                if copy_of[i] >= 0:
                    src = copy_of[i] if copy_of[i] < start else None
                    base = vectors[copy_of[i]] if src is not None else v[copy_of[i] - start]
                    v[i - start] = base + 0.1 * rng.standard_normal(dim).astype(np.float32) / np.sqrt(dim)
                v[i - start] /= np.linalg.norm(v[i - start])
            vectors[start:stop] = v
            w = widths[rng.integers(0, len(widths), stop - start)]
            seconds = rng.integers(0, 10 * 365 * 86400, stop - start)
            cams = rng.integers(0, len(CAMERAS) + 1, stop - start)
            places = rng.integers(0, len(PLACES) * 3 // 2 + 1, stop - start)
            jitter = rng.normal(0, 0.2, (stop - start, 2))
            metas = []
            for j in range(stop - start):
                make, model = CAMERAS[cams[j]] if cams[j] < len(CAMERAS) else (None, None)
                lat = lon = None
                if places[j] < len(PLACES):
                    lat = float(np.clip(PLACES[places[j]][0] + jitter[j, 0], -90, 90))
                    lon = float((PLACES[places[j]][1] + jitter[j, 1] + 180) % 360 - 180)
                taken = (datetime(2015, 1, 1) + timedelta(seconds=int(seconds[j]))).isoformat()
                metas.append(PhotoMetadata(taken_at=taken, date_source="mtime" if j % 10 == 9 else "exif",
                                           camera_make=make, camera_model=model, gps_lat=lat, gps_lon=lon))
            catalog.commit_batch([
                NewImage(path=f"/synthetic/f{i % folders:02d}/img_{i:07d}.jpg", size=100_000 + i,
                         mtime_ns=1_600_000_000_000_000_000 + i, sha256=f"{i:064x}", width=int(w[i - start]),
                         height=int(w[i - start]) * 3 // 4, format="JPEG", embedding=v[i - start],
                         meta=metas[i - start])
                for i in range(start, stop)
            ])
    finally:
        catalog.close()
    planted = np.flatnonzero(copy_of >= 0)
    return np.stack([copy_of[planted] + 1, planted + 1], axis=1)
