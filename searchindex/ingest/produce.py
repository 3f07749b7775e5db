"""Produce: read, hash, decode and encode the planned files; the step an execution engine can replace.

A :class:`Producer` takes the run's batches of files and yields, batch by
batch and in order, one result per file: a :class:`Produced` (its content's
SHA-256, metadata, keywords and, for content not indexed yet, its embedding)
or a :class:`~searchindex.results.FailureRecord`.  Planning before it and
committing after it stay in the driver process (SQLite has one writer), so an
engine that runs elsewhere (a Ray Data pipeline of actors, each loading the
model once) implements only this:

    class MyEngine:
        def produce(self, batches, known):
            for batch in batches:
                yield [encode_somehow(entry, known) for entry in batch]
        def close(self): ...

``known`` holds the SHA-256 of every content already indexed: such files need
no decoding (their embedding is copied), and the engine should return them with
``vector=None``.  Failures are values, never exceptions: a file that cannot be
read or decoded must not stop the run.  The driver may stop iterating early (an
interrupted run); :meth:`Producer.close` is then called to cancel work in flight.

:class:`LocalProducer` is the engine of a single machine: worker processes (or
threads, for small runs) read, hash, decode and do the geometric part of the
model's preprocessing one batch ahead of the encoder, which runs in this process.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Callable, Iterator, Sequence, Set
from concurrent.futures import BrokenExecutor, Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, Protocol, Union

import numpy as np

from ..defaults import DEFAULT_MAX_MEGAPIXELS
from ..errors import ImageDecodeError
from ..fileio import DEFAULT_MAX_FILE_BYTES, FileTooLargeError, NotRegularFileError, read_bounded
from ..models.encoders import Encoder
from ..models.images import check_megapixels, decode_image
from ..models.pixels import PixelSpec, to_pixels
from ..models.video import Sampling
from ..results import FailureRecord
from ..store.catalog.records import PhotoMetadata, VideoFrames
from .keywords import read_texts, sidecar_signature
from .metadata import read_metadata
from .scan import FileEntry
from .videos import VideoPixels, encode_video, is_video, read_video
from .workerpool import worker_pool

__all__ = ["PROCESS_MIN_FILES", "LocalProducer", "Produced", "Producer", "ReadFile", "Result", "default_workers",
           "read_file"]

log = logging.getLogger(__name__)

# Below this many files to decode, threads (no start-up cost) beat worker processes.
PROCESS_MIN_FILES = 256


@dataclass(frozen=True)
class Produced:
    """One file read (and, if its content is new, encoded)."""

    entry: FileEntry
    sha256: str
    meta: PhotoMetadata
    texts: list[tuple[str, str]]  # (source, text) people wrote: see searchindex.ingest.keywords
    sidecars: str  # the sidecars' signature when they were read
    vector: np.ndarray | None = None  # unit embedding; None: content already known, not decoded
    width: int = 0
    height: int = 0
    format: str = ""
    video: VideoFrames | None = None  # a video's kept frames (its vector is their mean)


#: What a producer yields for one file.
Result = Union[Produced, FailureRecord]  # noqa: UP007 (a runtime alias)


class Producer(Protocol):
    """The produce step of an indexing run (see the module docstring)."""

    def produce(self, batches: Sequence[Sequence[FileEntry]], known: Set[str]) -> Iterator[list[Result]]:
        """For each of ``batches`` in order: one result per file, in the batch's order."""
        ...

    def close(self) -> None:
        """Release workers; cancel what is in flight when the driver stopped early."""
        ...


@dataclass
class ReadFile:
    """What :func:`read_file` makes of one file: read and hashed, and decoded to model input
    (``pixels``) when its content is new; an engine encodes ``pixels`` into ``produced.vector``."""

    produced: Produced
    pixels: Any = None  # uint8 HWC array (with a PixelSpec) or the model's input tensor
    video: VideoPixels | None = None  # a new video's sampled frames (then ``pixels`` is None)


def default_workers() -> int:
    """Decode workers: one per CPU, at most 8."""
    return max(1, min(8, os.cpu_count() or 1))


@dataclass(frozen=True)
class ReadLimits:
    """What one file may cost: its size on disk and its pixel count."""

    max_megapixels: float = DEFAULT_MAX_MEGAPIXELS
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES

    def __post_init__(self) -> None:
        check_megapixels(self.max_megapixels)
        if self.max_file_bytes < 1:
            raise ValueError(f"the file size limit must be positive, not {self.max_file_bytes}")


