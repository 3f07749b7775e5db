"""``check`` and ``repair``: find what is wrong with an index, and recover what can be recovered.

:func:`check_index` never writes.  It runs SQLite's ``integrity_check`` on the
catalog and reads its records; compares the vector file with the catalog
(generation, dimension, count, id set, and the vectors themselves: all of them
for exact indexes, a sample searched for itself for IVF ones); compares the
catalog with the disk (files missing, changed or unreadable since they were
indexed); and lists temporary files left by a killed writer.

:func:`repair_index` takes the writer lock, then:

- a damaged catalog is moved aside (``catalog.sqlite.damaged-<time>``, with its
  ``-wal`` file: kept, never deleted) and every row that can still be read is
  copied into a fresh catalog of the current schema, table by table and rowid
  range by rowid range, so one bad page costs the rows on it and no more; the
  full-text index is rebuilt from the recovered rows and the new file is checked
  before it is put in place;
- the vector file is rebuilt from the catalog;
- temporary files of killed writers and superseded vector files are removed:
  only names the index itself writes, inside the index folder.

It never touches the photos.  Findings are typed (:class:`Finding`), so the CLI
and other callers format them as they like.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import sqlite3
import stat
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np

from .errors import IndexCorruptError, IndexNotFoundError, IndexSchemaError
from .fileio import clamp_int64

__all__ = ["CheckReport", "Finding", "RepairReport", "check_index", "repair_index"]

log = logging.getLogger(__name__)

CATALOG_FILE = "catalog.sqlite"
#: Paths listed per finding (the counts are always complete).
SHOWN = 10
#: IVF indexes: vectors searched for themselves; more than this share missing from their own top 10 is damage.
IVF_SAMPLE = 256
IVF_MISS_SHARE = 0.2
_VECTOR_RE = re.compile(r"^vectors-(\d{12})\.faiss$")
# Names the index writes under a temporary name (Catalog.create, VectorIndex.save, repair).
_TEMP_RE = re.compile(r"^\.(catalog\.sqlite|vectors-\d{12}\.faiss)\..*\.tmp(-wal|-shm|-journal)?$")


@dataclass(frozen=True)
class Finding:
    """One thing ``check`` found.  ``severity``: ``error`` (damage: run ``repair``) or
    ``warning`` (out of date or left over: the next ``index`` run, or ``repair``, deals with it)."""

    severity: str
    area: str  # catalog, vectors, files, temporary
    message: str
    count: int = 1
    paths: tuple[str, ...] = ()


@dataclass(frozen=True)
class CheckReport:
    """What :func:`check_index` found; ``ok`` when there is no error."""

    index: str
    images: int | None  # rows in the catalog, when it could be read
    vectors: int | None  # vectors in the vector file, when it could be read
    findings: tuple[Finding, ...] = ()

    @property
    def ok(self) -> bool:
        return not any(f.severity == "error" for f in self.findings)

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "ok": self.ok, "images": self.images, "vectors": self.vectors,
                "findings": [asdict(f) for f in self.findings]}


@dataclass(frozen=True)
class RepairReport:
    """What :func:`repair_index` did, and the check of the result."""

    index: str
    catalog_recovered: bool  # the catalog was damaged and rebuilt from what could be read
    damaged_copy: str | None  # where the damaged catalog was kept
    rows_recovered: dict[str, int] = field(default_factory=dict)  # table -> rows copied
    rows_lost: dict[str, int] = field(default_factory=dict)  # table -> rowids that could not be read
    vectors_rebuilt: int = 0
    removed: tuple[str, ...] = ()  # temporary or superseded files of the index removed
    check: CheckReport | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["check"] = self.check.to_dict() if self.check is not None else None
        return data


# -- check ---------------------------------------------------------------------


def _connect_ro(path: Path) -> sqlite3.Connection:
    """A read-only connection that changes nothing on disk (no -shm, no checkpoint)."""
    writable = os.access(path.parent, os.W_OK)
    uri = f"file:{quote(str(path))}?mode=ro" if writable else f"file:{quote(str(path))}?immutable=1"
    return sqlite3.connect(uri, uri=True, timeout=5)


def _catalog_findings(path: Path) -> tuple[list[Finding], dict[str, str] | None]:
    """integrity_check and the meta records; meta is None when the catalog cannot be used."""
    found: list[Finding] = []
    try:
        db = _connect_ro(path)
    except sqlite3.Error as exc:
        return [Finding("error", "catalog", f"cannot open {path}: {exc}")], None
    try:
        try:
            rows = [r[0] for r in db.execute("PRAGMA integrity_check(20)")]
        except sqlite3.DatabaseError as exc:
            return [Finding("error", "catalog", f"{path} is not a readable SQLite database: {exc}")], None
        if rows != ["ok"]:
            lines = [line for row in rows for line in str(row).splitlines() if not line.startswith("***")]
            found.append(Finding("error", "catalog", f"SQLite integrity check failed: {'; '.join(lines[:3])}"
                                 + (f" (and {len(lines) - 3} more problems)" if len(lines) > 3 else ""),
                                 count=len(lines)))
        try:
            meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        except sqlite3.DatabaseError as exc:
            found.append(Finding("error", "catalog", f"the meta table cannot be read: {exc}"))
            return found, None
        from .store.migrations import pending

        try:
            pending(db)  # the schema_version record: a number, not newer than this code, present if needed
        except (IndexCorruptError, IndexSchemaError) as exc:
            found.append(Finding("error", "catalog", str(exc)))
        except sqlite3.DatabaseError as exc:
            found.append(Finding("error", "catalog", f"the schema cannot be read: {exc}"))
    finally:
        db.close()
    from .store.schema import check_meta

    db = _connect_ro(path)
    try:
        check_meta(db)
    except IndexCorruptError as exc:
        found.append(Finding("error", "catalog", str(exc)))
    finally:
        db.close()
    if any(f.severity == "error" for f in found):
        return found, None
    return found, meta


def _vector_findings(folder: Path, meta: dict[str, str], ids: np.ndarray,
                     embeddings: Iterator[tuple[np.ndarray, np.ndarray]]) -> tuple[list[Finding], int | None]:
    from .store.vector_file import VectorFileError, latest_vector_file, read_vector_file
    from .store.vectors import VectorIndex

    found: list[Finding] = []
    latest = latest_vector_file(folder)
    generation, dim = int(meta.get("generation") or 0), int(meta["dim"])
    if latest is None:
        if len(ids):
            found.append(Finding("warning", "vectors", "no vector file: it is rebuilt from the catalog when the "
                                                       "index is next opened"))
        return found, None
    file, file_generation = latest
    if file_generation > generation:
        found.append(Finding("error", "vectors", f"{file.name} is from generation {file_generation}, newer than "
                                                 f"the catalog's {generation}: it belongs to another catalog"))
        return found, None
    try:
        import faiss

        # The header check the index itself makes on open (identity, generation, dimension, checksum).
        payload, header = read_vector_file(file, file_generation, meta.get("index_id") or None, dim)
        vi = VectorIndex(faiss.deserialize_index(payload), file_generation)
    except VectorFileError as exc:
        severity = "warning" if "older searchindex" in str(exc) and _plain_faiss(file) else "error"
        found.append(Finding(severity, "vectors", f"{file.name} cannot be used: {exc} (it is rebuilt from the "
                                                  "catalog when the index is next opened; `repair` does it now)",
                             paths=(str(file),)))
        return found, None
    except (OSError, RuntimeError, MemoryError) as exc:
        detail = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        found.append(Finding("error", "vectors", f"{file.name} cannot be read ({detail})", paths=(str(file),)))
        return found, None
    if vi.ntotal != header["count"]:
        found.append(Finding("error", "vectors", f"{file.name} holds {vi.ntotal} vectors, its header says "
                                                 f"{header['count']}"))
        return found, vi.ntotal
    if vi.dim != dim:
        found.append(Finding("error", "vectors", f"{file.name} holds {vi.dim}-d vectors, the catalog {dim}-d"))
        return found, vi.ntotal
    if file_generation < generation:
        found.append(Finding("warning", "vectors", f"{file.name} is from generation {file_generation}, the "
                                                   f"catalog is at {generation}: it is caught up when next opened"))
        return found, vi.ntotal
    stored = vi.ids()
    if len(stored) != len(ids) or not np.array_equal(stored, ids):
        extra = np.setdiff1d(stored, ids).size
        missing = np.setdiff1d(ids, stored).size
        found.append(Finding("error", "vectors", f"{file.name} holds {len(stored)} vectors for {len(ids)} catalog "
                                                 f"rows ({missing} rows without a vector, {extra} vectors without "
                                                 "a row)", count=missing + extra))
        return found, vi.ntotal
    if "IVF" in vi.factory:
        if (meta.get("faiss_nprobe") or "").isdigit():
            vi.nprobe = int(meta["faiss_nprobe"])  # the tuned setting searches use
        found += _ivf_sample(vi, embeddings, file.name)
    else:
        found += _flat_compare(vi, embeddings, file.name)
    return found, vi.ntotal


def _plain_faiss(file: Path) -> bool:
    """True for a vector file as searchindex wrote it before files had a header (FAISS data only)."""
    import faiss

    try:
        faiss.read_index(str(file))
    except (RuntimeError, MemoryError):
        return False
    return True


def _flat_compare(vi: Any, embeddings: Iterator[tuple[np.ndarray, np.ndarray]], name: str) -> list[Finding]:
    """Every stored vector against the catalog's embedding of the same id (exact indexes keep them exactly)."""
    bad = 0
    for ids, vecs in embeddings:
        stored = vi.vectors(ids)
        bad += int(np.count_nonzero(~np.all(np.abs(stored - vecs) <= 1e-5, axis=1)))
    if bad:
        return [Finding("error", "vectors", f"{name}: {bad} vectors differ from the catalog's embeddings",
                        count=bad)]
    return []


