"""The indexing pipeline: scan -> decode -> encode -> commit, batch by batch.

Decoding (file read, SHA-256, Pillow decode, the model's preprocessing) runs in a
thread pool one batch ahead of the encoder, so the two overlap.  Each batch is
committed in one catalog transaction: an interruption loses at most the batch
in flight, and the next run picks up where this one stopped because committed
files are then unchanged.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from .catalog import Catalog, FailureRecord, NewImage
from .encoders import Encoder
from .errors import ImageDecodeError
from .images import DEFAULT_MAX_MEGAPIXELS, decode_image
from .scan import FileEntry

__all__ = ["IndexProgress", "IndexSummary", "ProgressCallback", "run_batches"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IndexProgress:
    """Reported after each committed batch."""

    done: int  # files processed so far in this run (indexed + failed)
    total: int  # files this run has to process
    indexed: int
    failed: int


ProgressCallback = Callable[[IndexProgress], None]


@dataclass(frozen=True)
class IndexSummary:
    """What one ``add_folder`` run did."""

    scanned: int  # image files found
    indexed: int  # new or changed files encoded and stored
    unchanged: int  # skipped: same path, size and mtime as last time (failures included)
    failed: int  # files that could not be decoded in this run
    seconds: float
    failures: tuple[FailureRecord, ...] = ()


@dataclass
class _Decoded:
    entry: FileEntry
    sha256: str
    width: int
    height: int
    format: str
    tensor: Any


def _load(entry: FileEntry, preprocess: Callable[[Any], Any], min_side: int,
          max_megapixels: float) -> _Decoded | FailureRecord:
    """Read, hash, decode and preprocess one file; failures become records."""
    try:
        with open(entry.path, "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        return FailureRecord(entry.path, entry.size, entry.mtime_ns, "file not found (deleted or broken link)")
    except IsADirectoryError:
        return FailureRecord(entry.path, entry.size, entry.mtime_ns, "is a directory")
    except OSError as exc:
        return FailureRecord(entry.path, entry.size, entry.mtime_ns, f"unreadable: {exc.strerror or exc}")
    try:
        decoded = decode_image(data, entry.path, max_megapixels=max_megapixels, min_side=min_side)
        tensor = preprocess(decoded.image)
    except ImageDecodeError as exc:
        return FailureRecord(entry.path, entry.size, entry.mtime_ns, exc.reason)
    except Exception as exc:  # a decoder bug must not stop a 200k-photo run
        log.exception("unexpected error decoding %s", entry.path)
        return FailureRecord(entry.path, entry.size, entry.mtime_ns, f"decode error: {type(exc).__name__}: {exc}")
    return _Decoded(entry, hashlib.sha256(data).hexdigest(), decoded.width, decoded.height,
                    decoded.format, tensor)


def run_batches(
    catalog: Catalog,
    encoder: Encoder,
    todo: Sequence[FileEntry],
    *,
    batch_size: int = 64,
    workers: int | None = None,
    max_megapixels: float = DEFAULT_MAX_MEGAPIXELS,
    progress: ProgressCallback | None = None,
    on_commit: Callable[[int], None] | None = None,
) -> tuple[int, list[FailureRecord]]:
    """Decode, encode and commit ``todo``; return (indexed count, failures).

    Args:
        on_commit: called with the new catalog generation after each batch.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    workers = workers or min(8, os.cpu_count() or 1)
    batches = [todo[i:i + batch_size] for i in range(0, len(todo), batch_size)]
    indexed = 0
    failures: list[FailureRecord] = []

    def submit(pool: ThreadPoolExecutor, batch: Sequence[FileEntry]) -> list[Future[_Decoded | FailureRecord]]:
        return [pool.submit(_load, e, encoder.preprocess, encoder.image_size, max_megapixels) for e in batch]

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode") as pool:
        ahead = submit(pool, batches[0]) if batches else []
        for i in range(len(batches)):
            current = ahead
            results = [f.result() for f in current]
            # Start decoding the next batch while this one is encoded.
            ahead = submit(pool, batches[i + 1]) if i + 1 < len(batches) else []
            ok = [r for r in results if isinstance(r, _Decoded)]
            bad = [r for r in results if isinstance(r, FailureRecord)]
            vectors = encoder.encode_batch([r.tensor for r in ok]) if ok else []
            rows = [
                NewImage(r.entry.path, r.entry.size, r.entry.mtime_ns, r.sha256, r.width, r.height, r.format, v)
                for r, v in zip(ok, vectors, strict=False)
            ]
            generation = catalog.commit_batch(rows, bad)
            indexed += len(rows)
            failures.extend(bad)
            for f in bad:
                log.info("skipped %s: %s", f.path, f.reason)
            if on_commit:
                on_commit(generation)
            if progress:
                progress(IndexProgress(indexed + len(failures), len(todo), indexed, len(failures)))
    return indexed, failures