def read_file(entry: FileEntry, known: Set[str], prepare: PixelSpec | Encoder,
              limits: ReadLimits) -> ReadFile | FailureRecord:
    """Read and hash one file; decode and preprocess it only if its content is new.

    ``prepare`` is a :class:`PixelSpec` (pixels as ``uint8`` arrays, what worker
    processes do) or, for models whose preprocessing only open_clip knows, the
    encoder itself (its tensor, in a thread of the encoder's process).  Never
    raises: whatever goes wrong with this one file becomes its failure record.
    """
    try:
        return _read_one(entry, known, prepare, limits)
    except MemoryError:
        return FailureRecord(entry.path, entry.size, entry.mtime_ns, "out of memory while reading this file")
    except Exception as exc:  # a reader or decoder bug must not stop a 200k-photo run
        log.exception("unexpected error reading %s", entry.path)
        return FailureRecord(entry.path, entry.size, entry.mtime_ns, f"read error: {type(exc).__name__}: {exc}")


def _read_one(entry: FileEntry, known: Set[str], prepare: PixelSpec | Encoder,
              limits: ReadLimits) -> ReadFile | FailureRecord:
    def fail(reason: str) -> FailureRecord:
        return FailureRecord(entry.path, entry.size, entry.mtime_ns, reason)

    if is_video(entry.path) and not os.path.isdir(entry.path):
        fields, video = read_video(entry, known, prepare)
        if isinstance(fields, FailureRecord):
            return fields
        return ReadFile(Produced(entry, **fields), video=video)
    try:
        if os.path.isdir(entry.path):
            return fail("a directory named like an image (its contents are scanned as a folder)")
        # Regular files only (a FIFO would block forever, /dev/zero never ends), of bounded size.
        data, sha = read_bounded(entry.path, limits.max_file_bytes, digest=True)
    except (NotRegularFileError, FileTooLargeError) as exc:
        return fail(exc.strerror or str(exc))
    except FileNotFoundError:
        if os.path.islink(entry.path):
            return fail(f"broken symbolic link (to {os.readlink(entry.path)})")
        return fail("file not found (deleted since the scan)")
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return fail("symbolic link loop")
        return fail(f"unreadable: {exc.strerror or exc}")
    assert sha is not None
    meta = read_metadata(data, entry.mtime_ns)
    # Signature first: a sidecar edited while it is being read is read again next run.
    sidecars = sidecar_signature(entry.path)
    texts = read_texts(entry.path, data)
    produced = Produced(entry, sha, meta, texts, sidecars)
    if sha in known:
        return ReadFile(produced)
    try:
        min_side = prepare.min_side if isinstance(prepare, PixelSpec) else prepare.image_size
        decoded = decode_image(data, entry.path, max_megapixels=limits.max_megapixels, min_side=min_side)
        del data  # the pixels are what is needed from here on
        if isinstance(prepare, PixelSpec):
            pixels = to_pixels(decoded.image, prepare)
        else:
            pixels = prepare.preprocess(decoded.image)
    except ImageDecodeError as exc:
        return fail(exc.reason)
    except Exception as exc:  # a decoder bug must not stop a 200k-photo run
        log.exception("unexpected error decoding %s", entry.path)
        return fail(f"decode error: {type(exc).__name__}: {exc}")
    return ReadFile(replace(produced, width=decoded.width, height=decoded.height, format=decoded.format), pixels)


_worker_known: Set[str] = frozenset()


def _worker_init(known: Set[str]) -> None:
    global _worker_known
    _worker_known = known


def _read_in_worker(entry: FileEntry, spec: PixelSpec, limits: ReadLimits) -> ReadFile | FailureRecord:
    return read_file(entry, _worker_known, spec, limits)