def _ivf_sample(vi: Any, embeddings: Iterator[tuple[np.ndarray, np.ndarray]], name: str) -> list[Finding]:
    """IVF codes are lossy: search a sample of catalog embeddings and expect each id in its own top 10."""
    ids, vecs = next(embeddings, (np.zeros(0, np.int64), None))
    if vecs is None or not len(ids):
        return []
    rng = np.random.default_rng(0)
    pick = rng.choice(len(ids), min(IVF_SAMPLE, len(ids)), replace=False)
    misses = 0
    for row in pick:
        _, found_ids = vi.top_k(vecs[row], 10)
        misses += int(ids[row] not in set(int(i) for i in found_ids))
    if misses > IVF_MISS_SHARE * len(pick):
        return [Finding("error", "vectors", f"{name}: {misses} of {len(pick)} sampled vectors are not found "
                                            "near their own catalog embedding", count=misses)]
    return []


def _file_findings(rows: list[tuple[str, int, int]]) -> list[Finding]:
    missing: list[str] = []
    changed: list[str] = []
    unreadable: list[str] = []
    for path, size, mtime_ns in rows:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            missing.append(path)
            continue
        except OSError:
            unreadable.append(path)
            continue
        if not stat.S_ISREG(st.st_mode) or not os.access(path, os.R_OK):
            unreadable.append(path)
        elif st.st_size != size or clamp_int64(st.st_mtime_ns) != mtime_ns:
            changed.append(path)
    out = []
    for paths, what in ((missing, "indexed files are missing"), (changed, "indexed files changed since"),
                        (unreadable, "indexed files are unreadable or no longer regular files")):
        if paths:
            out.append(Finding("warning", "files", f"{len(paths)} {what} (the next `index` run of their folder "
                                                   "updates the index)", count=len(paths),
                               paths=tuple(paths[:SHOWN])))
    return out


