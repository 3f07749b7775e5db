"""Which enrichments an index uses, so that a watch brings them to the images it adds.

The rule: an index uses text in photos (OCR) once :meth:`~searchindex.index.Index.ocr` ran on
it (``searchindex ocr``, ``searchindex index --ocr``), and faces once
:meth:`~searchindex.index.Index.find_faces` ran (``searchindex faces``, ``index --faces``).
Each run records its choice in the catalog's ``meta`` (``ocr``: the languages; ``faces``: the
detector and the side it searches), and a watch reads new images with that same choice.
:meth:`~searchindex.index.Index.forget_ocr` takes the OCR choice back.  An index enriched before
choices were recorded, whose catalog has read text or searched faces but no choice, is followed
with the defaults (English and Korean; the ``hog`` detector).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import IndexLockedError, SearchIndexError
from ..store.catalog.database import Catalog
from ..store.info import face_counts

if TYPE_CHECKING:
    from ..models.captioners import Captioner
    from ..models.faces import FaceEngine
    from ..models.ocr import OcrEngine
    from ..results import IndexSummary
    from .watching import Watching

__all__ = ["FaceChoice", "Follower", "face_choice", "ocr_choice", "record_face_choice", "record_ocr_choice"]

log = logging.getLogger("searchindex.watch")

_OCR_KEY = "ocr"
_FACES_KEY = "faces"


@dataclass(frozen=True)
class FaceChoice:
    """How the faces of an index are searched: the detector and the side of the copy it searches."""

    detector: str = "hog"
    detect_side: int | None = None  # None: the engine's default


def _recorded(catalog: Catalog, key: str) -> Any:
    """The JSON value recorded under ``key`` (``None`` when absent, taken back or unreadable)."""
    raw = catalog.read.meta().get(key)
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


def record_ocr_choice(catalog: Catalog, langs: tuple[str, ...] | None) -> None:
    """Record the languages of an OCR run (``None``: the index no longer uses OCR); under the writer lock."""
    value = None if langs is None else {"langs": list(langs)}
    if _recorded(catalog, _OCR_KEY) != value:
        catalog.set_meta(**{_OCR_KEY: json.dumps(value)})


def record_face_choice(catalog: Catalog, choice: FaceChoice) -> None:
    """Record the detector of a face run; under the writer lock."""
    value = {"detector": choice.detector, "detect_side": choice.detect_side}
    if _recorded(catalog, _FACES_KEY) != value:
        catalog.set_meta(**{_FACES_KEY: json.dumps(value)})


def ocr_choice(catalog: Catalog) -> tuple[str, ...] | None:
    """The languages new images are read in, or ``None`` when the index does not use OCR."""
    raw = catalog.read.meta().get(_OCR_KEY)  # absent (never chosen) differs from taken back (null)
    value = _recorded(catalog, _OCR_KEY)
    if isinstance(value, dict) and isinstance(value.get("langs"), list):
        return tuple(str(c) for c in value["langs"])
    if raw is None and catalog.read.ocr_counts().get("read"):
        return ("en", "ko")  # read before choices were recorded: the reader's default
    return None


def face_choice(catalog: Catalog) -> FaceChoice | None:
    """How new images are searched for faces, or ``None`` when the index does not use faces."""
    value = _recorded(catalog, _FACES_KEY)
    if isinstance(value, dict) and isinstance(value.get("detector"), str):
        side = value.get("detect_side")
        return FaceChoice(value["detector"], int(side) if isinstance(side, int) else None)
    if value is None and face_counts(catalog):  # searched before choices were recorded
        return FaceChoice()
    return None


class Follower:
    """Brings the enrichments an index uses to the images a watch adds, after each batch.

    Each engine (captioner, OCR reader, face engine) loads once, at the first batch that needs
    it, and stays loaded for the watch; one that cannot load is reported once and left out.  A
    pass that finds the index locked by another writer stops: the next batch's pass catches up
    (each pass takes every image not enriched yet, not only the batch's).
    """

    def __init__(self, index: Watching, *, captions: bool = True, ocr: bool = True, faces: bool = True) -> None:
        self._index = index
        self._captions, self._ocr, self._faces = captions, ocr, faces
        self._captioners: dict[str, Captioner | None] = {}  # model id -> loaded (None: cannot load)
        self._readers: dict[tuple[str, ...], OcrEngine | None] = {}  # languages -> loaded
        self._face_engines: dict[FaceChoice, FaceEngine | None] = {}

    def follow(self, summary: IndexSummary) -> None:
        """Caption, read and search for faces what a batch (or catch-up scan) added or changed."""
        if summary.interrupted or not (summary.new or summary.modified):
            return
        try:
            if self._captions:
                self._caption()
            if self._ocr:
                self._read()
            if self._faces:
                self._find_faces()
        except IndexLockedError:  # another writer: the next batch's pass catches up
            log.info("the index is busy: new photos are enriched after the next batch")

    def _caption(self) -> None:
        from ..models.captioners import load_captioner

        for model_id in self._index.caption_counts():
            if model_id not in self._captioners:
                try:
                    self._captioners[model_id] = load_captioner(model_id, device=self._index._device)
                except SearchIndexError as exc:
                    log.warning("new photos are not captioned with %s: %s", model_id, exc)
                    self._captioners[model_id] = None
            captioner = self._captioners[model_id]
            if captioner is not None:
                self._index.caption(captioner)

    def _read(self) -> None:
        langs = ocr_choice(self._index.catalog)
        if langs is None:
            return
        if langs not in self._readers:
            from ..models.ocr import OcrEngine

            try:
                self._readers[langs] = OcrEngine(langs)
            except (SearchIndexError, ValueError) as exc:
                log.warning("the text of new photos is not read (%s): %s", ",".join(langs), exc)
                self._readers[langs] = None
        reader = self._readers[langs]
        if reader is not None:
            summary = self._index.ocr(engine=reader)
            log.info("text read in %d new photos (%d with text)", summary.read, summary.with_text)

    def _find_faces(self) -> None:
        choice = face_choice(self._index.catalog)
        if choice is None:
            return
        if choice not in self._face_engines:
            from ..models.faces import DETECT_SIDE, FaceEngine, face_models

            try:
                face_models()
                self._face_engines[choice] = FaceEngine(choice.detector, detect_side=choice.detect_side or DETECT_SIDE)
            except SearchIndexError as exc:
                log.warning("new photos are not searched for faces (%s): %s", choice.detector, exc)
                self._face_engines[choice] = None
        engine = self._face_engines[choice]
        if engine is not None:
            summary = self._index.find_faces(engine=engine)
            log.info("%d faces found in %d new photos", summary.faces, summary.images)
