"""Captioning an index: every image without a caption from a model gets one, batch by batch.

The captioners themselves (BLIP, BLIP-2, GIT through ``transformers``) live in
:mod:`searchindex.models.captioners`; this module walks the catalog, decodes the
files as the indexer does, and commits each batch's captions at once.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable

from PIL import Image

from ..defaults import DEFAULT_CAPTION_MODEL
from ..errors import ImageDecodeError
from ..models.captioners import Captioner, load_captioner
from ..models.images import decode_image
from ..results import CaptionFailure, CaptionProgress, CaptionSummary
from ..store.catalog.database import Catalog
from .passes import Batches, unreadable

__all__ = ["caption_catalog", "caption_index"]

log = logging.getLogger(__name__)


def _read_image(path: str, side: int) -> Image.Image:
    """Decode an indexed file as the indexer does (EXIF orientation, RGB, JPEG draft down to ``side``);
    a video's caption describes its middle frame."""
    from ..models.video import VIDEO_EXTENSIONS

    if os.path.splitext(path)[1].lower() in VIDEO_EXTENSIONS:
        from ..models.video import MISSING_EXTRA, available, frame_at, probe_video

        if not available():
            raise ImageDecodeError(path, MISSING_EXTRA)
        return frame_at(path, probe_video(path)[0] / 2, side=side)
    with open(path, "rb") as fh:
        data = fh.read()
    return decode_image(data, path, min_side=side).image


def caption_catalog(
    catalog: Catalog,
    model_id: str,
    captioner: Callable[[], Captioner],
    *,
    batch_size: int = 16,
    progress: Callable[[CaptionProgress], None] | None = None,
    stop: threading.Event | None = None,
) -> CaptionSummary:
    """Caption every image of ``catalog`` that has no caption from ``model_id`` yet.

    Each batch's captions are committed in one transaction, so an interruption
    loses at most the batch in flight and the next call resumes.  ``captioner`` is
    called (to load the model) only when some image needs a caption.  Files that
    cannot be read or decoded any more are reported in the summary and skipped.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    t0 = time.perf_counter()
    todo = catalog.read.ids_without_caption(model_id)
    already = catalog.read.image_count() - len(todo)
    loaded: Captioner | None = None
    prompt: str | None = None
    captioned, failures = 0, []
    done = 0
    batches = Batches(todo, batch_size, stop)
    for done, chunk in batches:
        if loaded is None:
            loaded = captioner()
            prompt = loaded.prompt
        rows = catalog.read.records(chunk)
        ids, images = [], []
        for image_id in chunk:
            row = rows.get(image_id)
            if row is None:  # removed by an index run since the list was read
                continue
            try:
                images.append(_read_image(row.path, loaded.image_size))
                ids.append(image_id)
            except (ImageDecodeError, OSError) as exc:
                failures.append(CaptionFailure(row.path, unreadable(exc)))
        texts = loaded.caption(images) if images else []
        if ids:
            catalog.captions.store([(i, model_id, prompt or "", t) for i, t in zip(ids, texts, strict=True)])
        captioned += len(ids)
        if progress is not None:
            progress(CaptionProgress(done, len(todo), captioned, len(failures)))
    for f in failures:
        log.warning("cannot caption %s: %s", f.path, f.reason)
    return CaptionSummary(model_id, prompt, captioned, len(failures), already, time.perf_counter() - t0,
                          tuple(failures), batches.interrupted)


def caption_index(
    catalog: Catalog,
    model: str | Captioner | None = None,
    *,
    device: str,
    prompt: str | None = None,
    batch_size: int = 16,
    max_new_tokens: int = 30,
    num_beams: int = 3,
    progress: Callable[[CaptionProgress], None] | None = None,
    stop: threading.Event | None = None,
) -> CaptionSummary:
    """Caption with ``model`` (a hub id or folder, default :data:`DEFAULT_CAPTION_MODEL`, or a loaded
    :class:`Captioner`); the model loads only if some image needs a caption (see :meth:`searchindex.Index.caption`).
    """
    if isinstance(model, Captioner):
        loaded = model
        model_id = model.model_id

        def load() -> Captioner:
            return loaded
    else:
        model_id = model or DEFAULT_CAPTION_MODEL

        def load() -> Captioner:
            return load_captioner(model_id, device=device, prompt=prompt, max_new_tokens=max_new_tokens,
                                  num_beams=num_beams)

    return caption_catalog(catalog, model_id, load, batch_size=batch_size, progress=progress, stop=stop)
