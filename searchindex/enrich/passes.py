"""What the incremental enrichment passes (captions, text in photos, faces) share: the batches of
the work left, cut short between two batches when asked to stop, and the reason a file that
could not be used is given in the summary."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from typing import Generic, TypeVar

from ..errors import ImageDecodeError

__all__ = ["Batches", "unreadable"]

T = TypeVar("T")


class Batches(Generic[T]):
    """The batches of ``todo``, ``size`` at a time, as ``(done, batch)``: ``done`` counts the
    items up to the end of this batch.  When ``stop`` is set before a batch, iteration ends and
    :attr:`interrupted` is true (each batch is committed before the next starts, so the next
    run resumes where this one stopped)."""

    def __init__(self, todo: Sequence[T], size: int, stop: threading.Event | None = None) -> None:
        if size < 1:
            raise ValueError("batch_size must be at least 1")
        self.todo, self.size, self.stop = todo, size, stop
        self.interrupted = False

    def __iter__(self) -> Iterator[tuple[int, Sequence[T]]]:
        for start in range(0, len(self.todo), self.size):
            if self.stop is not None and self.stop.is_set():
                self.interrupted = True
                return
            yield min(start + self.size, len(self.todo)), self.todo[start:start + self.size]


def unreadable(exc: ImageDecodeError | OSError) -> str:
    """Why a file could not be used, in the words a run's summary gives."""
    if isinstance(exc, ImageDecodeError):
        return exc.reason
    return f"cannot read: {exc.strerror or exc}"
