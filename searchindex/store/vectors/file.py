"""The vector file: the FAISS index of a catalog generation, with a header that ties it to its catalog.

``vectors-<generation>.faiss`` starts with :data:`VECTOR_MAGIC` and a JSON header
line: the index's identity (the catalog's ``index_id``), generation, the random
token the catalog recorded for that generation (``state``: two copies of one index
share identity and generation numbers once they diverge, never this), dimension,
vector count and the SHA-256 of the FAISS data that follows.  A file is written
under a temporary name and renamed into place, so a reader sees either the old
complete file or the new complete file, never a partial one; older generations
are deleted afterwards.  A damaged file, or one from another index, is never used.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["VECTOR_MAGIC", "VectorFileError", "latest_vector_file", "read_vector_file", "write_vector_file"]

_FILE_RE = re.compile(r"^vectors-(\d{12})\.faiss$")


def latest_vector_file(folder: Path) -> tuple[Path, int] | None:
    """The newest saved vector file in ``folder`` and its generation, if any."""
    best: tuple[Path, int] | None = None
    for entry in os.scandir(folder):
        m = _FILE_RE.match(entry.name)
        if m and (best is None or int(m.group(1)) > best[1]):
            best = (Path(entry.path), int(m.group(1)))
    return best


#: The first bytes of a vector file; a JSON header line follows, then the FAISS data.
VECTOR_MAGIC = b"searchindex-vectors 1\n"


class VectorFileError(Exception):
    """A vector file that does not belong to, or does not match, its catalog (the message says how)."""


def read_vector_file(path: Path, generation: int, index_id: str | None = None,
                     dim: int | None = None, state: Callable[[int], str | None] | None = None,
                     ) -> tuple[np.ndarray, dict[str, Any]]:
    """The FAISS data of a vector file and its header, once both are checked.

    ``state``: the catalog's token of a generation (``CatalogReader.state``); when given,
    the file's must be the catalog's token of the file's generation.

    Raises:
        VectorFileError: no header (an older searchindex wrote it), a checksum that
            does not match (the file was damaged), or an identity, generation or
            dimension other than expected.
        OSError: the file cannot be read.
    """
    with open(path, "rb") as fh:
        head = fh.read(len(VECTOR_MAGIC))
        if head != VECTOR_MAGIC:
            raise VectorFileError("no identity header (written by an older searchindex, or not a vector file)")
        try:
            raw = json.loads(fh.readline(4096))
            header = {k: raw[k] for k in ("index_id", "generation", "dim", "count", "sha256")}
            header["state"] = raw.get("state")  # absent in files of earlier versions
        except (ValueError, KeyError, TypeError) as exc:
            raise VectorFileError("damaged header") from exc
        payload = np.frombuffer(fh.read(), dtype=np.uint8)
    if hashlib.sha256(payload.data).hexdigest() != header["sha256"]:
        raise VectorFileError("checksum mismatch: the file is damaged")
    if index_id is not None and header["index_id"] != index_id:
        raise VectorFileError(f"it belongs to another index ({header['index_id'] or 'no id'}, not {index_id})")
    if header["generation"] != generation:
        raise VectorFileError(f"its header says generation {header['generation']}, its name {generation}")
    if dim is not None and header["dim"] != dim:
        raise VectorFileError(f"{header['dim']}-d vectors, the catalog's are {dim}-d")
    if state is not None and header["state"] != state(generation):
        raise VectorFileError(f"it reflects another state of generation {generation} than this catalog's "
                              "(a copy of this index that changed apart from it)")
    return payload, header


def write_vector_file(folder: Path, payload: np.ndarray, *, index_id: str, generation: int, dim: int,
                      count: int, state: str | None = None) -> Path:
    """Write serialized FAISS data ``payload`` atomically as ``vectors-<generation>.faiss``; drop older files."""
    final = folder / f"vectors-{generation:012d}.faiss"
    tmp = folder / f".{final.name}.{os.getpid()}.tmp"
    for leftover in folder.glob(".vectors-*.tmp"):  # of a killed writer (there is one writer at a time)
        leftover.unlink(missing_ok=True)
    try:
        header = {"index_id": index_id, "generation": generation, "dim": dim, "count": count,
                  "sha256": hashlib.sha256(payload.data).hexdigest(), "state": state}
        with open(tmp, "wb") as fh:
            fh.write(VECTOR_MAGIC + json.dumps(header).encode() + b"\n")
            fh.write(payload.data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()
    for entry in os.scandir(folder):
        m = _FILE_RE.match(entry.name)
        if m and int(m.group(1)) < generation:
            try:
                os.unlink(entry.path)
            except FileNotFoundError:
                pass
    return final
