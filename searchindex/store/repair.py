"""``repair``: recover what can be recovered of a damaged index.

:func:`repair_index` takes the writer lock, then:

- a damaged catalog is moved aside (``catalog.sqlite.damaged-<time>``, with its
  ``-wal`` file: kept, never deleted) and every row that can still be read is
  copied into a fresh catalog of the current schema, table by table and rowid
  range by rowid range, so one bad page costs the rows on it and no more; the
  full-text index is rebuilt from the recovered rows and the new file is checked
  before it is put in place;
- the vector file is rebuilt from the catalog, then as the index type the
  policy wants (IVF for large collections), as any indexing run would;
- temporary files of killed writers and superseded vector files are removed:
  only names the index itself writes, inside the index folder.

It never touches the photos.  What it finds first, and the check of the result,
come from :mod:`searchindex.store.check`.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import IndexCorruptError, IndexLockedError, IndexNotFoundError
from .check import CATALOG_FILE, CheckReport, catalog_findings, check_index, connect_ro, leftovers
from .lock import WriterLock
from .swap import settle_swap

__all__ = ["RepairReport", "repair_index"]

log = logging.getLogger(__name__)

#: The suffixes of the files SQLite keeps beside a catalog.
_SIDE_FILES = ("-wal", "-shm")


@dataclass(frozen=True)
class RepairReport:
    """What :func:`repair_index` did, and the check of the result."""

    index: str
    catalog_recovered: bool  # the catalog was damaged and rebuilt from what could be read
    damaged_copy: str | None  # where the damaged catalog was kept
    rows_recovered: dict[str, int] = field(default_factory=dict)  # table -> rows copied
    rows_lost: dict[str, int] = field(default_factory=dict)  # table -> rows known to be lost (see images_lost)
    vectors_rebuilt: int = 0
    removed: tuple[str, ...] = ()  # temporary or superseded files of the index removed
    check: CheckReport | None = None
    swap_finished: str | None = None  # what was done to finish an interrupted reindex's folder swap
    reindex_removed: str | None = None  # the staging folder of an unfinished reindex, removed
    #: Images whose rows were lost with the damaged catalog: the ids the old vector file and the
    #: other tables knew of, less those recovered.  Exact when the vector file was of the catalog's
    #: generation; else an estimate: the larger of that and the rowids that could not be read
    #: (which counts gaps between rows too).
    images_lost: int = 0
    images_lost_exact: bool = True
    #: The folders of the recovered images (the smallest set covering them): indexing them again
    #: (``searchindex index FOLDER...``) adds back the images whose rows were lost.
    reindex_folders: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["check"] = self.check.to_dict() if self.check is not None else None
        return data


def repair_index(path: str | os.PathLike[str]) -> RepairReport:
    """Repair the index at ``path`` (see the module docstring) and check the result.

    Raises:
        IndexNotFoundError: ``path`` holds no catalog.
        IndexLockedError: another process is writing to the index.
        IndexCorruptError: too little of the catalog is readable to recover it.
        IndexWriteError: the vector index cannot be written.
    """
    folder = Path(path).expanduser()
    if not os.path.lexists(folder):  # a reindex killed inside a three-rename swap (no renameat2)
        settle_swap(folder.absolute())
    if not (folder / CATALOG_FILE).is_file():
        raise IndexNotFoundError(f"no index at {folder} (no {CATALOG_FILE})")
    with WriterLock(folder):
        swap = settle_swap(folder.resolve())  # first: a reindex's half-done swap, with the user's files
        findings, meta = catalog_findings(folder / CATALOG_FILE)
        aside = None
        recovered: dict[str, int] = {}
        lost: dict[str, int] = {}
        images_lost, exact = 0, True
        folders: tuple[str, ...] = ()
        if meta is None:
            log.info("catalog damaged (%s); recovering its readable rows", findings[0].message)
            known, exact = _known_image_ids(folder)  # before the vector file is rebuilt
            aside, recovered, lost = _recover_catalog(folder)
            images_lost, exact, folders = _images_lost(folder, known, exact, lost.get("images", 0))
            lost["images"] = images_lost
        rebuilt = _rebuild_flat(folder)
        removed = []
        for leftover in leftovers(folder):
            try:
                leftover.unlink()
                removed.append(leftover.name)
            except FileNotFoundError:
                pass
        _apply_policy(folder)
        staging = _drop_unfinished_reindex(folder.resolve())
    return RepairReport(str(folder), aside is not None, str(aside) if aside else None, recovered, lost, rebuilt,
                        tuple(removed), check_index(folder, files=False), swap, staging, images_lost, exact,
                        folders)


def _known_image_ids(folder: Path) -> tuple[set[int], bool]:
    """The image ids the damaged catalog held, as far as anything beside its images table knows:
    the newest vector file (its checksum verified), less the removals after it, and the ids the
    other tables refer to; with whether that is the whole set (the file was of the catalog's generation)."""
    from .vectors.file import VectorFileError, latest_vector_file, read_vector_file
    from .vectors.index import VectorIndex

    known: set[int] = set()
    exact = False
    db = connect_ro(folder / CATALOG_FILE)
    try:
        found = latest_vector_file(folder)
        if found is not None:
            try:
                import faiss

                payload, _ = read_vector_file(found[0], found[1])
                known.update(int(i) for i in VectorIndex(faiss.deserialize_index(payload), found[1]).ids())
                gone = _readable(db, "SELECT image_id FROM removals WHERE generation > ?", (found[1],))
                known.difference_update(gone)
                generation = _readable(db, "SELECT value FROM meta WHERE key = 'generation'", ())
                exact = [str(found[1])] == [str(g) for g in generation]
            except (OSError, VectorFileError, RuntimeError, MemoryError):
                pass
        for table in ("image_texts", "text_states", "image_tags", "captions", "ocr_lines", "ocr_states"):
            known.update(_readable(db, f'SELECT DISTINCT image_id FROM "{table}"', ()))
    finally:
        db.close()
    return known, exact


def _readable(db: sqlite3.Connection, sql: str, params: tuple[Any, ...]) -> list[Any]:
    """The first column of what ``sql`` reads, or nothing when the damage stops it."""
    try:
        return [r[0] for r in db.execute(sql, params)]
    except sqlite3.DatabaseError:
        return []


def _images_lost(folder: Path, known: set[int], exact: bool, unreadable: int) -> tuple[int, bool, tuple[str, ...]]:
    """How many images of ``known`` the recovered catalog lacks (at least ``unreadable``, the rows
    seen failing), whether that is exact, and the folders that cover the recovered images."""
    from .catalog.sqlite import decode_path

    db = sqlite3.connect(folder / CATALOG_FILE)
    try:
        rows = db.execute("SELECT id, path FROM images").fetchall()
    finally:
        db.close()
    missing = len(known - {r[0] for r in rows})
    if not exact:  # rows newer than the vector file are known only by the rowids that failed (gaps count too)
        missing = max(missing, unreadable)
    parents = sorted({os.path.dirname(decode_path(p or "")) for _, p in rows} - {""})
    covering: list[str] = []
    for parent in parents:  # sorted: a folder comes before the folders inside it
        if not covering or os.path.commonpath([covering[-1], parent]) != covering[-1]:
            covering.append(parent)
    return missing, exact, tuple(covering)


def _drop_unfinished_reindex(folder: Path) -> str | None:
    """Remove the new index an unfinished reindex left beside ``folder`` (its own files only; a
    folder holding anything else stays); returns its path when it was removed."""
    from .folder import remove_index_files
    from .swap import unfinished_reindex

    left = unfinished_reindex(folder)
    if left is None or left.mid_swap or not left.staging.is_dir():
        return None
    try:
        with WriterLock(left.staging):  # a reindex at work holds it
            pass
    except IndexLockedError:
        return None
    remaining = remove_index_files(left.staging)
    if remaining:
        log.warning("left %s in place: it holds files that are not an index's (%s)", left.staging,
                    ", ".join(remaining))
        return None
    return str(left.staging)


def _rebuild_flat(folder: Path) -> int:
    """Write an exact vector file from the catalog's embeddings; returns its vector count."""
    from .catalog.database import Catalog
    from .vectors.index import VectorIndex

    catalog = Catalog.open(folder)
    try:
        dim = int(catalog.read.meta()["dim"])
        factory = "IDMap2,Flat"
        vecs = VectorIndex.empty(dim, factory)
        for ids, chunk in catalog.read.embeddings_since(0, dim):
            vecs.upsert(ids, chunk)
        vecs.generation = catalog.read.generation()
        vecs.save(folder, catalog.read.meta().get("index_id", ""), catalog.read.state(vecs.generation))
        catalog.set_meta(faiss_factory=factory, faiss_nprobe="", faiss_built_at=str(vecs.ntotal), faiss_recall="")
        return vecs.ntotal
    finally:
        catalog.close()


def _apply_policy(folder: Path) -> None:
    """Rebuild the vector index as the type the recorded choice or the size policy wants, as the end
    of every indexing run does (``Index.optimize``); call under the writer lock."""
    from .catalog.database import Catalog
    from .folder import write_errors
    from .vector_store import VectorStore

    with write_errors(folder):
        catalog = Catalog.open(folder)
        try:
            VectorStore(folder, catalog, int(catalog.read.meta()["dim"])).save()
        finally:
            catalog.close()


# -- recovering a damaged catalog ------------------------------------------------------------


def _recover_catalog(folder: Path) -> tuple[Path, dict[str, int], dict[str, int]]:
    """Move the damaged catalog aside and build a fresh one from its readable rows.

    Returns where the damaged file now is, and per table the rows copied and lost.
    A failure puts the damaged file back: a failed repair changes nothing.
    """
    catalog = folder / CATALOG_FILE
    aside = _aside_name(folder)
    fresh = folder / f".{CATALOG_FILE}.{os.getpid()}.tmp"  # a name the index owns (cleaned up if left)
    _create_empty_catalog(fresh)
    # The WAL holds committed rows: it moves with the file it belongs to.
    _move_with_side_files(catalog, aside)
    try:
        recovered, lost = _copy_readable_rows(aside, fresh)
    except BaseException:
        _move_with_side_files(aside, catalog)
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(f"{fresh}{suffix}").unlink(missing_ok=True)
        raise
    os.replace(fresh, catalog)
    return aside, recovered, lost


def _aside_name(folder: Path) -> Path:
    """A new name beside the catalog for keeping its damaged copy."""
    aside = folder / f"{CATALOG_FILE}.damaged-{time.strftime('%Y%m%d-%H%M%S')}"
    n = 1
    while aside.exists():
        aside = aside.with_name(f"{aside.name.split('.damaged-')[0]}.damaged-{time.strftime('%Y%m%d-%H%M%S')}-{n}")
        n += 1
    return aside


def _create_empty_catalog(path: Path) -> None:
    """An empty catalog of the current schema at ``path`` (replacing leftovers of an earlier try)."""
    from sqlalchemy import create_engine

    from .catalog.schema import Base

    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    engine = create_engine(f"sqlite:///{path}")
    try:
        Base.metadata.create_all(engine)
    finally:
        engine.dispose()


def _move_with_side_files(src: Path, dst: Path) -> None:
    os.rename(src, dst)
    for suffix in _SIDE_FILES:
        if Path(f"{src}{suffix}").exists():
            os.rename(f"{src}{suffix}", f"{dst}{suffix}")


def _copy_readable_rows(damaged: Path, fresh: Path) -> tuple[dict[str, int], dict[str, int]]:
    """Copy every readable row of ``damaged`` into the empty catalog ``fresh``, make its meta records
    whole and rebuild its full-text index; returns (table -> rows copied, table -> rowids lost).

    Raises:
        IndexCorruptError: the model or dimension records cannot be read, or the result fails
            its integrity check.
    """
    recovered: dict[str, int] = {}
    lost: dict[str, int] = {}
    src = sqlite3.connect(damaged)
    dst = sqlite3.connect(fresh, isolation_level=None)
    try:
        dst.execute("BEGIN")
        tables = [r[0] for r in dst.execute("SELECT name FROM sqlite_master WHERE type = 'table' "
                                            "AND name NOT LIKE 'text_fts%' AND name NOT LIKE 'ocr_fts%' "
                                            "AND name NOT LIKE 'sqlite_%'")]
        for table in tables:
            wanted = _columns(dst, table)
            have = set(_columns(src, table))
            columns = [c for c in wanted if c in have]
            if not columns:
                continue
            recovered[table], lost[table] = _salvage(src, dst, table, columns)
        _restore_meta(dst)
        dst.execute("COMMIT")
        problems = [r[0] for r in dst.execute("PRAGMA integrity_check(5)")]
        if problems != ["ok"]:
            raise IndexCorruptError(f"the recovered catalog fails its integrity check: {problems[0]}")
    finally:
        src.close()
        dst.close()
    return recovered, lost


def _restore_meta(dst: sqlite3.Connection) -> None:
    """Infer a lost dimension from the embeddings, refuse a catalog whose model is unknown, start a new
    generation and rebuild the full-text index, in the open transaction on ``dst``."""
    from .catalog.migrations import SCHEMA_VERSION, refresh_text_index
    from .catalog.records import state_key

    meta = dict(dst.execute("SELECT key, value FROM meta").fetchall())
    if not str(meta.get("dim", "")).isdigit() or int(meta["dim"]) == 0:
        # The embeddings say what the dimension is (4 bytes per float32).
        row = dst.execute("SELECT length(embedding), count(*) FROM images GROUP BY 1 "
                          "ORDER BY 2 DESC LIMIT 1").fetchone()
        if row and row[0] and row[0] % 4 == 0:
            meta["dim"] = str(row[0] // 4)
            dst.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('dim', ?)", (meta["dim"],))
            dst.execute("DELETE FROM images WHERE length(embedding) != ?", (row[0],))
        else:
            meta.pop("dim", None)
    missing = [k for k in ("model", "pretrained", "dim") if k not in meta]
    if missing:
        raise IndexCorruptError(f"the catalog's {', '.join(missing)} record(s) cannot be read, so the index "
                                "cannot be recovered: index the photos again into a new index")
    top = dst.execute("SELECT max(generation) FROM images").fetchone()[0] or 0
    old = int(meta["generation"]) if str(meta.get("generation", "")).isdigit() else 0
    # A new generation: every vector file of the old catalog is now stale and is rebuilt.
    # The identity stays (a copy of this index elsewhere is still the same index); a lost one is new.
    identity = meta.get("index_id") or uuid.uuid4().hex
    generation = max(old, top) + 1
    for key, value in (("schema_version", str(SCHEMA_VERSION)), ("generation", str(generation)),
                       ("index_id", identity), (state_key(generation), uuid.uuid4().hex)):
        dst.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))
    # What hung off rows that were lost goes with them: re-indexing their files makes new rows.
    for table in ("image_texts", "text_states", "image_tags", "captions", "ocr_lines", "ocr_states"):
        if _columns(dst, table):
            dst.execute(f'DELETE FROM "{table}" WHERE image_id NOT IN (SELECT id FROM images)')
    refresh_text_index(dst.execute, None)
    if _columns(dst, "ocr_lines"):
        from .catalog.ocrindex import refresh_ocr_index

        refresh_ocr_index(dst.execute, None)