class LocalProducer:
    """Decode in a local pool one batch ahead of the encoder, which runs in this process.

    Args:
        get_encoder: loads the model; called once, and only if there are files to read.
        workers: decode processes (default :func:`default_workers`); 0 decodes in
            threads of this process.  Runs of fewer than :data:`PROCESS_MIN_FILES`
            files, and models whose preprocessing only open_clip knows, use threads.
        max_megapixels: larger images are failures (decompression bombs).
    """

    def __init__(self, get_encoder: Callable[[], Encoder], *, workers: int | None = None,
                 max_megapixels: float = DEFAULT_MAX_MEGAPIXELS,
                 max_file_bytes: int = DEFAULT_MAX_FILE_BYTES) -> None:
        self._get_encoder = get_encoder
        self.workers = default_workers() if workers is None else workers
        self.limits = ReadLimits(max_megapixels, max_file_bytes)
        self._pools: list[Executor] = []

    def produce(self, batches: Sequence[Sequence[FileEntry]], known: Set[str]) -> Iterator[list[Result]]:
        if not batches:
            return
        # The model is needed to know its input (and to encode): load it once there is work.
        encoder = self._get_encoder()
        spec = encoder.pixel_spec
        seen = set(known)  # content encoded by this run joins it: later copies are only hashed
        total = sum(len(b) for b in batches)
        limits = self.limits
        prepare: PixelSpec | Encoder = spec or encoder
        n_threads = max(1, self.workers or default_workers())
        pool: Executor
        if self.workers > 0 and spec is not None and total >= PROCESS_MIN_FILES:
            # Forked workers that die with this process and re-run no main script (see workerpool).
            pool = worker_pool(self.workers, _worker_init, (frozenset(seen),))
        else:
            pool = ThreadPoolExecutor(max_workers=n_threads, thread_name_prefix="decode")

        def submit(pool: Executor, batch: Sequence[FileEntry]) -> list[Future[Any]]:
            if isinstance(pool, ThreadPoolExecutor):
                return [pool.submit(read_file, e, seen, prepare, limits) for e in batch]
            assert spec is not None  # worker processes are used only with a PixelSpec
            return [pool.submit(_read_in_worker, e, spec, limits) for e in batch]

        def collect(futures: list[Future[Any]], batch: Sequence[FileEntry]) -> list[Any]:
            out = []
            for f, e in zip(futures, batch, strict=True):
                try:
                    out.append(f.result())
                except BrokenExecutor:
                    raise
                except Exception as exc:  # e.g. a result that cannot be sent back from a worker
                    out.append(FailureRecord(e.path, e.size, e.mtime_ns, f"read error: {type(exc).__name__}: {exc}"))
            return out

        self._pools.append(pool)
        try:
            ahead = submit(pool, batches[0])
            encoder.load()  # a prepared tower's session is made while the first batch decodes
            for i in range(len(batches)):
                try:
                    read = collect(ahead, batches[i])
                except BrokenExecutor:
                    # A worker was killed (the OOM killer, a signal): go on in threads rather than lose the run.
                    log.warning("a decode worker process died; decoding the rest of this run in threads")
                    pool.shutdown(wait=False, cancel_futures=True)
                    self._pools.remove(pool)
                    pool = ThreadPoolExecutor(max_workers=n_threads, thread_name_prefix="decode")
                    self._pools.append(pool)
                    read = collect(submit(pool, batches[i]), batches[i])
                ahead = submit(pool, batches[i + 1]) if i + 1 < len(batches) else []
                yield self._encode(encoder, read, seen)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            if pool in self._pools:
                self._pools.remove(pool)

    def _encode(self, encoder: Encoder, read: list[ReadFile | FailureRecord], seen: set[str]) -> list[Result]:
        """Encode the batch's new contents (each distinct content once)."""
        firsts: dict[str, ReadFile] = {}
        for r in read:
            if isinstance(r, ReadFile) and r.pixels is not None:
                firsts.setdefault(r.produced.sha256, r)
        vectors: dict[str, np.ndarray] = {}
        if firsts:
            inputs = [r.pixels for r in firsts.values()]
            encoded = encoder.encode_pixels(inputs) if encoder.pixel_spec is not None else encoder.encode_batch(inputs)
            encoder.images_encoded += len(inputs)
            vectors = dict(zip(firsts, encoded, strict=True))
            if not seen:
                log.debug("first images encoded (%d)", len(firsts))  # scripts/bench_peers.py times this
            seen.update(firsts)
        out: list[Result] = []
        for r in read:
            if isinstance(r, FailureRecord):
                out.append(r)
            elif r.video is not None:
                out.append(self._encode_video(encoder, r, seen))
            elif r.pixels is not None and firsts.get(r.produced.sha256) is r:
                out.append(replace(r.produced, vector=vectors[r.produced.sha256]))
            else:  # known content, or a second copy within the batch: no vector (the commit copies one)
                out.append(r.produced)
        return out

    @staticmethod
    def _encode_video(encoder: Encoder, r: ReadFile, seen: set[str]) -> Result:
        """A video's vector and kept frames (each content once per run: a second copy is copied)."""
        assert r.video is not None
        e = r.produced.entry
        if r.produced.sha256 in seen:
            return r.produced
        try:
            vector, frames = encode_video(encoder, r.video, Sampling().similarity)
        except Exception as exc:  # an encoder failure on one video must not stop the run
            log.exception("unexpected error encoding the frames of %s", e.path)
            return FailureRecord(e.path, e.size, e.mtime_ns, f"encode error: {type(exc).__name__}: {exc}")
        seen.add(r.produced.sha256)
        return replace(r.produced, vector=vector, video=frames)

    def close(self) -> None:
        while self._pools:
            self._pools.pop().shutdown(wait=True, cancel_futures=True)
