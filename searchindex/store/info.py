"""What an index is made of and how big it is, read from its catalog and files (no FAISS loading)."""

from __future__ import annotations

from pathlib import Path

from ..results import IndexInfo
from .catalog.database import CATALOG_FILE, Catalog
from .vectors.index import DEFAULT_FACTORY, latest_vector_file

__all__ = ["describe_index"]


def describe_index(folder: Path, catalog: Catalog) -> IndexInfo:
    """The :class:`~searchindex.results.IndexInfo` of the index in ``folder``; the FAISS figures
    describe the saved vector file."""
    meta = catalog.meta()
    spec = catalog.model_spec()
    found = latest_vector_file(folder)
    catalog_bytes = sum(p.stat().st_size for p in folder.glob(CATALOG_FILE + "*") if p.is_file())
    images = catalog.images.count()
    vector_bytes = found[0].stat().st_size if found else 0
    return IndexInfo(
        path=str(folder), model=spec.model, pretrained=spec.pretrained, checkpoint_sha256=spec.checkpoint_sha256,
        dim=int(meta["dim"]), images=images, failures=catalog.images.failure_count(),
        generation=int(meta["generation"]), faiss_factory=meta.get("faiss_factory", DEFAULT_FACTORY),
        schema_version=int(meta["schema_version"]), catalog_bytes=catalog_bytes, vector_bytes=vector_bytes,
        index_type=meta.get("faiss_index_type") or "auto",
        nprobe=int(meta["faiss_nprobe"]) if meta.get("faiss_nprobe") else None,
        tuned_recall=float(meta["faiss_recall"]) if meta.get("faiss_recall") else None,
        built_at=int(meta.get("faiss_built_at") or 0),
        # A FAISS index in memory is its serialized form (codes, ids, centroids), so the file measures it.
        faiss_memory_bytes=vector_bytes, bytes_per_image=vector_bytes / images if images else 0.0,
        captions=dict(catalog.captions.counts()),
        ocr=catalog.ocr.counts(),
    )