def _writer_active(folder: Path) -> bool:
    lock = folder / "writer.lock"
    try:
        fd = os.open(lock, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def _leftovers(folder: Path) -> list[Path]:
    """Temporary files of killed writers, and vector files superseded by a newer one."""
    from .store.vector_file import latest_vector_file

    latest = latest_vector_file(folder)
    out = []
    for entry in os.scandir(folder):
        m = _VECTOR_RE.match(entry.name)
        if _TEMP_RE.match(entry.name) or (m and latest is not None and int(m.group(1)) < latest[1]):
            out.append(Path(entry.path))
    return sorted(out)


def check_index(path: str | os.PathLike[str], *, files: bool = True) -> CheckReport:
    """Check the index at ``path`` without changing anything (see the module docstring).

    Args:
        files: also compare the catalog with the disk (a stat per indexed file).

    Raises:
        IndexNotFoundError: ``path`` holds no catalog.
    """
    folder = Path(path).expanduser()
    catalog = folder / CATALOG_FILE
    if not catalog.is_file():
        raise IndexNotFoundError(f"no index at {folder} (no {CATALOG_FILE})")
    findings, meta = _catalog_findings(catalog)
    images = vectors = None
    if meta is not None:
        try:
            db = _connect_ro(catalog)
            try:
                ids = np.array(sorted(r[0] for r in db.execute("SELECT id FROM images")), dtype=np.int64)
                images = len(ids)
                dim = int(meta["dim"])

                def embeddings() -> Iterator[tuple[np.ndarray, np.ndarray]]:
                    cur = db.execute("SELECT id, embedding FROM images ORDER BY id")
                    while chunk := cur.fetchmany(5000):
                        good = [(i, b) for i, b in chunk if isinstance(b, bytes) and len(b) == 4 * dim]
                        yield (np.array([i for i, _ in good], dtype=np.int64),
                               np.frombuffer(b"".join(b for _, b in good), dtype=np.float32).reshape(-1, dim))

                vector_findings, vectors = _vector_findings(folder, meta, ids, embeddings())
                findings += vector_findings
                if files:
                    from .store.schema import FsPath

                    rows = db.execute("SELECT path, size, mtime_ns FROM images").fetchall()
                    decode = FsPath().process_result_value
                    findings += _file_findings([(decode(p, None) or "", s, m) for p, s, m in rows])
            finally:
                db.close()
        except sqlite3.DatabaseError as exc:
            findings.append(Finding("error", "catalog", f"reading the catalog failed: {exc}"))
    if _writer_active(folder):
        findings.append(Finding("warning", "temporary", "a writer is running: temporary files were not checked"))
    else:
        left = _leftovers(folder)
        if left:
            findings.append(Finding("warning", "temporary", f"{len(left)} temporary or superseded files left by an "
                                                            "interrupted writer (`repair` removes them)",
                                    count=len(left), paths=tuple(str(p) for p in left[:SHOWN])))
    return CheckReport(str(folder), images, vectors, tuple(findings))


# -- repair --------------------------------------------------------------------


def _rowid_ranges(db: sqlite3.Connection, table: str) -> tuple[int, int]:
    try:
        lo, hi = db.execute(f'SELECT min(rowid), max(rowid) FROM "{table}"').fetchone()
        return int(lo or 0), int(hi or 0)
    except sqlite3.DatabaseError:
        return 0, 10_000_000  # the b-tree's edge pages are damaged: scan a generous range


def _salvage(src: sqlite3.Connection, dst: sqlite3.Connection, table: str, columns: list[str]) -> tuple[int, int]:
    """Copy every readable row of ``table``; returns (rows copied, rowids in unreadable ranges).

    Reads rowid ranges, halving a range that fails until single rows: a damaged page
    costs the rows stored on it.  A run of unreadable ranges past the last row ends the scan.
    """
    cols = ", ".join(f'"{c}"' for c in columns)
    marks = ", ".join("?" * (len(columns) + 1))
    lo, hi = _rowid_ranges(src, table)
    copied = lost = 0
    step = 1000
    stack = [(a, min(a + step - 1, hi)) for a in range(lo, hi + 1, step)][::-1]
    while stack:
        a, b = stack.pop()
        try:
            rows = src.execute(f'SELECT rowid, {cols} FROM "{table}" WHERE rowid BETWEEN ? AND ?', (a, b)).fetchall()
        except sqlite3.DatabaseError:
            if a == b:
                lost += 1
            else:
                mid = (a + b) // 2
                stack += [(mid + 1, b), (a, mid)]
            continue
        if rows:
            dst.executemany(f'INSERT OR IGNORE INTO "{table}" (rowid, {cols}) VALUES ({marks})', rows)
            copied += len(rows)
    return copied, lost


def _columns(db: sqlite3.Connection, table: str) -> list[str]:
    try:
        return [r[1] for r in db.execute(f'PRAGMA table_info("{table}")')]
    except sqlite3.DatabaseError:
        return []


def _recover_catalog(folder: Path) -> tuple[Path, dict[str, int], dict[str, int]]:
    """Move the damaged catalog aside and build a fresh one from its readable rows."""
    from sqlalchemy import create_engine

    from .store.migrations import SCHEMA_VERSION, refresh_text_index
    from .store.schema import Base

    catalog = folder / CATALOG_FILE
    aside = folder / f"{CATALOG_FILE}.damaged-{time.strftime('%Y%m%d-%H%M%S')}"
    n = 1
    while aside.exists():
        aside = aside.with_name(f"{aside.name.split('.damaged-')[0]}.damaged-{time.strftime('%Y%m%d-%H%M%S')}-{n}")
        n += 1
    fresh = folder / f".{CATALOG_FILE}.{os.getpid()}.tmp"  # a name the index owns (cleaned up if left)
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{fresh}{suffix}").unlink(missing_ok=True)
    engine = create_engine(f"sqlite:///{fresh}")
    try:
        Base.metadata.create_all(engine)
    finally:
        engine.dispose()
    # The WAL holds committed rows: it moves with the file it belongs to.
    os.rename(catalog, aside)
    for suffix in ("-wal", "-shm"):
        if Path(f"{catalog}{suffix}").exists():
            os.rename(f"{catalog}{suffix}", f"{aside}{suffix}")
    recovered: dict[str, int] = {}
    lost: dict[str, int] = {}
    try:
        src = sqlite3.connect(aside)
        dst = sqlite3.connect(fresh, isolation_level=None)
        try:
            dst.execute("BEGIN")
            tables = [r[0] for r in dst.execute("SELECT name FROM sqlite_master WHERE type = 'table' "
                                                "AND name NOT LIKE 'text_fts%' AND name NOT LIKE 'sqlite_%'")]
            for table in tables:
                wanted = _columns(dst, table)
                have = set(_columns(src, table))
                columns = [c for c in wanted if c in have]
                if not columns:
                    continue
                recovered[table], lost[table] = _salvage(src, dst, table, columns)
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
            for key, value in (("schema_version", str(SCHEMA_VERSION)), ("generation", str(max(old, top) + 1)),
                               ("index_id", identity)):
                dst.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))
            refresh_text_index(dst.execute, None)
            dst.execute("COMMIT")
            problems = [r[0] for r in dst.execute("PRAGMA integrity_check(5)")]
            if problems != ["ok"]:
                raise IndexCorruptError(f"the recovered catalog fails its integrity check: {problems[0]}")
        finally:
            src.close()
            dst.close()
    except BaseException:
        # Put the damaged file back where it was: a failed repair changes nothing.
        os.rename(aside, catalog)
        for suffix in ("-wal", "-shm"):
            if Path(f"{aside}{suffix}").exists():
                os.rename(f"{aside}{suffix}", f"{catalog}{suffix}")
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(f"{fresh}{suffix}").unlink(missing_ok=True)
        raise
    os.replace(fresh, catalog)
    return aside, recovered, lost


