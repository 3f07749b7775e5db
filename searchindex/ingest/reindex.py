"""Reindex mechanics: re-embedding an index beside itself and swapping it in atomically.

:meth:`searchindex.Index.reindex` builds the new index in a staging folder
(:func:`staging_folder`) with the public API of both indexes, carries over what
does not depend on the model (captions describe pictures, zero-shot labels are
re-derived from their names and templates), then :func:`exchange` swaps the
two folders.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

from ..models.spec import ModelSpec, resolve_model
from ..results import IndexSummary
from ..store.catalog.database import Catalog
from ..store.folder import remove_index_files
from ..store.lock import WriterLock
from ..store.swap import crash_point, refuse_mount_point, settle_swap, staging_folder, swap_in
from .scan import FileEntry

__all__ = ["carry_captions", "entries_of", "labels_by_templates", "reindex"]

log = logging.getLogger(__name__)


class _Index(Protocol):
    """What a reindex needs of an index (:class:`searchindex.Index` has it)."""

    spec: ModelSpec
    catalog: Catalog

    @property
    def vectors(self) -> Any: ...

    def add_files(self, paths: Iterable[str], *, progress: Any = ..., batch_size: int = ..., workers: int | None = ...,
                  max_megapixels: float = ..., max_file_bytes: int = ..., stop: Any = ...) -> IndexSummary: ...

    def tag(self, labels: Sequence[str] | None = None, templates: Sequence[str] | None = None) -> Any: ...

    def close(self) -> None: ...

    def __enter__(self) -> Any: ...

    def __exit__(self, *exc: object) -> None: ...


class _IndexClass(Protocol):
    def exists(self, path: str | os.PathLike[str]) -> bool: ...

    def open(self, path: str | os.PathLike[str], *, device: str = ..., precision: str = ...) -> _Index: ...

    def create(self, path: str | os.PathLike[str], model: str | None = ..., pretrained: str | None = ..., *,
               device: str = ..., precision: str = ..., index_type: str = ...) -> _Index: ...


def reindex(index_cls: _IndexClass, path: str | os.PathLike[str], model: str | None, pretrained: str | None,
            *, device: str, precision: str, **options: Any) -> IndexSummary:
    """Re-embed the index at ``path`` with another model (see :meth:`searchindex.Index.reindex`).

    Uses only the public API of the two indexes: ``index_cls`` opens and creates them.
    A run killed at any point leaves other people's files in the index folder (or, killed
    inside the folder swap, the next run or ``repair`` carries them back: :mod:`searchindex.store.swap`).

    Raises:
        IndexFolderError: the index folder is a mount point (its folder cannot be swapped).
    """
    # Through a link to the index: swap the real folder, so the link keeps working.
    folder = Path(path).expanduser().resolve()
    staging = staging_folder(folder)
    if not os.path.lexists(folder):  # a run killed inside a three-rename swap (no renameat2)
        settle_swap(folder)
    if index_cls.exists(folder):
        refuse_mount_point(folder)  # before any work: the swap at the end would fail every time
        with WriterLock(folder):  # a swap left half-done by a killed run is settled before anything else
            settle_swap(folder)
    with index_cls.open(folder, device=device, precision=precision) as old, WriterLock(folder):
        settle_swap(folder)  # another run may have been killed between the two locks
        spec = resolve_model(model, pretrained)
        new: _Index | None = None
        if index_cls.exists(staging):
            new = index_cls.open(staging, device=device, precision=precision)
            if not new.spec.same_weights(spec):  # a leftover of another reindex: start over
                new.close()
                new = None
        if new is None:
            if staging.is_dir() and not staging.is_symlink():
                remove_index_files(staging)  # only what an index made: strangers make create refuse
            new = index_cls.create(staging, model, pretrained, device=device, precision=precision,
                                   index_type=old.vectors.index_type)
        else:
            log.info("resuming the reindex in %s", staging)
        with new:
            summary = new.add_files(old.catalog.read.all_paths(), **options)
            if not summary.interrupted:
                # Zero-shot labels are text embeddings of the old model: rebuild them with the new one.
                for templates, names in labels_by_templates(old.catalog).items():
                    new.tag(names, templates=list(templates))
                # Captions describe the pictures, not their vectors: keep them for the same content.
                carry_captions(old.catalog, new.catalog)
        if summary.interrupted:
            return summary
        old.close()
        crash_point("staged")
        swap_in(staging, folder)  # other people's files in the index folder stay in it
    log.info("reindexed %s with %s", folder, spec.describe())
    return summary


def entries_of(paths: Iterable[str]) -> list[FileEntry]:
    """The files at ``paths`` as scan entries; a file that cannot be stat'ed gets an impossible size,
    so that reading it reports why (as the scan does)."""
    entries = []
    for p in paths:
        try:
            st = os.stat(p)
            entries.append(FileEntry(p, st.st_size, st.st_mtime_ns))
        except OSError:
            entries.append(FileEntry(p, -1, 0))
    return entries


def labels_by_templates(catalog: Catalog) -> dict[tuple[str, ...], list[str]]:
    """The stored zero-shot labels, grouped by their prompt templates: what a new model re-derives."""
    grouped: dict[tuple[str, ...], list[str]] = {}
    for label in catalog.read.tag_labels():
        grouped.setdefault(tuple(label.templates), []).append(label.name)
    return grouped


def carry_captions(old: Catalog, new: Catalog, chunk: int = 1000) -> int:
    """Copy the captions of ``old`` to the images of ``new`` with the same content; returns how many."""
    new_ids: dict[str, list[int]] = {}
    for image_id, _, _, sha in new.read.image_states().values():
        new_ids.setdefault(sha, []).append(image_id)
    carried = [(image_id, model, prompt, caption)
               for sha, model, prompt, caption in old.read.captions_by_content()
               for image_id in new_ids.get(sha, ())]
    for start in range(0, len(carried), chunk):
        new.captions.store(carried[start : start + chunk])
    return len(carried)
