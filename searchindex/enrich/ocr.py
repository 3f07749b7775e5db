"""Reading the text in an index's photos: every image not read yet, batch by batch.

The engines live in :mod:`searchindex.models.ocr`; this module walks the catalog, reads each
file, and commits each batch's lines (and the images found without text) in one transaction,
so an interrupted run loses at most the batch in flight and the next run resumes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

from ..errors import ImageDecodeError
from ..models.ocr import OcrEngine
from ..results import CaptionFailure, OcrProgress, OcrSummary, TextLine
from ..store.catalog.database import Catalog
from .passes import Batches, unreadable

__all__ = ["ocr_catalog"]

log = logging.getLogger(__name__)


def ocr_catalog(
    catalog: Catalog,
    engine: Callable[[], OcrEngine],
    *,
    batch_size: int = 8,
    progress: Callable[[OcrProgress], None] | None = None,
    stop: threading.Event | None = None,
    ids: Sequence[int] | None = None,
) -> OcrSummary:
    """Read the text of every image of ``catalog`` not read yet (of ``ids`` only, when given).

    ``engine`` is called (to load the models) only when some image needs reading.  Files
    that cannot be read or decoded any more are reported in the summary, not recorded, and
    tried again by the next run.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    t0 = time.perf_counter()
    todo = catalog.ocr.ids_unread()
    already = catalog.read.image_count() - len(todo)
    if ids is not None:
        wanted = {int(i) for i in ids}
        todo = [i for i in todo if i in wanted]
    loaded: OcrEngine | None = None
    read = with_text = lines = 0
    failures: list[CaptionFailure] = []
    batches = Batches(todo, batch_size, stop)
    for done, chunk in batches:
        if loaded is None:
            loaded = engine()
        rows = catalog.read.records(chunk)
        found: dict[int, list[TextLine]] = {}
        for image_id in chunk:
            row = rows.get(image_id)
            if row is None:  # removed by an index run since the list was read
                continue
            try:
                found[image_id] = loaded.read_file(row.path)
            except (ImageDecodeError, OSError) as exc:
                failures.append(CaptionFailure(row.path, unreadable(exc)))
        if found:
            catalog.ocr.store(found, loaded.name)
        read += len(found)
        with_text += sum(1 for v in found.values() if v)
        lines += sum(len(v) for v in found.values())
        if progress is not None:
            progress(OcrProgress(done, len(todo), with_text, len(failures)))
    for f in failures:
        log.warning("cannot read the text of %s: %s", f.path, f.reason)
    reader = loaded.name if loaded is not None else ""
    return OcrSummary(reader, read, with_text, lines, len(failures), already, time.perf_counter() - t0,
                      tuple(failures), batches.interrupted)
