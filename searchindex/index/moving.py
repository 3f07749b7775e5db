"""Moving indexed files into a folder a person names (the page's "keep the best, move the rest").

Files are moved, never deleted or overwritten: a name already taken in the folder, a file gone or
changed since it was indexed, is left where it is and reported.  The index follows the moves
without encoding anything again (:meth:`searchindex.Index.apply_changes` matches each moved file
to its old row by content).
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import NotFoundError, ParameterError
from ..results import JsonForm

if TYPE_CHECKING:
    from .facade import Index

__all__ = ["MoveReport", "move_images"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MoveReport(JsonForm):
    """What :func:`move_images` did: ``moved`` (image_id, from, to) and ``kept`` (image_id, path, why)."""

    folder: str
    moved: list[tuple[int, str, str]] = field(default_factory=list)
    kept: list[tuple[int, str, str]] = field(default_factory=list)


def _move_exclusive(src: str, dst: str) -> None:
    """Move ``src`` to ``dst``, failing with FileExistsError rather than replacing anything there."""
    try:
        os.link(src, dst)  # fails when dst exists: no window in which another file is replaced
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EPERM, errno.ENOTSUP, errno.EMLINK):
            raise
        with open(src, "rb") as fin, open(dst, "xb") as fout:  # another file system: copy, then remove
            shutil.copyfileobj(fin, fout, 1 << 20)
            fout.flush()
            os.fsync(fout.fileno())
        shutil.copystat(src, dst)
    os.unlink(src)


def move_images(index: Index, ids: Sequence[int], folder: str | os.PathLike[str]) -> MoveReport:
    """Move the files of the images ``ids`` into ``folder`` (made if missing), keeping their names.

    Raises:
        ParameterError: ``folder`` is not an absolute path, or is a file.
        IndexLockedError, IndexWriteError: as for :meth:`searchindex.Index.apply_changes`.
    """
    raw = os.path.expanduser(os.fspath(folder))
    if not os.path.isabs(raw):
        raise ParameterError(f"name the folder by its full path, not {os.fspath(folder)!r}", "folder")
    target = Path(raw).resolve()
    if target.exists() and not target.is_dir():
        raise ParameterError(f"{target} is a file, not a folder", "folder")
    target.mkdir(parents=True, exist_ok=True)
    report = MoveReport(str(target))
    for image_id in dict.fromkeys(int(i) for i in ids):
        try:
            image = index.image(image_id)
        except NotFoundError:
            report.kept.append((image_id, "", "not in the index"))
            continue
        dst = os.path.join(target, os.path.basename(image.path))
        try:
            st = os.stat(image.path)
            if (st.st_size, st.st_mtime_ns) != (image.size, image.mtime_ns):
                report.kept.append((image_id, image.path, "changed since it was indexed"))
                continue
            if os.path.abspath(os.path.dirname(image.path)) == str(target):
                report.kept.append((image_id, image.path, "already in that folder"))
                continue
            _move_exclusive(image.path, dst)
        except FileExistsError:
            report.kept.append((image_id, image.path, f"{dst} exists"))
            continue
        except OSError as exc:
            report.kept.append((image_id, image.path, exc.strerror or str(exc)))
            continue
        report.moved.append((image_id, image.path, dst))
    if report.moved:
        index.apply_changes([m[2] for m in report.moved], vanished=[m[1] for m in report.moved])
        log.info("moved %d files into %s (%d kept in place)", len(report.moved), target, len(report.kept))
    return report
