"""The facade's live-index methods: :meth:`Watching.watch` and :meth:`Watching.apply_changes`.

A watch (:mod:`searchindex.ingest.watch`) turns file-system events into batches; each batch
goes through the same plan -> produce -> commit path as :meth:`~Writing.add_folder`, under the
writer lock for that batch only, so ``searchindex index`` can run between two batches.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from ..errors import ParameterError
from .enrichment import Enrichment
from .people import People
from .reading import Reading
from .writing import Writing

if TYPE_CHECKING:
    from ..ingest.pending import ChangeBatch
    from ..ingest.watch import FolderWatcher, WatchOptions
    from ..results import IndexSummary

__all__ = ["WatchHandle", "Watching"]

log = logging.getLogger("searchindex.watch")

#: Called after each batch or catch-up scan that changed the index, with its summary.
ChangeCallback = Callable[["IndexSummary"], None]


class WatchHandle:
    """A running watch (see :meth:`Watching.watch`): :meth:`stop` it, ask its :meth:`modes`."""

    def __init__(self, watcher: FolderWatcher) -> None:
        self._watcher = watcher

    def stop(self, timeout: float | None = None) -> None:
        """Stop watching; the batch in flight is committed first (at most ``timeout`` seconds' wait)."""
        self._watcher.stop(timeout)

    @property
    def running(self) -> bool:
        """Whether the watch is still running."""
        return self._watcher.running

    @property
    def batches(self) -> int:
        """Batches of changes applied so far."""
        return self._watcher.batches

    @property
    def errors(self) -> int:
        """Errors the watch went on after (each logged and given to ``on_error``)."""
        return self._watcher.errors

    def modes(self) -> dict[str, str]:
        """Each watched folder -> ``events`` (notified), ``polling`` or ``offline`` (missing: kept)."""
        return self._watcher.modes()

    def rescan(self) -> None:
        """Scan the watched folders now (as at start and every rescan interval)."""
        self._watcher.rescan()

    def __enter__(self) -> WatchHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Watching(Writing, Enrichment, Reading, People):
    """:meth:`watch` and :meth:`apply_changes` of :class:`~searchindex.index.Index`."""

    def watch(self, folders: str | os.PathLike[str] | Iterable[str | os.PathLike[str]] | None = None, *,
              on_change: ChangeCallback | None = None, on_error: Callable[[BaseException], None] | None = None,
              options: WatchOptions | None = None, batch_size: int = 64, captions: bool = True,
              ocr: bool = True, faces: bool = True, videos: bool | None = None) -> WatchHandle:
        """Keep the index in line with ``folders`` (default: :meth:`indexed_folders`) as they change,
        from a thread of its own, until the handle's :meth:`~WatchHandle.stop`.

        New and changed images are indexed once completely written, a few at a time; renames and
        moves update paths without a model call; deletions remove; a folder that disappears is
        offline (its images are kept) until it returns.  A catch-up scan runs at start and every
        ``options.rescan_interval`` seconds.  Each batch takes the writer lock for itself.

        The watch writes through this ``Index``: do not write with it from another thread
        meanwhile (searching from others is fine; see the class docstring).

        Args:
            on_change: called (in the watch's thread) with the summary of each batch or scan that
                changed something.
            on_error: called with each error the watch logged and went on after.
            options: debounce, settle, polling... (:class:`~searchindex.ingest.watch.WatchOptions`).
            batch_size: images per model call.
            captions: caption new images with each model the index has captions from (loaded
                once; as :meth:`caption` with its default options).  Zero-shot tags always follow.
            ocr: read the text of new images when the index uses OCR (:meth:`ocr` ran on it), in
                the languages it last used (see :mod:`searchindex.index.following`).
            faces: search new images for faces and group them when the index uses faces
                (:meth:`find_faces` ran on it), with the detector it last used.
            videos: watch the videos too, as :meth:`add_folder` indexes them (default: when the
                ``video`` extra is installed); when false, videos indexed before are kept.

        Raises:
            ParameterError: no folders given and none indexed yet.
            MissingExtraError: watchdog is not installed (``searchindex[watch]``), or
                ``videos=True`` without the ``video`` extra.
        """
        from ..ingest.scan import path_list
        from ..ingest.videos import scan_extensions
        from ..ingest.watch import FolderWatcher
        from .following import Follower

        roots = path_list(folders, "a folder to watch") if folders is not None else self.indexed_folders()
        if not roots:
            raise ParameterError("no folder to watch: give one, or index one first", "folders")
        roots = [os.path.abspath(os.path.expanduser(r)) for r in roots]
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ParameterError(f"batch_size must be a whole number of at least 1, not {batch_size!r}", "batch_size")

        def report(summary: IndexSummary) -> None:
            changed = summary.indexed + summary.moved + summary.deleted + summary.touched + summary.duplicates
            if changed or summary.failed:
                log.info("%d new, %d modified, %d moved, %d removed, %d failed in %.2f s", summary.new,
                         summary.modified, summary.moved, summary.deleted, summary.failed, summary.seconds)
                if on_change is not None:
                    on_change(summary)

        extensions, kept = scan_extensions(videos)
        follower = Follower(self, captions=captions, ocr=ocr, faces=faces)

        def apply(batch: ChangeBatch) -> None:
            summary = self.apply_changes(batch.changed, vanished=batch.vanished,
                                         vanished_folders=batch.vanished_folders, folders=batch.folders,
                                         synced_folders=batch.synced_folders, batch_size=batch_size,
                                         videos=bool(not kept))
            report(summary)
            follower.follow(summary)

        def catch_up(online: list[str], stop: threading.Event) -> None:
            log.info("scanning %s", ", ".join(online))
            summary = self.add_folder(online, batch_size=batch_size, stop=stop, videos=bool(not kept))
            report(summary)
            follower.follow(summary)

        watcher = FolderWatcher(roots, apply, catch_up, options, on_error, extensions=extensions)
        watcher.start()
        return WatchHandle(watcher)

    def apply_changes(self, changed: Iterable[str | os.PathLike[str]] = (), *,
                      vanished: Iterable[str | os.PathLike[str]] = (),
                      vanished_folders: Iterable[str | os.PathLike[str]] = (),
                      folders: Iterable[str | os.PathLike[str]] = (),
                      synced_folders: Iterable[str | os.PathLike[str]] = (), batch_size: int = 64,
                      videos: bool | None = None) -> IndexSummary:
        """Bring these paths in line, as a watch does with one batch of events.

        Args:
            changed: files written or moved in (indexed; one that no longer exists is gone).
            vanished: files gone: they leave the index, or their row follows a file of the
                same content among ``changed`` (a move: no model call).
            vanished_folders: folders gone: everything indexed below them, as ``vanished``.
            folders: folders created or moved in: scanned, and their images indexed.
            synced_folders: folders whose own files (not those below) are brought in line: new
                and changed ones indexed, missing ones gone (what a poll found changed).
            videos: as for :meth:`add_folder`: the folders' videos are scanned too (default: when
                the ``video`` extra is installed); when false, the videos indexed there are kept.

        Raises:
            IndexLockedError, IndexWriteError: as for :meth:`add_folder`.
            MissingExtraError: ``videos=True`` without the ``video`` extra.
        """
        t0 = time.perf_counter()
        from ..ingest.plan import under
        from ..ingest.scan import entries_of, scan_folders
        from ..ingest.videos import scan_extensions

        extensions, kept = scan_extensions(videos)

        gone = [os.path.abspath(os.fspath(p)) for p in vanished]
        files: list[str] = []
        for p in (os.path.abspath(os.fspath(p)) for p in changed):
            (files if os.path.lexists(p) else gone).append(p)
        entries = entries_of(dict.fromkeys(files))
        seen = set(files)
        for folder in (os.path.abspath(os.fspath(f)) for f in folders):
            if not os.path.isdir(folder):
                continue
            for e in scan_folders([folder], extensions=extensions):
                if e.path not in seen:
                    seen.add(e.path)
                    entries.append(e)
        synced = {os.path.abspath(os.fspath(f)) for f in synced_folders}
        for folder in synced:
            for e in entries_of(_images_in(folder, extensions)):
                if e.path not in seen:
                    seen.add(e.path)
                    entries.append(e)
        dropped = [os.path.abspath(os.fspath(f)) for f in vanished_folders]
        with self._writing():
            if synced:
                known = [*self.catalog.read.image_states(), *(f.path for f in self.catalog.read.failures())]
                gone += [p for p in known if os.path.dirname(p) in synced
                         and os.path.splitext(p)[1].lower() not in kept]
            if dropped:
                # A folder moved elsewhere in the tree arrives in the same batch: its files then
                # follow their rows (moves), the rest leaves.
                known = [*self.catalog.read.image_states(), *(f.path for f in self.catalog.read.failures())]
                gone += [p for p in known if under(p, dropped) and not os.path.lexists(p)]
            gone = [p for p in dict.fromkeys(gone) if p not in seen and not os.path.lexists(p)]
            return self._run(entries, [], t0, vanished=gone, batch_size=batch_size, workers=None, kept=kept)


def _images_in(folder: str, extensions: frozenset[str]) -> list[str]:
    """The files named with one of ``extensions`` directly in ``folder`` (none when it cannot be listed)."""
    try:
        with os.scandir(folder) as it:
            return sorted(e.path for e in it if os.path.splitext(e.name)[1].lower() in extensions
                          and not e.is_dir())
    except OSError:
        return []
