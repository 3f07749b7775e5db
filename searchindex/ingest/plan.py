"""Plan: what an indexing run has to do, decided from the scan and the catalog before any file is read.

Every file found is classified against the catalog:

- unchanged: same path, size and mtime as last time (also for files that failed before);
- to do: anything else; reading it tells whether it is new, modified, touched
  (same content), moved or a duplicate (see :mod:`searchindex.ingest.commit`);
- gone: indexed (or failed) below a scanned folder but no longer there.

Unchanged rows may still need their photo metadata read (indexed before metadata
existed) or their keywords read again (a sidecar was added or edited).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from ..store.catalog.database import Catalog
from ..store.catalog.records import ImageState
from .keywords import sidecar_signature
from .scan import FileEntry

log = logging.getLogger(__name__)

__all__ = ["RETRIED_FAILURES", "Plan", "listing", "plan_run", "retried", "under"]

#: Failure reasons whose cause can go away while the file's size and mtime stay the same
#: (permissions, I/O errors, an optional extra installed since): such files are tried
#: again every run.  Other failures (a corrupt file) are retried once the file changes;
#: broken links and loops have no size until they are fixed, which changes it.
RETRIED_FAILURES = ("unreadable:", "install the optional extra")


@dataclass
class Plan:
    """The work of one run, and what the catalog knew when it was planned."""

    todo: list[FileEntry]  # files to read: new, or stat changed
    unchanged: int
    gone: set[str]  # paths to remove when the run completes
    images: dict[str, ImageState]  # path -> state before the run
    by_sha: dict[str, list[int]]  # sha256 -> ids holding that content
    id_path: dict[int, str]  # id -> path (updated as rows move)
    backfill: list[tuple[int, FileEntry]] = field(default_factory=list)  # rows without photo metadata
    reread: list[tuple[int, FileEntry, str]] = field(default_factory=list)  # id, file, sidecar signature now
    listings: dict[str, frozenset[str]] = field(default_factory=dict)  # folder -> names (one listdir each)
    unreachable: set[str] = field(default_factory=set)  # folders listed but not enterable: their rows kept

    def batches(self, size: int) -> list[list[FileEntry]]:
        """``todo`` in batches of ``size`` files."""
        return [self.todo[i:i + size] for i in range(0, len(self.todo), size)]


def under(path: str, roots: Sequence[str]) -> bool:
    """Whether ``path`` lies below one of the folders ``roots``."""
    return any(path.startswith(root.rstrip(os.sep) + os.sep) for root in roots)


def retried(reason: str) -> bool:
    """Whether a failure with this reason is tried again even when its file did not change."""
    return any(marker in reason for marker in RETRIED_FAILURES)


def listing(cache: dict[str, frozenset[str]], path: str) -> frozenset[str]:
    """The names in ``path``'s folder, listed once per run (sidecar lookups then cost no stat)."""
    folder = os.path.dirname(path)
    names = cache.get(folder)
    if names is None:
        try:
            names = frozenset(os.listdir(folder))
        except OSError:
            names = frozenset()
        cache[folder] = names
    return names


def _denied(path: str) -> bool:
    """True when ``path`` cannot be reached for lack of permission (a folder on the way not enterable)."""
    try:
        os.stat(path)
    except PermissionError:
        return True
    except OSError:
        return False
    return False


def plan_run(catalog: Catalog, entries: Sequence[FileEntry], roots: Iterable[str],
             skipped: Sequence[str] = (), kept: frozenset[str] = frozenset(),
             vanished: Iterable[str] = ()) -> Plan:
    """Classify ``entries`` (found below ``roots``) against the catalog.

    ``skipped``: folders below ``roots`` the scan did not walk (see
    :func:`~searchindex.ingest.scan.scan_folders`); what is indexed below them is kept.
    ``kept``: file name extensions not scanned this run (videos, with ``--no-videos``): what is
    indexed with them is kept too.
    ``vanished``: paths known to be gone without a folder scan (a watcher's delete and
    move events); like files gone from below ``roots`` they can be the source of a move.
    """
    roots = [os.path.abspath(r) for r in roots]
    images = catalog.read.image_states()
    failures = {f.path: f for f in catalog.read.failures()}
    # A failure that may have gone away is not "unchanged": it is tried again.
    failed_before = {p: (f.size, f.mtime_ns) for p, f in failures.items() if not retried(f.reason)}
    # A folder not walked keeps what is recorded for it too (its own failure record, when it could
    # not be read: recorded again by this run).
    seen = {e.path for e in entries} | set(skipped)
    gone = {p for p in list(images) + list(failures)
            if p not in seen and under(p, roots) and not under(p, skipped)
            and os.path.splitext(p)[1].lower() not in kept}
    gone |= {p for p in vanished if p not in seen and (p in images or p in failures)}
    by_sha: dict[str, list[int]] = {}
    id_path: dict[int, str] = {}
    for path, known in images.items():
        by_sha.setdefault(known.sha256, []).append(known.id)
        id_path[known.id] = path
    plan = Plan([], 0, gone, images, by_sha, id_path)
    without_metadata = catalog.read.ids_without_metadata() if images else set()
    text_states = catalog.read.text_states() if images else {}
    for e in entries:
        state = images.get(e.path)
        if state and e.size < 0 and _denied(e.path):
            # Listed but not reachable: a folder that can be read but not entered (mode 444).  Like
            # a folder that cannot be listed at all, what was indexed below it is kept, not dropped.
            plan.unchanged += 1
            plan.unreachable.add(os.path.dirname(e.path))
            continue
        if (state and (state.size, state.mtime_ns) == (e.size, e.mtime_ns)
                or failed_before.get(e.path) == (e.size, e.mtime_ns)):
            plan.unchanged += 1
            if state and state.id in without_metadata:
                plan.backfill.append((state.id, e))
            if state:
                # Sidecars change without the image changing: compare their stat signature.
                signature = sidecar_signature(e.path, listing(plan.listings, e.path))
                if text_states.get(state.id) != signature:
                    plan.reread.append((state.id, e, signature))
        else:
            plan.todo.append(e)
    for folder in sorted(plan.unreachable):
        log.warning("%s can be listed but not entered (permission denied): its indexed photos are kept",
                    folder)
    return plan
