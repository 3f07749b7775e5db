"""What an index is made of and how big it is, read from its catalog and files (no FAISS loading)."""

from __future__ import annotations

from pathlib import Path

from ..results import IndexInfo
from .catalog.database import Catalog
from .catalog.sqlite import CATALOG_FILE
from .catalog.videos import VideoReader
from .vectors.file import latest_vector_file
from .vectors.kinds import DEFAULT_FACTORY

__all__ = ["describe_index", "recorded_folders"]


def recorded_folders(meta: dict[str, str]) -> list[str]:
    """The indexed folders recorded in the catalog's ``meta`` (``folders``, a JSON list)."""
    import json

    try:
        folders = json.loads(meta.get("folders") or "[]")
    except ValueError:
        return []
    return [f for f in folders if isinstance(f, str)] if isinstance(folders, list) else []


def describe_index(folder: Path, catalog: Catalog) -> IndexInfo:
    """The :class:`~searchindex.results.IndexInfo` of the index in ``folder``; the FAISS figures
    describe the saved vector file."""
    meta = catalog.read.meta()
    spec = catalog.model_spec()
    found = latest_vector_file(folder)
    catalog_bytes = sum(p.stat().st_size for p in folder.glob(CATALOG_FILE + "*") if p.is_file())
    images = catalog.read.image_count()
    vector_bytes = found[0].stat().st_size if found else 0
    videos, frames = VideoReader(catalog.read).counts()
    return IndexInfo(
        path=str(folder), model=spec.model, pretrained=spec.pretrained, checkpoint_sha256=spec.checkpoint_sha256,
        dim=int(meta["dim"]), images=images, failures=catalog.read.failure_count(),
        generation=int(meta["generation"]), faiss_factory=meta.get("faiss_factory", DEFAULT_FACTORY),
        schema_version=int(meta["schema_version"]), catalog_bytes=catalog_bytes, vector_bytes=vector_bytes,
        index_type=meta.get("faiss_index_type") or "auto",
        nprobe=int(meta["faiss_nprobe"]) if meta.get("faiss_nprobe") else None,
        tuned_recall=float(meta["faiss_recall"]) if meta.get("faiss_recall") else None,
        built_at=int(meta.get("faiss_built_at") or 0),
        # A FAISS index in memory is its serialized form (codes, ids, centroids), so the file measures it.
        faiss_memory_bytes=vector_bytes, bytes_per_image=vector_bytes / images if images else 0.0,
        captions=dict(catalog.read.caption_counts()), videos=videos, video_frames=frames,
        faces=face_counts(catalog), folders=tuple(recorded_folders(meta)),
        ocr=catalog.read.ocr_counts(),
    )


def face_counts(catalog: Catalog) -> dict[str, int]:
    """Images searched for faces, faces, grouped faces, persons and named persons; empty before any
    ``searchindex faces`` run (or in a catalog opened read-only before its faces migration)."""
    from sqlalchemy.exc import OperationalError

    from .catalog.faces import FaceRepository

    try:
        counts = FaceRepository(catalog.engine).counts()
    except OperationalError:
        return {}
    return counts if counts["images_searched"] else {}
