"""The indexing pipeline: scan -> plan -> produce -> commit, batch by batch.

- :mod:`.plan` classifies the files found against the catalog (unchanged, to do, gone);
- a :class:`~searchindex.ingest.produce.Producer` reads, hashes, decodes and
  encodes the files to do (:class:`~searchindex.ingest.produce.LocalProducer`:
  worker processes one batch ahead of the encoder; another engine can replace it);
- :mod:`.commit` writes each batch in one catalog transaction (new, modified,
  touched, moved, duplicate), then removes what is gone;
- :mod:`.backfill` reads what unchanged files still lack (metadata, edited sidecars).

An interruption (``stop``) loses at most the batch in flight, and the next run
resumes because committed files are then unchanged.  The model is loaded only
when some file actually needs encoding.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence

from ..defaults import DEFAULT_MAX_MEGAPIXELS
from ..fileio import DEFAULT_MAX_FILE_BYTES
from ..models.encoders import Encoder
from ..results import FailureRecord, IndexProgress, IndexSummary
from ..store.catalog.database import Catalog
from .backfill import backfill_keywords, backfill_metadata
from .commit import Committer
from .plan import plan_run
from .produce import LocalProducer, Producer, ReadLimits, default_workers
from .scan import FileEntry

__all__ = ["ProgressCallback", "index_entries"]

log = logging.getLogger(__name__)

ProgressCallback = Callable[[IndexProgress], None]


def index_entries(
    catalog: Catalog,
    get_encoder: Callable[[], Encoder],
    dim: int,
    entries: Sequence[FileEntry],
    roots: Iterable[str],
    *,
    batch_size: int = 64,
    workers: int | None = None,
    max_megapixels: float = DEFAULT_MAX_MEGAPIXELS,
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
    progress: ProgressCallback | None = None,
    stop: threading.Event | None = None,
    producer: Producer | None = None,
    t0: float | None = None,
    skipped: Sequence[str] = (),
    unread: Sequence[FailureRecord] = (),
    kept: frozenset[str] = frozenset(),
    vanished: Iterable[str] = (),
) -> IndexSummary:
    """Bring the catalog in line with ``entries`` found below ``roots``.

    Args:
        get_encoder: loads the model (only when some file needs encoding).
        roots: indexed files below these folders that are not in ``entries`` leave the index.
        workers: decode processes of the local producer (default :func:`default_workers`);
            0 decodes in threads of this process.
        batch_size: images encoded per model call and committed per transaction.
        max_megapixels: larger images are recorded as failures (decompression bombs);
            a positive, finite number (Pillow's own limit is raised to it).
        max_file_bytes: larger files are recorded as failures without being read
            (default :data:`searchindex.fileio.DEFAULT_MAX_FILE_BYTES`, 1 GiB).
        progress: called with an :class:`~searchindex.results.IndexProgress` after every committed batch.
        stop: when set (e.g. from a SIGINT handler), the run ends after the batch in
            flight is committed; the summary says ``interrupted``.
        producer: the produce step (default: a :class:`LocalProducer` with ``workers``).
        skipped: folders below ``roots`` the scan did not walk (see
            :func:`~searchindex.ingest.scan.scan_folders`); what is indexed below them is kept.
        unread: folders and files the scan could not read, with their reasons (see
            :func:`~searchindex.ingest.scan.scan_folders`): recorded and counted as failures.
        kept: file name extensions the scan left out (videos, with ``videos=False``): what is
            indexed with them is kept.
        vanished: indexed paths known to be gone (a watcher's delete and move events): they
            leave the index, or their row follows a file of the same content in ``entries``.
        t0: when the run started (``time.perf_counter()``; default: now), for ``seconds``.
    """
    t0 = time.perf_counter() if t0 is None else t0
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    ReadLimits(max_megapixels, max_file_bytes)  # ValueError (nan, 0, ...) before any work
    threads = workers or default_workers()
    plan = plan_run(catalog, entries, roots, skipped, kept=kept, vanished=vanished)
    if producer is None:
        producer = LocalProducer(get_encoder, workers=workers, max_megapixels=max_megapixels,
                                 max_file_bytes=max_file_bytes)
    committer = Committer(catalog, plan, dim, producer)
    batches = plan.batches(batch_size)
    interrupted = False
    done = 0
    if unread:
        committer.commit(list(unread))  # recorded first: an interrupted run still reports them
    results = producer.produce(batches, frozenset(plan.by_sha))
    try:
        for i, batch_results in enumerate(results):
            committer.commit(batch_results)
            done += len(batches[i])
            if progress:
                progress(IndexProgress(done, len(plan.todo), committer.counts.indexed, len(committer.counts.failures)))
            if stop is not None and stop.is_set() and i + 1 < len(batches):
                interrupted = True
                break
    finally:
        close = getattr(results, "close", None)
        if close is not None:
            close()
        producer.close()
    if not interrupted:
        interrupted = backfill_metadata(catalog, plan, threads, stop)
    if not interrupted:
        interrupted = backfill_keywords(catalog, plan, threads, stop)
    if not interrupted:
        committer.finish()
    c = committer.counts
    return IndexSummary(
        scanned=len(entries), indexed=c.indexed, unchanged=plan.unchanged, failed=len(c.failures),
        seconds=time.perf_counter() - t0, failures=tuple(c.failures), new=c.new, modified=c.modified,
        touched=c.touched, moved=c.moved, duplicates=c.duplicates, deleted=c.deleted, interrupted=interrupted,
    )
