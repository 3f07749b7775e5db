"""Typed exceptions raised by the library.  The CLI turns them into messages."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path


class SearchIndexError(Exception):
    """Base class of every error this package raises on purpose."""


class IndexNotFoundError(SearchIndexError):
    """No index exists at the given path."""


class IndexExistsError(SearchIndexError):
    """An index already exists where a new one was to be created."""


class IndexFolderError(SearchIndexError):
    """A folder cannot hold a new index: it holds other files (an index needs a folder of its own)."""


class ModelError(SearchIndexError):
    """A model cannot be used: unknown name, unreachable weights, bad checkpoint."""


class UnknownModelError(ModelError):
    """The model name is neither a built-in searchindex model nor an open_clip architecture."""


class WeightsUnavailableError(ModelError):
    """Pretrained weights could not be found or downloaded."""


class ModelMismatchError(ModelError):
    """An index was opened or extended with a model other than the one it was built with."""


class IndexLockedError(SearchIndexError):
    """Another process is writing to the index."""


class IndexWriteError(SearchIndexError):
    """The index could not be written (disk full, read-only folder, ...); nothing was lost."""


class IndexSchemaError(SearchIndexError):
    """The catalog's schema is newer than this code, or old and cannot be upgraded here."""


class IndexCorruptError(SearchIndexError):
    """An index file is damaged (the catalog is not a readable SQLite database, or its records
    contradict each other); ``searchindex check`` tells more, ``searchindex repair`` recovers."""


class FolderNotFoundError(SearchIndexError):
    """A folder to index does not exist or is not a directory."""


class FolderExistsError(SearchIndexError):
    """A folder to forget (``Index.forget_folder``) still exists: index it instead."""


class PathTypeError(SearchIndexError, TypeError):
    """An argument that names files or folders is not a path (``str``, ``bytes`` or ``os.PathLike``),
    nor a collection of them where one is accepted."""


class QueryError(SearchIndexError):
    """A query cannot be run (empty text, unreadable query image, ...)."""


class ImageDecodeError(SearchIndexError):
    """A file could not be decoded as an image; ``reason`` is a short, stable description."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class IndexTypeError(SearchIndexError):
    """A FAISS index type (factory string) that cannot be built or used for an index."""


class MissingExtraError(SearchIndexError):
    """An optional feature's dependencies are not installed; the message says how to add the extra.

    ``MissingExtraError("captioning needs transformers", extra="caption")`` ends the message
    with :func:`install_hint` for the way searchindex was installed.  A message that already
    spells ``pip install 'searchindex[X]'`` gets that part replaced by the same hint, so every
    raise site speaks as the installation does.
    """

    def __init__(self, message: str, extra: str | None = None) -> None:
        if extra is not None:
            message = f"{message}: {install_hint(extra)}"
        else:
            message = _PIP_HINT.sub(lambda m: install_hint(m.group(1)), message)
        super().__init__(message)
        self.extra = extra


class ParameterError(QueryError):
    """A search parameter has a bad value; ``param`` names it as the CLI does (``-k``, ``--threshold``)."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class NotFoundError(SearchIndexError):
    """Something asked for by id or name is not in the index (an image id, a concept name)."""


class EngineError(SearchIndexError):
    """An execution engine for indexing (a Ray cluster) cannot be started or reached."""


class EmbeddingFileError(SearchIndexError):
    """An embedding file to import (or a folder to export into) cannot be used."""


_PIP_HINT = re.compile(r"pip install '?searchindex\[([a-z0-9_-]+)\]'?")


def install_hint(extra: str, *, prefix: str | os.PathLike[str] | None = None,
                 package_dir: str | os.PathLike[str] | None = None,
                 direct_url: str | None = None) -> str:
    """How to add the optional ``extra`` to this installation of searchindex, as one command.

    - pipx (``sys.prefix`` is a ``pipx/venvs/NAME`` folder): ``pipx inject NAME`` with the
      extra's requirements, since pipx keeps each application in an environment of its own;
    - a checkout (an editable install, or the package imported from a source tree):
      ``pip install -e '.[extra]'`` in that folder;
    - else ``pip install 'searchindex[extra]'``.

    Args:
        prefix, package_dir, direct_url: the environment's ``sys.prefix``, the folder holding the
            ``searchindex`` package, and the text of its ``direct_url.json`` (PEP 610); found from
            the running interpreter when not given.
    """
    prefix_path = Path(sys.prefix if prefix is None else prefix)
    if len(prefix_path.parts) >= 3 and prefix_path.parts[-2] == "venvs" and "pipx" in prefix_path.parts[-3]:
        requirements = " ".join(f"'{r}'" for r in _extra_requirements(extra)) or f"'searchindex[{extra}]'"
        return f"pipx inject {prefix_path.name} {requirements}"
    checkout = _checkout(Path(package_dir) if package_dir is not None else Path(__file__).resolve().parent.parent,
                         direct_url)
    if checkout is not None:
        return f"pip install -e '.[{extra}]' (in {checkout})"
    return f"pip install 'searchindex[{extra}]'"


def _checkout(package_dir: Path, direct_url: str | None) -> Path | None:
    """The source folder searchindex runs from, if it runs from one (editable or on the path)."""
    # Imported from a source tree: an editable install, or a checkout on PYTHONPATH.
    if (package_dir / "setup.cfg").is_file() or (package_dir / "pyproject.toml").is_file():
        return package_dir
    if direct_url is None:  # an editable install whose modules are reached some other way
        try:
            from importlib.metadata import PackageNotFoundError, distribution

            direct_url = distribution("searchindex").read_text("direct_url.json")
        except (ImportError, PackageNotFoundError):  # not installed at all: imported from a path
            direct_url = None
    if direct_url:
        try:
            info = json.loads(direct_url)
        except ValueError:
            info = {}
        if info.get("dir_info", {}).get("editable") and str(info.get("url", "")).startswith("file://"):
            from urllib.parse import unquote, urlparse

            return Path(unquote(urlparse(info["url"]).path))
    return None


def _extra_requirements(extra: str) -> list[str]:
    """The requirements the installed distribution declares for ``extra`` (none when unknown)."""
    try:
        from importlib.metadata import PackageNotFoundError, requires

        declared = requires("searchindex") or []
    except (ImportError, PackageNotFoundError):
        return []
    wanted = re.compile(rf"""extra\s*==\s*["']{re.escape(extra)}["']""")
    return [r.split(";")[0].strip() for r in declared if wanted.search(r)]

