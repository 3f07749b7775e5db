"""Reindex: re-embedding an index beside itself and swapping it in atomically.

:meth:`searchindex.Index.reindex` builds the new index in a staging folder
(:func:`~searchindex.store.swap.staging_folder`) with the public API of both
indexes, carries over what does not depend on the model (captions describe
pictures, zero-shot labels are re-derived from their names and templates:
:mod:`searchindex.ingest.carryover`), then swaps the two folders
(:mod:`searchindex.store.swap`).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..ingest.carryover import carry_captions, carry_hand_tags, labels_by_templates
from ..models.spec import resolve_model
from ..results import IndexSummary
from ..store.catalog.faces import carry_faces
from ..store.folder import remove_index_files
from ..store.lock import WriterLock
from ..store.swap import crash_point, settle_swap, staging_folder, swap_in, swap_in_mount

if TYPE_CHECKING:
    from .facade import Index

__all__ = ["reindex_folder"]

log = logging.getLogger(__name__)


def reindex_folder(index_cls: type[Index], path: str | os.PathLike[str], model: str | None, pretrained: str | None,
                   *, device: str, precision: str, **options: Any) -> IndexSummary:
    """Re-embed the index at ``path`` with another model (see :meth:`searchindex.Index.reindex`).

    ``index_cls`` (the class :meth:`~searchindex.Index.reindex` was called on) opens and
    creates the two indexes; ``options`` are those of :meth:`~searchindex.Index.add_files`.
    A run killed at any point leaves other people's files in the index folder (or, killed
    inside the folder swap, the next run or ``repair`` carries them back: :mod:`searchindex.store.swap`).
    An index folder that is a mount point gets its new index built inside it and swapped in file by file.

    Raises:
        IndexLockedError: another process writes to the index, or (a mount point) has it open at the swap.
    """
    # Through a link to the index: swap the real folder, so the link keeps working.
    folder = Path(path).expanduser().resolve()
    if not os.path.lexists(folder):  # a run killed inside a three-rename swap (no renameat2)
        settle_swap(folder)
    # A mount point cannot be exchanged with a folder beside it: the new index is built inside it.
    staging = staging_folder(folder)
    if index_cls.exists(folder):
        with WriterLock(folder):  # a swap left half-done by a killed run is settled before anything else
            settle_swap(folder)
    with index_cls.open(folder, device=device, precision=precision) as old, WriterLock(folder):
        settle_swap(folder)  # another run may have been killed between the two locks
        spec = resolve_model(model, pretrained)
        new: Index | None = None
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
                carry_hand_tags(old.catalog, new.catalog)  # a person's labels: by content too
                # Faces and persons (names, fixes) describe the pictures too.
                carry_faces(old.catalog.engine, new.catalog.engine)
        if summary.interrupted:
            return summary
        old.close()
        crash_point("staged")
        if staging.parent == folder:
            swap_in_mount(staging, folder)  # file by file; nothing else in the folder moves
        else:
            swap_in(staging, folder)  # other people's files in the index folder stay in it
    log.info("reindexed %s with %s", folder, spec.describe())
    return summary
