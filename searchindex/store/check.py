"""``check``: find what is wrong with an index, without writing anything.

:func:`check_index` runs SQLite's ``integrity_check`` on the catalog and reads
its records; compares the vector file with the catalog (generation, dimension,
count, id set, and the vectors themselves: all of them for exact indexes, a
sample searched for itself for IVF ones); compares the catalog with the disk
(files missing, changed or unreadable since they were indexed); and lists
temporary files left by a killed writer.  It works on an index too damaged to
open.  Findings are typed (:class:`Finding`), so the CLI and other callers
format them as they like; :mod:`searchindex.store.repair` fixes what it finds.
"""

from __future__ import annotations

import fcntl
import os
import re
import shlex
import sqlite3
import stat
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import numpy as np

from ..errors import IndexCorruptError, IndexNotFoundError, IndexSchemaError
from ..fileio import clamp_int64
from .folder import INNER_SWAP_MARK
from .lock import LOCK_FILE

if TYPE_CHECKING:
    from .vectors.index import VectorIndex

__all__ = ["CATALOG_FILE", "CheckReport", "Finding", "catalog_findings", "check_index", "connect_ro", "leftovers"]

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
    area: str  # catalog, vectors, files, reindex, temporary
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




def connect_ro(path: Path) -> sqlite3.Connection:
    """A read-only connection that changes nothing on disk (no -shm, no checkpoint)."""
    writable = os.access(path.parent, os.W_OK)
    uri = f"file:{quote(str(path))}?mode=ro" if writable else f"file:{quote(str(path))}?immutable=1"
    return sqlite3.connect(uri, uri=True, timeout=5)


def catalog_findings(path: Path) -> tuple[list[Finding], dict[str, str] | None]:
    """integrity_check and the meta records; meta is None when the catalog cannot be used."""
    found: list[Finding] = []
    try:
        db = connect_ro(path)
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
        from .catalog.migrations import pending

        try:
            pending(db)  # the schema_version record: a number, not newer than this code, present if needed
        except (IndexCorruptError, IndexSchemaError) as exc:
            found.append(Finding("error", "catalog", str(exc)))
        except sqlite3.DatabaseError as exc:
            found.append(Finding("error", "catalog", f"the schema cannot be read: {exc}"))
    finally:
        db.close()
    from .catalog.sqlite import check_meta

    db = connect_ro(path)
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
    from .catalog.records import state_key
    from .vectors.file import VectorFileError, latest_vector_file, read_vector_file
    from .vectors.index import VectorIndex

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
        payload, header = read_vector_file(file, file_generation, meta.get("index_id") or None, dim,
                                           lambda g: meta.get(state_key(g)))
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


def _flat_compare(vi: VectorIndex, embeddings: Iterator[tuple[np.ndarray, np.ndarray]], name: str) -> list[Finding]:
    """Every stored vector against the catalog's embedding of the same id (exact indexes keep them exactly)."""
    bad = 0
    for ids, vecs in embeddings:
        stored = vi.vectors(ids)
        bad += int(np.count_nonzero(~np.all(np.abs(stored - vecs) <= 1e-5, axis=1)))
    if bad:
        return [Finding("error", "vectors", f"{name}: {bad} vectors differ from the catalog's embeddings",
                        count=bad)]
    return []


def _ivf_sample(vi: VectorIndex, embeddings: Iterator[tuple[np.ndarray, np.ndarray]], name: str) -> list[Finding]:
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
            advice = "the next `index` run of their folder updates the index"
            if what == "indexed files are missing":  # their folder may be gone too: index says "not a folder"
                gone = sorted({_gone_folder(p) for p in paths} - {None})  # type: ignore[type-var]
                if gone:
                    shown = " ".join(shlex.quote(str(g)) for g in gone[:3]) + (" ..." if len(gone) > 3 else "")
                    advice += ("; their folder no longer exists (renamed or moved?): index its new place first "
                               "(its images reuse their stored embeddings), then `searchindex index "
                               f"{shown} --gone` drops the old rows")
            out.append(Finding("warning", "files", f"{len(paths)} {what} ({advice})", count=len(paths),
                               paths=tuple(paths[:SHOWN])))
    return out


def _gone_folder(path: str) -> str | None:
    """The highest folder above ``path`` that no longer exists (``None`` when its folder does)."""
    parent = os.path.dirname(path)
    if os.path.isdir(parent):
        return None
    while not os.path.isdir(os.path.dirname(parent)) and os.path.dirname(parent) != parent:
        parent = os.path.dirname(parent)
    return parent


