"""The indexing pipeline: scan -> classify -> decode -> encode -> commit, batch by batch.

Every file found is classified against the catalog:

- unchanged: same path, size and mtime as last time (also for files that failed before);
- new / modified: content not seen before: decoded and encoded;
- touched: stat changed, content (SHA-256) the same: only the stat is updated;
- moved: content already indexed at a path that has disappeared: the row follows the file;
- duplicate: content already indexed at another existing path: the embedding is copied;
- deleted: indexed below a scanned folder but no longer there: row and vector removed.

Reading, hashing, decoding (JPEGs at reduced size through Pillow's draft mode) and
the geometric part of the model's preprocessing run in worker processes one batch
ahead of the encoder, so they overlap with encoding and do not compete for the GIL;
small runs use threads instead, which start instantly.  Each batch is committed in one catalog
transaction: an interruption loses at most the batch in flight, and the next run
resumes because committed files are then unchanged.  The model is loaded only when
some file actually needs encoding.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import multiprocessing
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .catalog import Catalog, FailureRecord, NewImage
from .encoders import Encoder
from .errors import ImageDecodeError
from .images import DEFAULT_MAX_MEGAPIXELS, decode_image
from .keywords import read_texts, sidecar_signature
from .metadata import PhotoMetadata, read_metadata
from .pixels import PixelSpec, to_pixels
from .scan import FileEntry

__all__ = ["IndexProgress", "IndexSummary", "ProgressCallback", "index_entries"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IndexProgress:
    """Reported after each committed batch."""

    done: int  # files processed so far in this run
    total: int  # files this run has to process (everything but the unchanged)
    indexed: int
    failed: int


ProgressCallback = Callable[[IndexProgress], None]


@dataclass(frozen=True)
class IndexSummary:
    """What one ``add_folder`` run did."""

    scanned: int  # image files found
    indexed: int  # files decoded and encoded (new + modified content)
    unchanged: int  # same path, size and mtime as last time (earlier failures included)
    failed: int  # files that could not be decoded in this run
    seconds: float
    failures: tuple[FailureRecord, ...] = ()
    new: int = 0  # paths not in the index before, encoded or duplicated (moves counted apart)
    modified: int = 0  # indexed paths whose content changed
    touched: int = 0  # indexed paths whose mtime/size changed but content did not
    moved: int = 0  # rows that followed their content to a new path
    duplicates: int = 0  # new paths whose content was already indexed elsewhere (not re-encoded)
    deleted: int = 0  # rows removed because their file is gone
    interrupted: bool = False  # stopped early on request; run again to resume


@dataclass
class _Counts:
    indexed: int = 0
    new: int = 0
    modified: int = 0
    touched: int = 0
    moved: int = 0
    duplicates: int = 0
    deleted: int = 0
    failures: list[FailureRecord] = field(default_factory=list)


@dataclass
class _Hashed:
    """A file whose content is already in the index: no decode needed."""

    entry: FileEntry
    sha256: str
    meta: PhotoMetadata
    texts: list[tuple[str, str]]  # (source, text) people wrote: see searchindex.keywords
    sidecars: str  # the sidecars' signature when they were read


@dataclass
class _Decoded:
    entry: FileEntry
    sha256: str
    meta: PhotoMetadata
    texts: list[tuple[str, str]]
    sidecars: str
    width: int
    height: int
    format: str
    pixels: Any  # uint8 HWC array (with a PixelSpec) or the model's input tensor


# Below this many files to decode, threads (no start-up cost) beat worker processes.
PROCESS_MIN_FILES = 256
_worker_known: set[str] = set()


def _worker_init(known: set[str]) -> None:
    global _worker_known
    _worker_known = known
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle


def _load_in_worker(entry: FileEntry, spec: PixelSpec, max_megapixels: float) -> _Hashed | _Decoded | FailureRecord:
    return _load(entry, _worker_known, spec, max_megapixels)


def default_workers() -> int:
    """Decode workers: one per CPU, at most 8."""
    return max(1, min(8, os.cpu_count() or 1))


def _load(entry: FileEntry, known: set[str], prepare: PixelSpec | Encoder,
          max_megapixels: float) -> _Hashed | _Decoded | FailureRecord:
    """Read and hash one file; decode and preprocess it only if its content is new.

    ``prepare`` is a :class:`PixelSpec` (pixels as ``uint8`` arrays, what worker
    processes do) or, for models whose preprocessing only open_clip knows, the
    encoder itself (its tensor, in a thread of the encoder's process).
    """
    def fail(reason: str) -> FailureRecord:
        return FailureRecord(entry.path, entry.size, entry.mtime_ns, reason)

    try:
        if os.path.isdir(entry.path):
            return fail("a directory named like an image (its contents are scanned as a folder)")
        with open(entry.path, "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        if os.path.islink(entry.path):
            return fail(f"broken symbolic link (to {os.readlink(entry.path)})")
        return fail("file not found (deleted since the scan)")
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return fail("symbolic link loop")
        return fail(f"unreadable: {exc.strerror or exc}")
    sha = hashlib.sha256(data).hexdigest()
    meta = read_metadata(data, entry.mtime_ns)
    # Signature first: a sidecar edited while it is being read is read again next run.
    sidecars = sidecar_signature(entry.path)
    texts = read_texts(entry.path, data)
    if sha in known:
        return _Hashed(entry, sha, meta, texts, sidecars)
    try:
        min_side = prepare.min_side if isinstance(prepare, PixelSpec) else prepare.image_size
        decoded = decode_image(data, entry.path, max_megapixels=max_megapixels, min_side=min_side)
        if isinstance(prepare, PixelSpec):
            pixels = to_pixels(decoded.image, prepare)
        else:
            pixels = prepare.preprocess(decoded.image)
    except ImageDecodeError as exc:
        return FailureRecord(entry.path, entry.size, entry.mtime_ns, exc.reason)
    except Exception as exc:  # a decoder bug must not stop a 200k-photo run
        log.exception("unexpected error decoding %s", entry.path)
        return FailureRecord(entry.path, entry.size, entry.mtime_ns, f"decode error: {type(exc).__name__}: {exc}")
    return _Decoded(entry, sha, meta, texts, sidecars, decoded.width, decoded.height, decoded.format, pixels)


def _listing(cache: dict[str, frozenset[str]], path: str) -> frozenset[str]:
    """The names in ``path``'s folder, listed once per run (sidecar lookups then cost no stat)."""
    folder = os.path.dirname(path)
    names = cache.get(folder)
    if names is None:
        try:
            names = frozenset(os.listdir(folder))
        except OSError:
            names = frozenset()
        cache[folder] = names
    return names


def _store_texts(catalog: Catalog, texts: dict[str, tuple[list[tuple[str, str]], str]], failed: set[str]) -> None:
    """Store the keywords read in a batch, for the rows it committed (ids are known only now).

    A crash before this leaves rows without a text state: the next run reads their texts again.
    """
    paths = [p for p in texts if p not in failed]
    ids = catalog.image_ids_by_path(paths) if paths else {}
    if not ids:
        return
    catalog.store_texts({ids[p]: texts[p][0] for p in paths if p in ids})
    catalog.store_text_states({ids[p]: texts[p][1] for p in paths if p in ids})


def _under(path: str, roots: Sequence[str]) -> bool:
    return any(path.startswith(root.rstrip(os.sep) + os.sep) for root in roots)


#: Failure reasons whose cause can go away while the file's size and mtime stay the same
#: (permissions, I/O errors, an optional extra installed since): such files are tried
#: again every run.  Other failures (a corrupt file) are retried once the file changes;
#: broken links and loops have no size until they are fixed, which changes it.
RETRIED_FAILURES = ("unreadable:", "install the optional extra")


def _retried(reason: str) -> bool:
    return any(marker in reason for marker in RETRIED_FAILURES)


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
    progress: ProgressCallback | None = None,
    stop: threading.Event | None = None,
    skipped: Sequence[str] = (),
) -> tuple[_Counts, int, bool]:
    """Bring the catalog in line with ``entries`` found below ``roots``.

    ``workers``: decode processes (default :func:`default_workers`); 0 decodes in
    threads of this process.  ``skipped``: folders below ``roots`` the scan did not
    walk (see :func:`~searchindex.scan.scan_folders`); what is indexed below them
    is kept.  Returns (counts, unchanged, interrupted).
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    if workers is None:
        workers = default_workers()
    roots = [os.path.abspath(r) for r in roots]
    images = catalog.image_states()  # path -> (id, size, mtime_ns, sha256)
    failures = catalog.failure_states()
    # A failure that may have gone away is not "unchanged": it is tried again.
    failed_before = {p: state[:2] for p, state in failures.items() if not _retried(state[2])}
    seen = {e.path for e in entries}
    gone = {p for p in list(images) + list(failures)
            if p not in seen and _under(p, roots) and not _under(p, skipped)}
    by_sha: dict[str, list[int]] = {}
    id_path: dict[int, str] = {}
    for path, (image_id, _, _, sha) in images.items():
        by_sha.setdefault(sha, []).append(image_id)
        id_path[image_id] = path

    todo, unchanged = [], 0
    without_metadata = catalog.ids_without_metadata() if images else set()
    text_states = catalog.text_states() if images else {}
    listings: dict[str, frozenset[str]] = {}
    backfill: list[tuple[int, FileEntry]] = []
    reread: list[tuple[int, FileEntry, str]] = []  # id, file, sidecar signature now
    for e in entries:
        state = images.get(e.path)
        if (state and state[1:3] == (e.size, e.mtime_ns)) or failed_before.get(e.path) == (e.size, e.mtime_ns):
            unchanged += 1
            if state and state[0] in without_metadata:
                backfill.append((state[0], e))
            if state:
                # Sidecars change without the image changing: compare their stat signature.
                signature = sidecar_signature(e.path, _listing(listings, e.path))
                if text_states.get(state[0]) != signature:
                    reread.append((state[0], e, signature))
        else:
            todo.append(e)

    counts = _Counts()
    known = set(by_sha)
    run_vectors: dict[str, tuple[np.ndarray, int, int, str]] = {}  # sha -> vector, w, h, format (this run)
    batches = [todo[i:i + batch_size] for i in range(0, len(todo), batch_size)]
    interrupted = False

    # The model is needed to know its input (and to encode): load it once there is work.
    encoder = get_encoder() if todo else None
    spec = encoder.pixel_spec if encoder is not None else None
    prepare: PixelSpec | Encoder | None = spec or encoder
    pool: Executor
    if workers > 0 and spec is not None and len(todo) >= PROCESS_MIN_FILES:
        method = "forkserver" if sys.platform.startswith("linux") else "spawn"
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context(method),
                                   initializer=_worker_init, initargs=(known,))

        def submit(pool: Executor, batch: Sequence[FileEntry]) -> list[Future[Any]]:
            return [pool.submit(_load_in_worker, e, spec, max_megapixels) for e in batch]
    else:
        pool = ThreadPoolExecutor(max_workers=max(1, workers or default_workers()), thread_name_prefix="decode")

        def submit(pool: Executor, batch: Sequence[FileEntry]) -> list[Future[Any]]:
            return [pool.submit(_load, e, known, prepare, max_megapixels) for e in batch]

    def source_for(sha: str) -> int | None:
        ids = by_sha.get(sha) or []
        return ids[0] if ids else None

    with pool:
        ahead = submit(pool, batches[0]) if batches else []
        for i in range(len(batches)):
            results = [f.result() for f in ahead]
            ahead = submit(pool, batches[i + 1]) if i + 1 < len(batches) else []
            rows: list[NewImage] = []
            touched: list[tuple[int, int, int]] = []
            moved: list[tuple[int, str, int, int]] = []
            metadata: list[tuple[int, PhotoMetadata]] = []
            texts: dict[str, tuple[list[tuple[str, str]], str]] = {}  # path -> texts, sidecar signature
            bad: list[FailureRecord] = []
            to_encode: list[_Decoded] = []
            copies: list[tuple[FileEntry, str, int, PhotoMetadata]] = []  # entry, sha, source id, metadata
            for r in results:
                if isinstance(r, FailureRecord):
                    bad.append(r)
                    continue
                e = r.entry
                texts[e.path] = (r.texts, r.sidecars)
                state = images.get(e.path)
                if state and state[3] == r.sha256:
                    touched.append((state[0], e.size, e.mtime_ns))
                    metadata.append((state[0], r.meta))
                    counts.touched += 1
                    continue
                mover = None
                if state is None:
                    mover = next((j for j in by_sha.get(r.sha256, []) if id_path[j] in gone), None)
                if mover is not None:
                    gone.discard(id_path[mover])
                    moved.append((mover, e.path, e.size, e.mtime_ns))
                    metadata.append((mover, r.meta))
                    id_path[mover] = e.path
                    counts.moved += 1
                    continue
                src = source_for(r.sha256)
                if src is not None:
                    copies.append((e, r.sha256, src, r.meta))
                elif r.sha256 in run_vectors or any(d.sha256 == r.sha256 for d in to_encode):
                    copies.append((e, r.sha256, -1, r.meta))
                elif isinstance(r, _Decoded):
                    to_encode.append(r)
                else:  # content known when the batch was read, gone since: decode now
                    again = _load(e, set(), prepare, max_megapixels)  # type: ignore[arg-type]
                    if isinstance(again, _Decoded):
                        to_encode.append(again)
                    else:
                        bad.append(again)  # type: ignore[arg-type]
                        continue
                if state is None:
                    counts.new += 1
                else:
                    counts.modified += 1

            if to_encode:
                assert encoder is not None
                inputs = [d.pixels for d in to_encode]
                vectors = encoder.encode_pixels(inputs) if spec is not None else encoder.encode_batch(inputs)
                for d, v in zip(to_encode, vectors, strict=True):
                    run_vectors[d.sha256] = (v, d.width, d.height, d.format)
                    known.add(d.sha256)  # later copies of this content are hashed, not decoded
                    rows.append(NewImage(d.entry.path, d.entry.size, d.entry.mtime_ns, d.sha256, d.width,
                                         d.height, d.format, v, d.meta))
                if not counts.indexed:
                    log.debug("first images encoded (%d)", len(to_encode))  # scripts/bench_peers.py times this
                counts.indexed += len(to_encode)
            if copies:
                src_ids = [s for _, _, s, _ in copies if s >= 0]
                stored = catalog.embeddings_by_id(src_ids, dim)
                facts = catalog.images_by_id(src_ids)
                for e, sha, s, meta in copies:
                    if s >= 0:
                        vec, f = stored[s], facts[s]
                        w, h, fmt = f.width, f.height, f.format
                    else:
                        vec, w, h, fmt = run_vectors[sha]
                    rows.append(NewImage(e.path, e.size, e.mtime_ns, sha, w, h, fmt, vec, meta))
                    if images.get(e.path) is None:
                        counts.duplicates += 1
            catalog.commit_batch(rows, bad, touched=touched, moved=moved, metadata=metadata)
            _store_texts(catalog, texts, {f.path for f in bad})
            counts.failures.extend(bad)
            for f in bad:
                log.info("skipped %s: %s", f.path, f.reason)
            if progress:
                done = sum(len(b) for b in batches[: i + 1])
                progress(IndexProgress(done, len(todo), counts.indexed, len(counts.failures)))
            if stop is not None and stop.is_set() and i + 1 < len(batches):
                interrupted = True
                pool.shutdown(wait=True, cancel_futures=True)
                break

    # Rows indexed before photo metadata existed: read headers only, never re-encode.
    if backfill and not interrupted:
        with ThreadPoolExecutor(max_workers=max(1, workers or default_workers())) as threads:
            for start in range(0, len(backfill), 500):
                chunk = backfill[start:start + 500]
                metas = threads.map(lambda e: read_metadata(e.path, e.mtime_ns), [e for _, e in chunk])
                catalog.commit_batch(metadata=list(zip([i for i, _ in chunk], metas, strict=True)))
                if stop is not None and stop.is_set():
                    interrupted = True
                    break
        log.info("read photo metadata of %d previously indexed files", len(backfill))

    # Keywords of unchanged images: edited sidecars, and rows indexed before texts were read.
    if reread and not interrupted:
        with ThreadPoolExecutor(max_workers=max(1, workers or default_workers())) as threads:
            for start in range(0, len(reread), 500):
                chunk = reread[start:start + 500]
                found = threads.map(lambda r: read_texts(r[1].path, names=_listing(listings, r[1].path)), chunk)
                read = dict(zip([i for i, _, _ in chunk], found, strict=True))
                catalog.store_texts(read)
                catalog.store_text_states({i: signature for i, _, signature in chunk})
                if stop is not None and stop.is_set():
                    interrupted = True
                    break
        log.info("read keywords of %d unchanged files (new or edited sidecars, or never read)", len(reread))

    if gone and not interrupted:
        catalog.commit_batch(deleted=sorted(gone))
        counts.deleted = sum(1 for p in gone if p in images)
    return counts, unchanged, interrupted