def repair_index(path: str | os.PathLike[str]) -> RepairReport:
    """Repair the index at ``path`` (see the module docstring) and check the result.

    Raises:
        IndexNotFoundError: ``path`` holds no catalog.
        IndexLockedError: another process is writing to the index.
        IndexCorruptError: too little of the catalog is readable to recover it.
    """
    from .store.catalog import Catalog
    from .store.lock import WriterLock
    from .store.vectors import VectorIndex

    folder = Path(path).expanduser()
    if not (folder / CATALOG_FILE).is_file():
        raise IndexNotFoundError(f"no index at {folder} (no {CATALOG_FILE})")
    with WriterLock(folder):
        findings, meta = _catalog_findings(folder / CATALOG_FILE)
        aside = None
        recovered: dict[str, int] = {}
        lost: dict[str, int] = {}
        if meta is None:
            log.info("catalog damaged (%s); recovering its readable rows", findings[0].message)
            aside, recovered, lost = _recover_catalog(folder)
        catalog = Catalog.open(folder)
        try:
            dim = int(catalog.meta()["dim"])
            factory = "IDMap2,Flat"
            vecs = VectorIndex.empty(dim, factory)
            for ids, chunk in catalog.images.embeddings_since(0, dim):
                vecs.upsert(ids, chunk)
            vecs.generation = catalog.generation()
            vecs.save(folder, catalog.meta().get("index_id", ""))
            catalog.set_meta(faiss_factory=factory, faiss_nprobe="", faiss_built_at=str(vecs.ntotal),
                             faiss_recall="")
            rebuilt = vecs.ntotal
        finally:
            catalog.close()
        removed = []
        for leftover in _leftovers(folder):
            try:
                leftover.unlink()
                removed.append(leftover.name)
            except FileNotFoundError:
                pass
    # The policy's index type (IVF for large collections) is built as by any indexing run.
    from .index import Index

    with Index.open(folder) as index:
        index.optimize()
    return RepairReport(str(folder), aside is not None, str(aside) if aside else None, recovered, lost, rebuilt,
                        tuple(removed), check_index(folder, files=False))
