"""The cache folder every index shares, and the key that names a model's weights in it (no torch).

Exported ONNX towers (:mod:`.onnx`), the int8-vs-fp32 check of each model
(:mod:`.encoders`) and the query-vector cache of each index are keyed by
:func:`tower_key`.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .spec import ModelSpec

__all__ = ["KEY_FORMAT", "cache_root", "package_version", "tower_key", "write_atomic"]

#: Bump when exported files change meaning: files under older keys are then ignored.
KEY_FORMAT = 3  # 3: text towers take any token count


def cache_root() -> Path:
    """The cache shared by every index: ``$SEARCHINDEX_CACHE`` or the user cache folder."""
    root = os.environ.get("SEARCHINDEX_CACHE")
    if root:
        return Path(root).expanduser()
    import platformdirs

    return platformdirs.user_cache_path("searchindex")


def write_atomic(path: Path, write: Callable[[str], object]) -> None:
    """Write ``path`` through a temporary file in the same folder (``write(tmp_name)``), then rename it
    over ``path``: readers, other processes included, see the old file or the whole new one."""
    import tempfile  # not at import time: a cold search reads the cache but writes nothing

    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def package_version(dist: str) -> str:
    """The installed version of the distribution ``dist`` (``"-"`` when it is not installed): what a
    cached graph records about the code that made it."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "-"


def tower_key(spec: ModelSpec) -> str:
    """A name for the weights of ``spec`` that needs no model loaded.

    Local weights are named by their SHA-256, published ones by their tag.
    Random weights come from a seeded initialisation whose result depends on the
    torch and open_clip versions, so those are part of their key.
    """
    ident: dict[str, Any] = {"format": KEY_FORMAT, "model": spec.model, "pretrained": spec.pretrained,
                             "sha256": spec.checkpoint_sha256}
    if spec.pretrained == "none":
        ident["versions"] = [package_version("torch"), package_version("open_clip_torch")]
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:32]