def _writer_active(folder: Path) -> bool:
    lock = folder / LOCK_FILE
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


def leftovers(folder: Path) -> list[Path]:
    """Temporary files of killed writers, and vector files superseded by a newer one."""
    from .vectors.file import latest_vector_file

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
    findings, meta = catalog_findings(catalog)
    images = vectors = None
    reindex = _reindex_findings(folder)
    if meta is not None:
        # Inside a reindex's folder swap, files kept in the index folder are in the staging folder
        # for now: not "missing" (repair carries them back).
        inner = reindex[1] and (folder / INNER_SWAP_MARK).exists()  # nothing but the index's files moves
        content, images, vectors = _content_findings(folder, meta, files and (inner or not reindex[1]))
        if inner:
            # Inside a file-by-file swap the vector file may already be the new index's: readers
            # rebuild the vectors from the catalog until the swap is finished, nothing is damaged.
            content = [replace(f, severity="warning", message=f"{f.message} (until the interrupted swap is "
                               "finished)") if f.area == "vectors" and f.severity == "error" else f for f in content]
        findings += content
    findings += reindex[0]
    findings += _temporary_findings(folder)
    return CheckReport(str(folder), images, vectors, tuple(findings))


def _content_findings(folder: Path, meta: dict[str, str],
                      files: bool) -> tuple[list[Finding], int | None, int | None]:
    """What the vector file and (``files``) the disk say about the catalog's rows; with the
    numbers of images and vectors counted (``None`` where they could not be read)."""
    found: list[Finding] = []
    images = vectors = None
    try:
        db = connect_ro(folder / CATALOG_FILE)
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
            found += vector_findings
            from .videocheck import video_findings

            found += [Finding(severity, "catalog", message, count=n)
                      for severity, message, n in video_findings(db, dim)]
            if files:
                from .catalog.sqlite import decode_path

                rows = db.execute("SELECT path, size, mtime_ns FROM images").fetchall()
                found += _file_findings([(decode_path(p or ""), s, m) for p, s, m in rows])
        finally:
            db.close()
    except sqlite3.DatabaseError as exc:
        found.append(Finding("error", "catalog", f"reading the catalog failed: {exc}"))
    return found, images, vectors


def _reindex_findings(folder: Path) -> tuple[list[Finding], bool]:
    """What an interrupted reindex left beside the index; and whether it stopped inside its folder swap."""
    from .swap import unfinished_reindex

    left = unfinished_reindex(folder.resolve())
    if left is None:
        return [], False
    if left.mid_swap and left.staging.parent == folder.resolve():
        return [Finding("warning", "reindex", "a reindex was interrupted inside its file-by-file swap (the index "
                        "folder is a mount point): the index may be read with its vectors rebuilt from the catalog "
                        "until `searchindex repair` (or the same `searchindex reindex` again) finishes the swap",
                        paths=(str(folder / INNER_SWAP_MARK),))], True
    if left.mid_swap:
        return [Finding("warning", "reindex", f"a reindex was interrupted inside its folder swap: {len(left.stray)} "
                        f"files or folders kept in the index folder are in {left.staging} for now; "
                        "`searchindex repair` (or the same `searchindex reindex` again) puts them back and finishes "
                        "the swap", count=len(left.stray),
                        paths=tuple(str(left.staging / n) for n in left.stray[:SHOWN]))], True
    if _writer_active(folder):
        return [Finding("warning", "reindex", f"a writer is running; if it is a reindex, its new index is being "
                        f"built in {left.staging}", paths=(str(left.staging),))], False
    what = f" (and {len(left.stray)} other files: {', '.join(left.stray[:3])})" if left.stray else ""
    return [Finding("warning", "reindex", f"an unfinished reindex left its new index in {left.staging}{what}: "
                    "run the same `searchindex reindex` again to finish it, or `searchindex repair` to remove "
                    "it (only the index's own files)", paths=(str(left.staging),))], False


def _temporary_findings(folder: Path) -> list[Finding]:
    if _writer_active(folder):
        return [Finding("warning", "temporary", "a writer is running: temporary files were not checked")]
    left = leftovers(folder)
    if not left:
        return []
    return [Finding("warning", "temporary", f"{len(left)} temporary or superseded files left by an "
                                            "interrupted writer (`repair` removes them)",
                    count=len(left), paths=tuple(str(p) for p in left[:SHOWN]))]
