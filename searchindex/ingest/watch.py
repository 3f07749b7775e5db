"""Watch folders and turn what happens in them into batches for the indexing path.

:class:`FolderWatcher` listens to file-system events through ``watchdog`` (inotify on
Linux, FSEvents on macOS, ReadDirectoryChangesW on Windows) or polls, and hands a
callback :class:`ChangeBatch` es: files written (complete: a close-after-write event, or a
size and mtime that stayed the same for ``settle`` seconds), paths gone, folders moved or
created in.  The callback runs them through the same plan -> produce -> commit path as
``searchindex index`` (:meth:`searchindex.index.watching.Watching.apply_changes`), so a
rename there is a move (no model call) and a save through a temporary file is one change.

What breaks watchers, handled here:

- a root folder that disappears (deleted, unmounted, a network share gone) is *offline*:
  nothing below it is removed from the index, it is watched for again and scanned when it
  returns;
- an inotify watch or instance limit: that folder and every later one are polled instead,
  with one warning naming the sysctl that raises the limit;
- network and FUSE file systems (NFS, SMB, sshfs, ...) send no events for changes made by
  other machines: they are polled (:func:`mount_type` reads ``/proc/mounts``).  The poller
  (:class:`FolderPoller`) keeps one number per folder, a fingerprint of its image files'
  names, sizes and mtimes, rather than a snapshot of every file, and a folder whose
  fingerprint changed (and then held still) is synced against the catalog;
- event floods: pending changes are bounded (:attr:`WatchOptions.max_pending`); past the
  bound the watcher forgets them and schedules a scan of the folders instead;
- anything missed at all: a catch-up scan at start and every ``rescan_interval`` seconds.

The watcher never writes the index itself; one batch at a time goes to the callback, which
takes the writer lock for that batch only (another writer meanwhile: the batch waits).
"""

from __future__ import annotations

import errno
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import IndexLockedError, SearchIndexError
from ..models.images import IMAGE_EXTENSIONS
from .mounts import (
    INOTIFY_LOGGER,
    LIMIT_HINT,
    LimitSeen,
    mount_type,
    needs_polling,
    observer,
)
from .pending import ChangeBatch, Pending, handler
from .plan import under
from .poller import FolderPoller

