"""The facade's enrichment methods: duplicates, zero-shot tags and captions (:mod:`searchindex.enrich`)."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from ..defaults import DEFAULT_DUPLICATE_THRESHOLD
from .state import IndexState

if TYPE_CHECKING:
    from ..models.captioners import Captioner
    from ..results import CaptionProgress, CaptionSummary, DuplicateGroup, LabelReport

__all__ = ["Enrichment"]


class Enrichment(IndexState):
    """:meth:`duplicates`, :meth:`tag`, :meth:`tag_images`, :meth:`untag`, :meth:`tags`, :meth:`caption` and
    :meth:`caption_counts` of :class:`~searchindex.index.Index`."""

    def duplicates(self, threshold: float = DEFAULT_DUPLICATE_THRESHOLD) -> list[DuplicateGroup]:
        """Groups of near-identical images (resized, recompressed, lightly cropped or edited copies)
        whose embeddings' cosine similarity is at least ``threshold``, directly or through other
        copies; best copy first, largest group first (see :mod:`searchindex.enrich.duplicates`)."""
        self._follow_swap()
        from ..enrich.duplicates import find_duplicates

        return find_duplicates(self.catalog, self.vectors, threshold)

    def tag(self, labels: Sequence[str] | None = None,
            templates: str | os.PathLike[str] | Sequence[str] | None = None) -> list[LabelReport]:
        """Define zero-shot labels (``None``: re-tag the stored ones, recalibrating) and tag every image;
        images indexed later are tagged by :meth:`add_folder` (see :mod:`searchindex.enrich.tagging`).

        ``templates``: ``"default"`` (the CLIP-paper ensemble), ``"single"``, a file with one
        template per line, or a list, each containing ``{}``; stored labels keep theirs.

        Raises:
            QueryError: no labels (given or stored), bad templates.
            IndexLockedError, IndexWriteError: as for :meth:`add_folder`.
        """
        from ..enrich.tagging import labels_to_tag, tag_catalog

        todo = labels_to_tag(self.catalog, lambda: self.encoder, labels, templates)
        with self._writing():
            return tag_catalog(self.catalog, self.dim, todo, recalibrate=True)

    def untag(self, labels: Sequence[str]) -> int:
        """Forget labels and their tags; returns how many of them existed."""
        with self._writing():
            return self.catalog.tags.remove(list(labels))

    def tag_images(self, ids: Sequence[int], label: str) -> list[int]:
        """Put the label ``label`` on the images ``ids`` by hand; returns the ids tagged (those still indexed).

        Such a tag is shown, listed by :meth:`tags` and filtered on (``tag=``) like a zero-shot one,
        is never replaced by re-tagging, follows its picture through a reindex, and goes with
        :meth:`untag` of its label.

        Raises:
            QueryError: no label, or one over 100 characters or with a comma (labels are comma-separated).
            IndexLockedError, IndexWriteError: as for :meth:`add_folder`.
        """
        from ..enrich.tagging import parse_labels
        from ..errors import QueryError

        if "," in label:
            raise QueryError(f"a label cannot contain a comma: {label[:40]!r}")
        (name,) = parse_labels(label)
        with self._writing():
            return self.catalog.tags.apply(name, [int(i) for i in ids])

    def tags(self) -> list[tuple[str, int]]:
        """(label, number of images tagged) for every stored label, zero-shot or put on images by hand."""
        return self.catalog.read.tag_counts()

    def caption(self, model: str | Captioner | None = None, *, device: str | None = None,
                progress: Callable[[CaptionProgress], None] | None = None, stop: threading.Event | None = None,
                **options: Any) -> CaptionSummary:
        """Caption every indexed image that has no caption from ``model`` yet; each batch is
        committed at once, so an interrupted run resumes, and another model's captions stay.

        ``model``: a Hugging Face hub id or local folder (default
        :data:`~searchindex.defaults.DEFAULT_CAPTION_MODEL`) or a loaded
        :class:`~searchindex.models.captioners.Captioner`; ``device``: default the index's;
        ``options``: ``prompt``, ``batch_size``, ``max_new_tokens``, ``num_beams`` (see
        :func:`searchindex.enrich.captions.caption_index`).

        Raises:
            MissingExtraError (``searchindex[caption]``), WeightsUnavailableError,
            UnknownModelError, IndexLockedError, IndexWriteError.
        """
        from ..enrich.captions import caption_index

        with self._writing():
            return caption_index(self.catalog, model, device=device or self._device, progress=progress,
                                 stop=stop, **options)

    def caption_counts(self) -> dict[str, int]:
        """Model -> number of images it has captioned."""
        return dict(self.catalog.read.caption_counts())
