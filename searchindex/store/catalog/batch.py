"""One committed batch of the catalog: the writes of :meth:`Catalog.commit_batch` in one transaction.

Kept apart from :mod:`searchindex.store.catalog.database` so that opening a catalog to
search it does not import SQLAlchemy (see :mod:`searchindex.store.catalog.reader`).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence

import numpy as np
from sqlalchemy import delete, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from ...results import FailureRecord
from .migrations import refresh_text_index
from .ocrindex import forget_ocr
from .records import NewImage, PhotoMetadata, state_key
from .schema import (
    CaptionRow,
    FailureRow,
    ImageRow,
    ImageTagRow,
    ImageTextRow,
    MetaRow,
    RemovalRow,
    TextStateRow,
    VideoFrameRow,
    VideoRow,
    executor,
)
from .sqlite import chunks

__all__ = ["commit_batch"]


def commit_batch(
    engine: Engine,
    images: Sequence[NewImage],
    failures: Sequence[FailureRecord],
    touched: Sequence[tuple[int, int, int]],
    moved: Sequence[tuple[int, str, int, int]],
    deleted: Sequence[str],
    metadata: Sequence[tuple[int, PhotoMetadata]],
) -> int:
    """Write one batch atomically and return the new generation (see :meth:`Catalog.commit_batch`)."""
    now = time.time()
    with Session(engine) as s, s.begin():
        gen_row = s.get(MetaRow, "generation")
        assert gen_row is not None
        gen = int(gen_row.value) + 1
        gen_row.value = str(gen)
        # What this generation holds, beyond its number: two copies of one index share their
        # identity and generation numbers, never this (a vector file records it, see vector_store).
        s.merge(MetaRow(key=state_key(gen), value=uuid.uuid4().hex))
        text_ids = _remove_rows(s, list(deleted) + [f.path for f in failures], gen)  # full-text entries to redo
        text_ids += _update_rows(s, touched, moved, metadata)
        paths = [im.path for im in images]
        text_ids += _write_images(s, images, gen, now)
        fixed = paths + [m[1] for m in moved]
        if fixed:
            s.execute(delete(FailureRow).where(FailureRow.path.in_(fixed)))
        for f in failures:
            s.merge(FailureRow(path=f.path, size=f.size, mtime_ns=f.mtime_ns, reason=f.reason, failed_at=now))
        if text_ids:
            refresh_text_index(executor(s), text_ids)
    return gen


def _remove_rows(s: Session, gone: list[str], gen: int) -> list[int]:
    """Delete the rows (and failure records) at ``gone`` with what hangs off them, scheduling their
    vectors for removal at ``gen``; returns the ids removed."""
    removed: list[int] = []
    for chunk in chunks(gone):
        gone_ids = list(s.scalars(select(ImageRow.id).where(ImageRow.path.in_(chunk))))
        for image_id in gone_ids:
            s.merge(RemovalRow(image_id=image_id, generation=gen))
        s.execute(delete(ImageTagRow).where(ImageTagRow.image_id.in_(gone_ids)))
        s.execute(delete(CaptionRow).where(CaptionRow.image_id.in_(gone_ids)))
        s.execute(delete(ImageTextRow).where(ImageTextRow.image_id.in_(gone_ids)))
        s.execute(delete(TextStateRow).where(TextStateRow.image_id.in_(gone_ids)))
        s.execute(delete(VideoRow).where(VideoRow.image_id.in_(gone_ids)))
        s.execute(delete(VideoFrameRow).where(VideoFrameRow.image_id.in_(gone_ids)))
        forget_ocr(executor(s), gone_ids)
        removed.extend(gone_ids)
        s.execute(delete(ImageRow).where(ImageRow.path.in_(chunk)))
        s.execute(delete(FailureRow).where(FailureRow.path.in_(chunk)))
    return removed


def _update_rows(s: Session, touched: Sequence[tuple[int, int, int]], moved: Sequence[tuple[int, str, int, int]],
                 metadata: Sequence[tuple[int, PhotoMetadata]]) -> list[int]:
    """Rows that keep their vector: new stat, new path, new metadata; returns the ids that moved."""
    for image_id, size, mtime_ns in touched:
        s.execute(update(ImageRow).where(ImageRow.id == image_id).values(size=size, mtime_ns=mtime_ns))
    for image_id, path, size, mtime_ns in moved:
        s.execute(update(ImageRow).where(ImageRow.id == image_id).values(path=path, size=size, mtime_ns=mtime_ns))
    for image_id, meta in metadata:
        s.execute(update(ImageRow).where(ImageRow.id == image_id).values(**meta.columns()))
    return [m[0] for m in moved]


def _write_images(s: Session, images: Sequence[NewImage], gen: int, now: float) -> list[int]:
    """Insert the new rows, replace those at the same path in place (keeping the id); returns their ids."""
    paths = [im.path for im in images]
    existing = dict(s.execute(select(ImageRow.path, ImageRow.id).where(ImageRow.path.in_(paths))).all())
    for im in images:
        values = dict(
            size=im.size,
            mtime_ns=im.mtime_ns,
            sha256=im.sha256,
            width=im.width,
            height=im.height,
            format=im.format,
            indexed_at=now,
            generation=gen,
            embedding=np.ascontiguousarray(im.embedding, dtype=np.float32).tobytes(),
            **(im.meta.columns() if im.meta else {}),
        )
        if im.path in existing:
            s.execute(update(ImageRow).where(ImageRow.id == existing[im.path]).values(**values))
            # New content: its tags are recomputed by the next tagging pass, and
            # captions of the old picture no longer describe it.
            s.execute(delete(ImageTagRow).where(ImageTagRow.image_id == existing[im.path]))
            s.execute(delete(CaptionRow).where(CaptionRow.image_id == existing[im.path]))
            forget_ocr(executor(s), [existing[im.path]])  # the new picture's text is read by the next pass
        else:
            s.add(ImageRow(path=im.path, **values))
    ids: list[int] = []
    if paths:
        s.flush()
        for chunk in chunks(paths):
            ids.extend(s.scalars(select(ImageRow.id).where(ImageRow.path.in_(chunk))))
    _write_videos(s, images, list(existing.values()))
    return ids


def _write_videos(s: Session, images: Sequence[NewImage], replaced: list[int]) -> None:
    """The frames of the videos among ``images`` (a replaced row's old frames go first)."""
    if replaced:
        s.execute(delete(VideoRow).where(VideoRow.image_id.in_(replaced)))
        s.execute(delete(VideoFrameRow).where(VideoFrameRow.image_id.in_(replaced)))
    videos = [im for im in images if im.video is not None]
    if not videos:
        return
    ids = dict(s.execute(select(ImageRow.path, ImageRow.id).where(ImageRow.path.in_([v.path for v in videos]))).all())
    for im in videos:
        v = im.video
        assert v is not None
        image_id = ids[im.path]
        s.add(VideoRow(image_id=image_id, duration=float(v.duration), codec=v.codec, rotation=int(v.rotation),
                       frames=len(v.times)))
        s.add_all(VideoFrameRow(image_id=image_id, time=float(t),
                                embedding=np.ascontiguousarray(vec, dtype=np.float32).tobytes())
                  for t, vec in zip(v.times, v.vectors, strict=True))