def _columns(db: sqlite3.Connection, table: str) -> list[str]:
    try:
        return [r[1] for r in db.execute(f'PRAGMA table_info("{table}")')]
    except sqlite3.DatabaseError:
        return []


def _rowid_ranges(db: sqlite3.Connection, table: str) -> tuple[int, int] | None:
    """The table's smallest and largest rowid; ``None`` when its b-tree's edge pages are unreadable."""
    try:
        lo, hi = db.execute(f'SELECT min(rowid), max(rowid) FROM "{table}"').fetchone()
        return int(lo or 0), int(hi or 0)
    except sqlite3.DatabaseError:
        return None


#: Without a readable rowid range, the scan goes on this far past the last readable row.
_SCAN_PAST = 100_000


def _salvage(src: sqlite3.Connection, dst: sqlite3.Connection, table: str, columns: list[str]) -> tuple[int, int]:
    """Copy every readable row of ``table``; returns (rows copied, rowids seen unreadable).

    Reads rowid ranges, halving a range that fails until single rows: a damaged page
    costs the rows stored on it.  The unreadable count is a lower bound of the rows lost: a
    damaged page can also hide rows without any error (:func:`_known_image_ids` counts the
    images).  Without a readable rowid range the scan ends :data:`_SCAN_PAST` rowids past
    the last readable row, and unreadable rowids beyond that row are not counted (they may
    never have held a row).
    """
    cols = ", ".join(f'"{c}"' for c in columns)
    marks = ", ".join("?" * (len(columns) + 1))
    bounds = _rowid_ranges(src, table)
    lo, hi = bounds if bounds is not None else (0, 1 << 40)
    copied = 0
    last_read = lo - 1
    unreadable: list[int] = []
    step = 1000
    stack = [(lo, min(lo + step - 1, hi))]
    while stack:
        a, b = stack.pop()
        if bounds is None and a > last_read + _SCAN_PAST:
            break
        if not stack and b < hi:  # the ranges are made as the scan goes: no list of a trillion
            stack.append((b + 1, min(b + step, hi)))
        try:
            rows = src.execute(f'SELECT rowid, {cols} FROM "{table}" WHERE rowid BETWEEN ? AND ?', (a, b)).fetchall()
        except sqlite3.DatabaseError:
            if a == b:
                unreadable.append(a)
            else:
                mid = (a + b) // 2
                stack += [(mid + 1, b), (a, mid)]
            continue
        if rows:
            # A stale copy of another page repeats rows: count those inserted, not those read.
            copied += max(0, dst.executemany(f'INSERT OR IGNORE INTO "{table}" (rowid, {cols}) VALUES ({marks})',
                                             rows).rowcount)
            last_read = max(last_read, max(int(r[0]) for r in rows))
    lost = len(unreadable) if bounds is not None else sum(1 for r in unreadable if r < last_read)
    return copied, lost
