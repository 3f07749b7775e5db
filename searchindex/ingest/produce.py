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
import hashlib
import logging
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable, Iterator, Sequence, Set
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, Protocol, Union

import numpy as np

from ..defaults import DEFAULT_MAX_MEGAPIXELS
from ..errors import ImageDecodeError
from ..models.encoders import Encoder
from ..models.images import decode_image
from ..models.pixels import PixelSpec, to_pixels
from ..store.records import FailureRecord, PhotoMetadata
from .keywords import read_texts, sidecar_signature
from .metadata import read_metadata
from .scan import FileEntry

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


def default_workers() -> int:
    """Decode workers: one per CPU, at most 8."""
    return max(1, min(8, os.cpu_count() or 1))


def read_file(entry: FileEntry, known: Set[str], prepare: PixelSpec | Encoder,
              max_megapixels: float) -> ReadFile | FailureRecord:
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
    produced = Produced(entry, sha, meta, texts, sidecars)
    if sha in known:
        return ReadFile(produced)
    try:
        min_side = prepare.min_side if isinstance(prepare, PixelSpec) else prepare.image_size
        decoded = decode_image(data, entry.path, max_megapixels=max_megapixels, min_side=min_side)
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
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle


def _read_in_worker(entry: FileEntry, spec: PixelSpec, max_megapixels: float) -> ReadFile | FailureRecord:
    return read_file(entry, _worker_known, spec, max_megapixels)


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
                 max_megapixels: float = DEFAULT_MAX_MEGAPIXELS) -> None:
        self._get_encoder = get_encoder
        self.workers = default_workers() if workers is None else workers
        self.max_megapixels = max_megapixels
        self._pools: list[Executor] = []

    def produce(self, batches: Sequence[Sequence[FileEntry]], known: Set[str]) -> Iterator[list[Result]]:
        if not batches:
            return
        # The model is needed to know its input (and to encode): load it once there is work.
        encoder = self._get_encoder()
        spec = encoder.pixel_spec
        seen = set(known)  # content encoded by this run joins it: later copies are only hashed
        total = sum(len(b) for b in batches)
        submit: Callable[[Executor, Sequence[FileEntry]], list[Future[Any]]]
        if self.workers > 0 and spec is not None and total >= PROCESS_MIN_FILES:
            method = "forkserver" if sys.platform.startswith("linux") else "spawn"
            pool: Executor = ProcessPoolExecutor(max_workers=self.workers,
                                                 mp_context=multiprocessing.get_context(method),
                                                 initializer=_worker_init, initargs=(frozenset(seen),))

            def submit(pool: Executor, batch: Sequence[FileEntry]) -> list[Future[Any]]:
                return [pool.submit(_read_in_worker, e, spec, self.max_megapixels) for e in batch]
        else:
            pool = ThreadPoolExecutor(max_workers=max(1, self.workers or default_workers()),
                                      thread_name_prefix="decode")
            prepare: PixelSpec | Encoder = spec or encoder

            def submit(pool: Executor, batch: Sequence[FileEntry]) -> list[Future[Any]]:
                return [pool.submit(read_file, e, seen, prepare, self.max_megapixels) for e in batch]

        self._pools.append(pool)
        try:
            ahead = submit(pool, batches[0])
            for i in range(len(batches)):
                read = [f.result() for f in ahead]
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
            vectors = dict(zip(firsts, encoded, strict=True))
            if not seen:
                log.debug("first images encoded (%d)", len(firsts))  # scripts/bench_peers.py times this
            seen.update(firsts)
        out: list[Result] = []
        for r in read:
            if isinstance(r, FailureRecord):
                out.append(r)
            elif r.pixels is not None and firsts.get(r.produced.sha256) is r:
                out.append(replace(r.produced, vector=vectors[r.produced.sha256]))
            else:  # known content, or a second copy within the batch: no vector (the commit copies one)
                out.append(r.produced)
        return out

    def close(self) -> None:
        while self._pools:
            self._pools.pop().shutdown(wait=True, cancel_futures=True)
