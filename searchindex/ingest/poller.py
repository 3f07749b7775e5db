"""Polling for folders that send no events (network and FUSE mounts, or past the inotify watch limit):
one fingerprint per folder instead of a record per file, so a tree of 100,000 files costs little memory."""

from __future__ import annotations

import os
import threading
import time

from ..models.images import IMAGE_EXTENSIONS
from .pending import Pending, is_image
from .plan import under

__all__ = ["FolderPoller"]


class FolderPoller(threading.Thread):
    """Poll root folders every ``interval`` seconds, feeding ``pending``.

    Memory is one number per folder, not a record per file: a folder's fingerprint sums a hash
    of each image file's name, size and mtime.  A new folder is scanned, a folder gone is gone
    (below an offline root the watcher drops that), and a folder whose fingerprint changed is
    looked at again every quarter second until it held still for ``settle`` seconds (files
    still being copied), then synced.
    """

    def __init__(self, pending: Pending, interval: float, settle: float,
                 extensions: frozenset[str] = IMAGE_EXTENSIONS) -> None:
        super().__init__(name="searchindex-poll", daemon=True)
        self._pending = pending
        self.extensions = extensions
        self.interval = interval
        self.settle = settle
        self._roots: dict[str, dict[str, int] | None] = {}  # root -> folder -> fingerprint (None: not listed)
        # folder -> fingerprint, since when, what ("new", "changed", "gone"): folders seen changing,
        # appearing or disappearing, until they (and the others) hold still
        self._unsettled: dict[str, tuple[int, float, str]] = {}
        self._lock = threading.Lock()
        self._halt = threading.Event()
        self._wake = threading.Event()

    def add(self, root: str) -> None:
        """Poll ``root``; its first listing, taken now, is the baseline.  Taken before the catch-up
        scan that follows (at start, or on a root's return), so no change falls between the two."""
        prints = _fingerprints(root, {}, self.extensions) if os.path.isdir(root) else None
        with self._lock:
            self._roots[root] = prints
        self._wake.set()

    def remove(self, root: str) -> None:
        """Stop polling ``root``."""
        with self._lock:
            self._roots.pop(root, None)
            for folder in [f for f in self._unsettled if f == root or under(f, [root])]:
                del self._unsettled[folder]

    def stop(self) -> None:
        """End the thread after the look in progress."""
        self._halt.set()
        self._wake.set()

    def run(self) -> None:
        next_poll = 0.0
        while not self._halt.is_set():
            now = time.monotonic()
            with self._lock:
                fresh = any(v is None for v in self._roots.values())
            if now >= next_poll or fresh:
                self.poll()
                next_poll = time.monotonic() + self.interval
            self._check_unsettled()
            wait = 0.25 if self._unsettled else next_poll - time.monotonic()
            self._wake.wait(max(0.05, wait))
            self._wake.clear()

    def poll(self) -> None:
        """One look at every root."""
        with self._lock:
            roots = list(self._roots.items())
        for root, old in roots:
            if self._halt.is_set():
                return
            if not os.path.isdir(root):  # offline: the watcher follows that; a baseline again on return
                with self._lock:
                    if root in self._roots:
                        self._roots[root] = None
                continue
            prints = _fingerprints(root, old or {}, self.extensions)
            with self._lock:
                if root not in self._roots:
                    continue
                self._roots[root] = prints
            if old is None:
                continue
            now = time.monotonic()
            for folder, fp in prints.items():
                before = old.get(folder)
                if before is None:
                    if os.path.dirname(folder) in old or folder == root:  # the top of what is new
                        with self._lock:  # scanned once settled, with its old parent's sync (moves)
                            self._unsettled[folder] = (fp, now, "new")
                elif fp != before:
                    with self._lock:
                        self._unsettled[folder] = (fp, now, "changed")
            for folder in old:
                if folder not in prints and os.path.dirname(folder) in prints:  # the top of what is gone
                    with self._lock:
                        self._unsettled[folder] = (-1, now, "gone")

    def _check_unsettled(self) -> None:
        now = time.monotonic()
        with self._lock:
            todo = list(self._unsettled.items())
        ready = []
        for folder, (fp, since, what) in todo:
            current = _fingerprint(folder, [], self.extensions)
            with self._lock:
                if folder not in self._unsettled:
                    continue
                if current != fp:
                    self._unsettled[folder] = (current, now, what)
                elif now - since >= self.settle:
                    ready.append((folder, what))
        # All held still: one batch, so that moves between them pair up.  A folder that never holds
        # still (written to all the time) does not hold the others back for more than 30 s.
        oldest = min((since for _, since, _ in (v for _, v in todo)), default=now)
        if ready and (len(ready) == len(todo) or now - oldest > 30.0):
            with self._lock:
                for folder, _ in ready:
                    self._unsettled.pop(folder, None)
            for folder, what in ready:
                if what == "new":
                    self._pending.folder_in(folder)
                elif what == "gone":
                    self._pending.folder_gone(folder)
                else:
                    self._pending.folder_changed(folder)


def _fingerprint(folder: str, subfolders: list[str], extensions: frozenset[str] = IMAGE_EXTENSIONS) -> int:
    """A number that changes when a file named with ``extensions`` in ``folder`` (not below) is
    added, removed, renamed or rewritten; ``subfolders`` gets its folders.  -1: the folder cannot
    be listed."""
    total = 0
    try:
        with os.scandir(folder) as it:
            for entry in it:
                try:
                    if entry.is_dir():
                        subfolders.append(entry.path)
                    elif is_image(entry.name, extensions):
                        st = entry.stat()
                        total += hash((entry.name, st.st_size, st.st_mtime_ns))
                except OSError:
                    continue
    except OSError:
        return -1
    return total & 0xFFFF_FFFF_FFFF_FFFF


def _fingerprints(root: str, old: dict[str, int], extensions: frozenset[str] = IMAGE_EXTENSIONS) -> dict[str, int]:
    """Folder -> fingerprint for ``root`` and every folder below it (links followed, each folder
    once); a folder that cannot be listed keeps its ``old`` fingerprint (unreadable is not gone)."""
    prints: dict[str, int] = {}
    seen: set[tuple[int, int]] = set()
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            st = os.stat(folder)
        except OSError:
            continue
        if (st.st_dev, st.st_ino) in seen:
            continue
        seen.add((st.st_dev, st.st_ino))
        subfolders: list[str] = []
        fp = _fingerprint(folder, subfolders, extensions)
        prints[folder] = old.get(folder, 0) if fp == -1 else fp
        stack.extend(subfolders)
    return prints
