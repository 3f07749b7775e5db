"""What a reindex carries from the old catalog to the new one: what does not depend on the model.

Captions describe the pictures, so they follow the content (sha256); zero-shot labels
are text embeddings of the old model, so the new one re-derives them from their names
and prompt templates; labels a person put on pictures by hand follow the content too.
The orchestration is :mod:`searchindex.index.reindex`.
"""

from __future__ import annotations

from ..store.catalog.database import Catalog

__all__ = ["carry_captions", "carry_hand_tags", "labels_by_templates"]


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


def carry_hand_tags(old: Catalog, new: Catalog) -> int:
    """Put the labels set by hand in ``old`` on the images of ``new`` with the same content; returns how many."""
    new_ids: dict[str, list[int]] = {}
    for image_id, _, _, sha in new.read.image_states().values():
        new_ids.setdefault(sha, []).append(image_id)
    by_label: dict[str, list[int]] = {}
    for sha, label in old.read.hand_tags_by_content():
        by_label.setdefault(label, []).extend(new_ids.get(sha, ()))
    return sum(len(new.tags.apply(label, ids)) for label, ids in by_label.items())
