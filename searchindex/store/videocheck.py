"""What ``searchindex check`` finds wrong with the videos of an index (see :mod:`.check`).

A video's image row, its ``videos`` row and its frames are written in one
transaction, so they disagree only after damage (a catalog salvaged by ``repair``,
a hand edit): frames whose video is gone, a video without frames, or frames whose
embedding has the wrong size.
"""

from __future__ import annotations

import sqlite3

__all__ = ["video_findings"]


def video_findings(db: sqlite3.Connection, dim: int) -> list[tuple[str, str, int]]:
    """(severity, message, count) of each problem with the videos of the catalog behind ``db`` (none for a
    catalog without video tables); :mod:`.check` makes them findings."""
    try:
        orphans = db.execute("SELECT COUNT(*) FROM video_frames WHERE image_id NOT IN (SELECT id FROM images)"
                             ).fetchone()[0]
        bare = db.execute("SELECT COUNT(*) FROM images WHERE format = 'video' AND id NOT IN "
                          "(SELECT image_id FROM video_frames)").fetchone()[0]
        bad = db.execute("SELECT COUNT(*) FROM video_frames WHERE length(embedding) != ?", (4 * dim,)).fetchone()[0]
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return []
        raise
    found: list[tuple[str, str, int]] = []
    if orphans:
        found.append(("warning", f"{orphans} video frames belong to no indexed video (searches ignore them)", orphans))
    if bare:
        found.append(("error", f"{bare} videos have no frames: they are found by their mean picture only (move "
                      "them out of the indexed folders, index, move them back and index again)", bare))
    if bad:
        found.append(("error", f"{bad} video frames have an embedding of the wrong size", bad))
    return found
