"""The facade's text-in-photos methods: :meth:`ocr`, :meth:`text_lines`, :meth:`ocr_counts`."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from .state import IndexState

if TYPE_CHECKING:
    from ..models.ocr import OcrEngine
    from ..results import OcrProgress, OcrSummary, TextLine

__all__ = ["Reading"]


class Reading(IndexState):
    """:meth:`ocr`, :meth:`forget_ocr`, :meth:`text_lines` and :meth:`ocr_counts` of
    :class:`~searchindex.index.Index`."""

    def ocr(self, langs: str | Sequence[str] | None = None, *, engine: OcrEngine | None = None,
            batch_size: int = 8, progress: Callable[[OcrProgress], None] | None = None,
            stop: threading.Event | None = None, threads: int | None = None,
            precision: str = "auto") -> OcrSummary:
        """Read the text in every indexed image not read yet (signs, screenshots, receipts, pages),
        offline, and make it searchable: keyword and hybrid search then find an image by a word
        written in it.  Each batch is committed at once, so an interrupted run resumes.

        ``langs``: ``"en"``, ``"ko"`` or both (``"ko,en"``, the default); ``engine``: a loaded
        :class:`~searchindex.models.ocr.OcrEngine` (``langs`` and ``threads`` are then its own).
        The languages are recorded: a watch (:meth:`watch`) reads the images it adds in them.
        ``precision``: the text detector's, ``auto`` (int8 on x86 CPUs, prepared and checked once per
        machine), ``int8`` or ``fp32``.

        Raises:
            MissingExtraError (``searchindex[ocr]``), ModelError (Tesseract's Korean data missing),
            ValueError (an unknown language or precision), IndexLockedError, IndexWriteError.
        """
        from ..enrich.ocr import ocr_catalog
        from ..models.ocr import OcrEngine, parse_languages
        from ..models.ocrint8 import DET_PRECISIONS
        from .following import record_ocr_choice

        codes = engine.langs if engine is not None else parse_languages(langs)  # a bad language fails here
        if precision not in DET_PRECISIONS:
            raise ValueError(f"unknown text detector precision {precision!r}: choose from {', '.join(DET_PRECISIONS)}")

        def load() -> OcrEngine:
            return engine if engine is not None else OcrEngine(codes, threads=threads, precision=precision)

        with self._writing():
            summary = ocr_catalog(self.catalog, load, batch_size=batch_size, progress=progress, stop=stop)
            # Recorded once the run went (a reader that cannot load is not chosen): a watch reads
            # new images in these languages.
            record_ocr_choice(self.catalog, codes)
            return summary

    def forget_ocr(self) -> int:
        """Forget all text read in photos (the next :meth:`ocr` reads every image again; a watch no
        longer reads the images it adds); returns how many images had been read."""
        from .following import record_ocr_choice

        with self._writing():
            record_ocr_choice(self.catalog, None)
            return self.catalog.ocr.forget()

    def text_lines(self, image_id: int) -> list[TextLine]:
        """The lines of text read in one image, top to bottom, with their boxes (empty when none
        was found or the image was not read yet)."""
        return self.catalog.read.ocr_lines([int(image_id)]).get(int(image_id), [])

    def ocr_counts(self) -> dict[str, int]:
        """``read`` (images whose text was read), ``with_text`` (with at least one line), ``lines``."""
        return self.catalog.read.ocr_counts()
