"""Backfills: what unchanged files still need read, without decoding or encoding them again.

- photo metadata of rows indexed before it existed (file headers only);
- keywords of unchanged images whose sidecars were added or edited, or never read.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor

from ..store.catalog.database import Catalog
from .keywords import read_texts
from .metadata import read_metadata
from .plan import Plan, listing

__all__ = ["CHUNK", "backfill_keywords", "backfill_metadata"]

log = logging.getLogger(__name__)

#: Rows read and committed together.
CHUNK = 500


def backfill_metadata(catalog: Catalog, plan: Plan, threads: int, stop: threading.Event | None = None) -> bool:
    """Read the photo metadata of ``plan.backfill``; returns whether ``stop`` interrupted it."""
    if not plan.backfill:
        return False
    interrupted = False
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        for start in range(0, len(plan.backfill), CHUNK):
            chunk = plan.backfill[start:start + CHUNK]
            metas = pool.map(lambda e: read_metadata(e.path, e.mtime_ns), [e for _, e in chunk])
            catalog.commit_batch(metadata=list(zip([i for i, _ in chunk], metas, strict=True)))
            if stop is not None and stop.is_set():
                interrupted = True
                break
    log.info("read photo metadata of %d previously indexed files", len(plan.backfill))
    return interrupted


def backfill_keywords(catalog: Catalog, plan: Plan, threads: int, stop: threading.Event | None = None) -> bool:
    """Read the keywords of ``plan.reread``; returns whether ``stop`` interrupted it."""
    if not plan.reread:
        return False
    interrupted = False
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        for start in range(0, len(plan.reread), CHUNK):
            chunk = plan.reread[start:start + CHUNK]
            found = pool.map(lambda r: read_texts(r[1].path, names=listing(plan.listings, r[1].path)), chunk)
            catalog.texts.store(dict(zip([i for i, _, _ in chunk], found, strict=True)))
            catalog.texts.store_states({i: signature for i, _, signature in chunk})
            if stop is not None and stop.is_set():
                interrupted = True
                break
    log.info("read keywords of %d unchanged files (new or edited sidecars, or never read)", len(plan.reread))
    return interrupted