__all__ = ["FolderWatcher", "RootState", "WatchOptions"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WatchOptions:
    """How a :class:`FolderWatcher` batches and polls.

    Args:
        debounce: seconds without a new event before the changes seen so far form a batch.
        settle: where no close-after-write events come (polling), a file counts as written
            once its size and mtime stayed the same this long.
        close_wait: where they come (inotify), a file still open for writing counts as written
            after this long without a change (a program writing through a memory map).
        max_wait: a steady stream of events still yields a batch this often (seconds).
        max_batch: at most this many files per batch.
        max_pending: changes remembered at once; past it they are dropped and the folders scanned.
        rescan_interval: seconds between catch-up scans (the first one runs at start); 0: only at start.
        poll_interval: seconds between two looks at a polled folder.
        polling: ``True``: poll every folder; ``False``: never fall back to polling on a
            network mount (a watch limit still falls back); ``None``: decide per folder.
    """

    debounce: float = 0.5
    settle: float = 1.0
    close_wait: float = 30.0
    max_wait: float = 5.0
    max_batch: int = 1000
    max_pending: int = 100_000
    rescan_interval: float = 3600.0
    poll_interval: float = 10.0
    polling: bool | None = None


@dataclass
class RootState:
    """What the watcher knows of one root folder."""

    path: str
    mode: str = "offline"  # "events", "polling" or "offline"
    was_mount: bool = False  # a mount point when first seen: unmounted means offline
    fs_type: str = ""
    watch: Any = None  # the observer's watch, while scheduled


class FolderWatcher:
    """Watch ``roots`` and hand their changes to ``apply`` in batches, from a thread of its own.

    Args:
        roots: absolute folder paths (missing ones are offline until they appear).
        apply: runs one :class:`ChangeBatch` through the indexing path; may raise
            :class:`~searchindex.errors.IndexLockedError` (the batch is kept and tried again).
        catch_up: brings the index in line with these (online) roots by a full scan.
        options: see :class:`WatchOptions`.
        on_error: told of each error the watcher goes on after.
        extensions: the file name extensions watched (default: images; videos' too when the
            index takes them, see :func:`searchindex.ingest.videos.scan_extensions`).
    """

    def __init__(self, roots: Sequence[str], apply: Callable[[ChangeBatch], object],
                 catch_up: Callable[[list[str], threading.Event], object], options: WatchOptions | None = None,
                 on_error: Callable[[BaseException], None] | None = None,
                 extensions: frozenset[str] = IMAGE_EXTENSIONS) -> None:
        self.options = options or WatchOptions()
        self.extensions = extensions
        self.roots = {r: RootState(r) for r in dict.fromkeys(os.path.abspath(r) for r in roots)}
        self._apply, self._catch_up, self._on_error = apply, catch_up, on_error
        self._pending = Pending(self.options)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._native: Any = None
        self._polling: FolderPoller | None = None
        self._handler: Any = None
        self._limit_seen = LimitSeen()
        self._limit_hit = False  # after a watch limit, the rest is polled
        self._rescan: set[str] = set()  # roots to scan as soon as possible
        self._next_rescan = 0.0
        self._retry_at = 0.0  # a catch-up scan that found the index busy waits until then
        self._lock = threading.Lock()
        self.batches = 0
        self.errors = 0

    # -- life cycle ---------------------------------------------------------

    def start(self) -> None:
        """Start observing and the thread that applies batches (the first catch-up scan runs in it).

        Raises:
            MissingExtraError: watchdog is not installed.
        """
        self._limit_seen = LimitSeen()
        logging.getLogger(INOTIFY_LOGGER).addHandler(self._limit_seen)
        self._native = observer()()
        # inotify reports close-after-write; FSEvents and Windows do not.
        self._handler = handler(self._pending, closes=type(self._native).__name__ == "InotifyObserver",
                                 extensions=self.extensions)
        self._polling = FolderPoller(self._pending, self.options.poll_interval, self.options.settle,
                                     self.extensions)
        self._native.start()
        self._polling.start()
        for root in self.roots.values():
            self._check_root(root, first=True)
        self._rescan = {r.path for r in self.roots.values() if r.mode != "offline"}
        self._next_rescan = self._due()
        self._thread = threading.Thread(target=self._run, name="searchindex-watch", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Stop: the batch in flight is finished (a catch-up scan stops after its batch in flight)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        logging.getLogger(INOTIFY_LOGGER).removeHandler(self._limit_seen)
        if self._polling is not None:
            self._polling.stop()
        if self._native is not None:
            self._native.stop()
        for thread in (self._native, self._polling):
            if thread is not None and thread.is_alive():
                thread.join(timeout)

    @property
    def running(self) -> bool:
        """Whether the watcher's thread is running."""
        return self._thread is not None and self._thread.is_alive()

    def modes(self) -> dict[str, str]:
        """Root folder -> ``events``, ``polling`` or ``offline``."""
        with self._lock:
            return {r.path: r.mode for r in self.roots.values()}

    def rescan(self) -> None:
        """Ask for a catch-up scan of the online roots as soon as possible."""
        with self._lock:
            self._rescan |= {r.path for r in self.roots.values() if r.mode != "offline"}

    # -- the roots ----------------------------------------------------------

    def _due(self) -> float:
        interval = self.options.rescan_interval
        return time.monotonic() + interval if interval > 0 else float("inf")

    @staticmethod
    def _online(root: RootState) -> bool:
        if not os.path.isdir(root.path):
            return False
        return not (root.was_mount and not os.path.ismount(root.path))

    def _check_root(self, root: RootState, first: bool = False, unwatched: Sequence[str] = ()) -> None:
        """Follow a root going offline or coming back, or losing its watches (``unwatched``: folders
        that could not be watched, from watchdog's log)."""
        limited = any(p == root.path or under(p, [root.path]) for p in unwatched)
        online = self._online(root)
        if first and online:
            root.was_mount = os.path.ismount(root.path)
        if online and root.mode == "offline":
            if not first:
                log.warning("%s is back: watching it again and scanning it", root.path)
                with self._lock:
                    self._rescan.add(root.path)
            self._schedule(root)
        elif not online and root.mode != "offline":
            log.warning("%s is gone (deleted, unmounted or offline): its indexed photos are kept; "
                        "watching for it to come back", root.path)
            self._unschedule(root)
            self._pending.forget_below(root.path)
            with self._lock:
                root.mode = "offline"
        elif not online and first:
            log.warning("%s is not there (offline?): its indexed photos are kept; watching for it to appear",
                        root.path)
        elif root.mode == "events" and (not self._emitter_alive(root) or limited):
            # A folder made since that got no watch (the limit), or an emitter that died: poll instead.
            self._unschedule(root)
            self._limit_reached(root.path, None)
            self._schedule(root)
            with self._lock:
                self._rescan.add(root.path)

    def _schedule(self, root: RootState) -> None:
        root.fs_type = mount_type(root.path)
        poll = self.options.polling
        use_polling = self._limit_hit or poll is True or (poll is None and needs_polling(root.fs_type))
        if not use_polling:
            try:
                watch = self._native.schedule(self._handler, root.path, recursive=True)
            except OSError as exc:
                if exc.errno not in (errno.ENOSPC, errno.EMFILE):
                    raise
                self._limit_reached(root.path, exc)
            else:
                with self._lock:
                    root.watch, root.mode = watch, "events"
                log.info("watching %s (events)", root.path)
                return
        assert self._polling is not None  # started
        self._polling.add(root.path)
        with self._lock:
            root.watch, root.mode = root.path, "polling"
        why = f"a {root.fs_type} file system" if needs_polling(root.fs_type) and poll is None else "polling"
        log.info("watching %s (%s: looking every %g s)", root.path, why, self.options.poll_interval)

    def _limit_reached(self, path: str, exc: OSError | None) -> None:
        if not self._limit_hit:
            what = exc.strerror if exc is not None and exc.strerror else "the inotify watch limit was reached"
            log.warning("%s while watching %s: it and the folders after it are polled every %g s instead; %s",
                        what, path, self.options.poll_interval, LIMIT_HINT)
        self._limit_hit = True

    def _unschedule(self, root: RootState) -> None:
        watch, root.watch = root.watch, None
        if watch is None:
            return
        if root.mode == "polling":
            assert self._polling is not None
            self._polling.remove(root.path)
            return
        try:
            self._native.unschedule(watch)
        except (KeyError, OSError):
            pass

    def _emitter_alive(self, root: RootState) -> bool:
        for emitter in list(getattr(self._native, "emitters", ())):
            if emitter.watch == root.watch:
                return bool(emitter.is_alive())
        return True

    # -- the loop -----------------------------------------------------------

    def _run(self) -> None:
        last_check = 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            unwatched = self._limit_seen.take()
            if now - last_check >= 1.0 or unwatched:
                last_check = now
                for root in list(self.roots.values()):
                    self._guard(self._check_root, root, False, unwatched)
                if self._pending.overflowed:
                    self._pending.overflowed = False
                    log.warning("more than %d changes at once: scanning the folders instead",
                                self.options.max_pending)
                    self.rescan()
                if now >= self._next_rescan:
                    self._next_rescan = self._due()
                    self.rescan()
            with self._lock:
                todo = sorted(self._rescan)
            if todo and now >= self._retry_at:
                outcome = self._guard(self._catch_up, todo, self._stop)
                if outcome is _BUSY:  # a scan is not free: ask again a little later
                    self._retry_at = time.monotonic() + 5.0
                else:  # done, or failed: tried again at the next interval (or when asked)
                    with self._lock:
                        self._rescan -= set(todo)
                continue
            batch = self._pending.take()
            if batch is not None:
                batch = self._without_offline(batch)
            if batch:
                outcome = self._guard(self._apply, batch)
                if outcome is _BUSY:  # another writer: the batch waits for it
                    self._pending.put_back(batch)
                    self._stop.wait(1.0)
                elif outcome is _FAILED:  # dropped; a catch-up scan a minute later finds what it held
                    self._next_rescan = min(self._next_rescan, time.monotonic() + 60.0)
                else:
                    self.batches += 1
                continue
            self._stop.wait(0.1)

    def _without_offline(self, batch: ChangeBatch) -> ChangeBatch:
        """Drop what lies below roots that are offline now: a vanished (or unmounted) root is not a
        deletion, and a file or folder below it that cannot be found now would be taken for one.
        The roots themselves are never removed as folders."""
        offline = [r.path for r in self.roots.values() if not self._online(r)]

        def keep(paths: Iterable[str]) -> tuple[str, ...]:
            return tuple(p for p in paths if not any(p == o or under(p, [o]) for o in offline))

        roots = list(self.roots)
        return ChangeBatch(keep(batch.changed), keep(batch.vanished),
                           keep(f for f in batch.vanished_folders if f not in roots), keep(batch.folders),
                           keep(batch.synced_folders))

    def _guard(self, fn: Callable[..., object], *args: Any) -> object:
        """Run ``fn``; an error is logged and reported, and the watcher goes on."""
        try:
            return fn(*args)
        except IndexLockedError as exc:
            log.info("another process is writing the index (%s): waiting", exc)
            return _BUSY
        except SearchIndexError as exc:
            self.errors += 1
            log.error("%s", exc)
            if self._on_error is not None:
                self._on_error(exc)
            return _FAILED
        except Exception as exc:  # a watcher in a service must outlive one bad batch
            self.errors += 1
            log.exception("watching failed on %s", getattr(fn, "__name__", fn))
            if self._on_error is not None:
                self._on_error(exc)
            return _FAILED


_FAILED: Any = object()
_BUSY: Any = object()

