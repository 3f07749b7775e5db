"""Commit: turn one batch of produced files into one catalog transaction.

Each file read is one of:

- touched: stat changed, content (SHA-256) the same: only the stat is updated;
- moved: content already indexed at a path that has disappeared: the row follows the file;
- duplicate: content already indexed at another existing path: the embedding is copied;
- new / modified: content not seen before: written with the embedding the producer made.

Each batch is committed in one catalog transaction: an interruption loses at
most the batch in flight, and the next run resumes because committed files are
then unchanged.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..results import FailureRecord
from ..store.catalog.database import Catalog
from ..store.catalog.records import NewImage, PhotoMetadata, VideoFrames
from ..store.catalog.videos import VideoReader
from .plan import Plan
from .produce import Producer, Result
from .scan import FileEntry

__all__ = ["Committer", "RunCounts"]

log = logging.getLogger(__name__)


@dataclass
class RunCounts:
    """What a run did so far."""

    indexed: int = 0
    new: int = 0
    modified: int = 0
    touched: int = 0
    moved: int = 0
    duplicates: int = 0
    deleted: int = 0
    failures: list[FailureRecord] = field(default_factory=list)


def _vector_problem(vector: np.ndarray, dim: int) -> str | None:
    """Why an encoder's vector cannot be stored (``None``: it can): the wrong size, a NaN or
    infinite component, or no length.  Such a vector would match nothing, or everything."""
    v = np.asarray(vector, dtype=np.float64).reshape(-1)
    if v.shape[0] != dim:
        return f"encoder error: a {v.shape[0]}-d vector for a {dim}-d index"
    if not np.isfinite(v).all():
        return "encoder error: the vector holds NaN or infinite values"
    if not float(np.linalg.norm(v)) > 1e-6:
        return "encoder error: the vector is all zeros"
    return None


class Committer:
    """Commits the batches of one run planned as ``plan`` into ``catalog``.

    ``producer`` is asked again for a file whose content was known when it was
    read but whose source row has gone since (so it must be encoded after all).
    """

    def __init__(self, catalog: Catalog, plan: Plan, dim: int, producer: Producer) -> None:
        self.catalog = catalog
        self.plan = plan
        self.dim = dim
        self.producer = producer
        self.counts = RunCounts()
        self._run_vectors: dict[str, tuple[np.ndarray, int, int, str]] = {}  # sha -> vector, w, h, format
        self._run_videos: dict[str, VideoFrames] = {}  # sha -> a video's frames encoded by this run

    def commit(self, results: Sequence[Result]) -> None:
        """Write one batch's results in one transaction."""
        plan, counts = self.plan, self.counts
        rows: list[NewImage] = []
        touched: list[tuple[int, int, int]] = []
        moved: list[tuple[int, str, int, int]] = []
        metadata: list[tuple[int, PhotoMetadata]] = []
        texts: dict[str, tuple[list[tuple[str, str]], str]] = {}  # path -> texts, sidecar signature
        bad: list[FailureRecord] = []
        copies: list[tuple[FileEntry, str, int, PhotoMetadata]] = []  # entry, sha, source id (-1: this run)
        for r in results:
            if isinstance(r, FailureRecord):
                bad.append(r)
                continue
            e = r.entry
            texts[e.path] = (r.texts, r.sidecars)
            state = plan.images.get(e.path)
            if state and state.sha256 == r.sha256:
                touched.append((state.id, e.size, e.mtime_ns))
                metadata.append((state.id, r.meta))
                counts.touched += 1
                continue
            mover = None
            if state is None:
                mover = next((j for j in plan.by_sha.get(r.sha256, []) if plan.id_path[j] in plan.gone), None)
            if mover is not None:
                plan.gone.discard(plan.id_path[mover])
                moved.append((mover, e.path, e.size, e.mtime_ns))
                metadata.append((mover, r.meta))
                plan.id_path[mover] = e.path
                counts.moved += 1
                continue
            sources = plan.by_sha.get(r.sha256) or []
            if sources:
                copies.append((e, r.sha256, sources[0], r.meta))
            elif r.sha256 in self._run_vectors:
                copies.append((e, r.sha256, -1, r.meta))
            else:
                if r.vector is None:  # content known when the file was read, gone since: encode it now
                    again = self._produce_again(e)
                    if isinstance(again, FailureRecord):
                        bad.append(again)
                        continue
                    r = again
                assert r.vector is not None
                problem = _vector_problem(r.vector, self.dim)
                if problem is not None:  # an engine's (or an fp16 overflow's) vector is checked like an import's
                    bad.append(FailureRecord(e.path, e.size, e.mtime_ns, problem))
                    continue
                self._run_vectors[r.sha256] = (r.vector, r.width, r.height, r.format)
                if r.video is not None:
                    self._run_videos[r.sha256] = r.video
                rows.append(NewImage(e.path, e.size, e.mtime_ns, r.sha256, r.width, r.height, r.format, r.vector,
                                     r.meta, r.video))
                counts.indexed += 1
            if state is None:
                counts.new += 1
            else:
                counts.modified += 1
        rows += self._copied(copies)
        self.catalog.commit_batch(rows, bad, touched=touched, moved=moved, metadata=metadata)
        self._store_texts(texts, {f.path for f in bad})
        counts.failures.extend(bad)
        for f in bad:
            log.info("skipped %s: %s", f.path, f.reason)

    def finish(self) -> None:
        """Remove the rows of files gone from below the scanned folders (a completed run only)."""
        gone = self.plan.gone
        if gone:
            self.catalog.commit_batch(deleted=sorted(gone))
            self.counts.deleted = sum(1 for p in gone if p in self.plan.images)

    def _produce_again(self, entry: FileEntry) -> Result:
        results = self.producer.produce([[entry]], frozenset())
        try:
            return next(iter(results))[0]
        finally:
            close = getattr(results, "close", None)
            if close is not None:
                close()

    def _copied(self, copies: list[tuple[FileEntry, str, int, PhotoMetadata]]) -> list[NewImage]:
        """Rows for files whose content is already indexed (or encoded earlier in this run)."""
        if not copies:
            return []
        src_ids = [s for _, _, s, _ in copies if s >= 0]
        stored = self.catalog.read.embeddings(src_ids, self.dim)
        facts = self.catalog.read.records(src_ids)
        rows = []
        videos = VideoReader(self.catalog.read)
        for e, sha, s, meta in copies:
            video: VideoFrames | None
            if s >= 0:
                vec, f = stored[s], facts[s]
                w, h, fmt = f.width, f.height, f.format
                video = videos.frames(s, self.dim) if fmt == "video" else None
            else:
                vec, w, h, fmt = self._run_vectors[sha]
                video = self._run_videos.get(sha)
            rows.append(NewImage(e.path, e.size, e.mtime_ns, sha, w, h, fmt, vec, meta, video))
            if self.plan.images.get(e.path) is None:
                self.counts.duplicates += 1
        return rows

    def _store_texts(self, texts: dict[str, tuple[list[tuple[str, str]], str]], failed: set[str]) -> None:
        """Store the keywords read in a batch, for the rows it committed (ids are known only now).

        A crash before this leaves rows without a text state: the next run reads their texts again.
        """
        paths = [p for p in texts if p not in failed]
        ids = self.catalog.read.ids_by_path(paths) if paths else {}
        if not ids:
            return
        self.catalog.texts.store({ids[p]: texts[p][0] for p in paths if p in ids})
        self.catalog.texts.store_states({ids[p]: texts[p][1] for p in paths if p in ids})
