"""Zero-shot tags: name the labels you care about, every image is tagged, no training.

Each label becomes one text classifier, CLIP-style: the label is put into every
prompt template, the normalised template embeddings are averaged and the mean
is renormalised (a prompt ensemble).  An image's score for the label is the
cosine similarity of its stored embedding with that classifier; nothing is
re-encoded.

**Calibration.**  Raw CLIP scores are poorly calibrated (any text scores high
against any image), so a label is judged *relative to a generic caption*: the
same templates filled with neutral words ("thing", "object", ...) give a null
classifier, and ``margin = score(label) - score(null)``.  An image gets the
label when its margin passes the label's threshold:

- by default the threshold is 0 (the label describes the image better than a
  generic caption does);
- when the collection's margins for the label fall into two well-separated groups
  (a two-component Gaussian mixture with Ashman's D >= 2, fitted on at least
  ``MIN_CALIBRATION_IMAGES`` images), the boundary between the groups is used
  instead if it is lower: some labels score below the generic caption even on
  images that clearly show them, and the collection reveals that.

The threshold is stored with the label and applied to images indexed later;
it is recalibrated on the whole collection by ``tag`` and whenever the
collection has doubled since the last calibration.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ..errors import QueryError
from ..fileio import read_bounded
from ..models.encoders import Encoder
from ..results import LabelReport
from ..store.catalog.database import Catalog
from ..store.catalog.records import TagLabel

__all__ = [
    "DEFAULT_TEMPLATES",
    "NULL_WORDS",
    "SINGLE_TEMPLATE",
    "calibrate_threshold",
    "define_labels",
    "label_classifier",
    "load_templates",
    "parse_labels",
    "read_labels",
    "tag_catalog",
    "tag_new_images",
]

log = logging.getLogger(__name__)

SINGLE_TEMPLATE: tuple[str, ...] = ("a photo of a {}.",)

# From the CLIP paper's CIFAR-10 ensemble.  On the tiny model both this and the
# single template reach 100 % shape and colour accuracy; the ensemble has the
# lower log-loss (scripts/eval_zeroshot.py), so it is the default.
DEFAULT_TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.",
    "a blurry photo of a {}.",
    "a photo of the {}.",
    "a good photo of a {}.",
    "a bad photo of a {}.",
    "a photo of a small {}.",
    "a photo of a big {}.",
    "a {}.",
    "a picture of a {}.",
    "an image of a {}.",
)

# Fillers for the generic caption every label is compared with.
NULL_WORDS: tuple[str, ...] = ("thing", "object", "something", "picture", "photo", "image")

MIN_CALIBRATION_IMAGES = 20
_MIN_SEPARATION = 2.0  # Ashman's D between the two mixture components


def parse_labels(text: str) -> list[str]:
    """Labels from a comma- or newline-separated string, trimmed, without duplicates.

    Raises:
        QueryError: no label, or a label too long to be a prompt.
    """
    from ..textcheck import checked_text

    labels = list(dict.fromkeys(part.strip() for chunk in checked_text(text, "the labels").splitlines()
                                for part in chunk.split(",")))
    labels = [lab for lab in labels if lab and not lab.startswith("#")]
    if not labels:
        raise QueryError("no labels given")
    for lab in labels:
        if len(lab) > 100:
            raise QueryError(f"label too long (over 100 characters): {lab[:40]}...")
    return labels


_TEXT_FILE_MAX = 1024 * 1024


def read_labels(text: str | None = None, files: Sequence[str | os.PathLike[str]] = ()) -> list[str]:
    """Labels from a comma/newline-separated ``text`` and label files (one per line, or comma-separated).

    Raises:
        QueryError: a file cannot be read, no label at all, or a label too long to be a prompt.
    """
    parts = [text or ""]
    for f in files:
        try:
            # A list of labels, not /dev/zero or a FIFO: a regular file of at most 1 MB.
            parts.append(read_bounded(Path(f).expanduser(), _TEXT_FILE_MAX)[0].decode("utf-8", "replace"))
        except OSError as exc:
            raise QueryError(f"cannot read {f}: {exc.strerror or exc}") from None
    return parse_labels("\n".join(parts))


def load_templates(spec: str | os.PathLike[str] | Sequence[str] | None) -> tuple[str, ...]:
    """``default``, ``single``, a file with one template per line, or a list of templates.

    Every template must contain ``{}`` exactly once (where the label goes).

    Raises:
        QueryError: unreadable file or a template without exactly one ``{}``.
    """
    if spec is None or spec == "default":
        return DEFAULT_TEMPLATES
    if spec == "single":
        return SINGLE_TEMPLATE
    if isinstance(spec, (str, os.PathLike)):
        try:
            text = read_bounded(Path(spec).expanduser(), _TEXT_FILE_MAX)[0].decode("utf-8", "replace")
        except OSError as exc:
            raise QueryError(f"cannot read templates file {spec}: {exc.strerror or exc}") from None
        templates = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
        where = f" in {spec}"
    else:
        templates = [str(t).strip() for t in spec]
        where = ""
    if not templates:
        raise QueryError(f"no templates{where}")
    for t in templates:
        if t.count("{}") != 1:
            raise QueryError(f"template {t!r}{where} must contain {{}} exactly once (where the label goes)")
    return tuple(dict.fromkeys(templates))


def label_classifier(encoder: Encoder, label: str, templates: Sequence[str]) -> np.ndarray:
    """Mean of the normalised template embeddings for ``label``, renormalised."""
    feats = encoder.encode_texts([t.format(label) for t in templates]).astype(np.float64)
    feats /= np.linalg.norm(feats, axis=1, keepdims=True)
    mean = feats.mean(axis=0)
    return (mean / np.linalg.norm(mean)).astype(np.float32)


def null_classifier(encoder: Encoder, templates: Sequence[str]) -> np.ndarray:
    """The generic-caption reference: the mean of the null words' classifiers (not renormalised,
    so an image's null score is its mean score over the null words)."""
    return np.mean([label_classifier(encoder, w, templates) for w in NULL_WORDS], axis=0).astype(np.float32)


def _two_groups(x: np.ndarray, iters: int = 200) -> tuple[float, float]:
    """Fit a two-component 1-D Gaussian mixture; return (boundary, Ashman's D).

    The boundary is where the upper component becomes the more likely one; it is
    ``inf`` when that never happens between the two means.
    """
    x = np.asarray(x, dtype=np.float64)
    hi = np.quantile(x, 0.95)
    top = x[x >= hi]
    mu = np.array([np.median(x), top.mean()])
    sd = np.array([max(x.std(), 1e-6), max(top.std(), 1e-4)])
    w = np.array([0.9, 0.1])
    for _ in range(iters):
        lp = -0.5 * ((x[:, None] - mu) / sd) ** 2 - np.log(sd) + np.log(w)
        lp -= lp.max(axis=1, keepdims=True)
        resp = np.exp(lp)
        resp /= resp.sum(axis=1, keepdims=True)
        n = resp.sum(axis=0) + 1e-9
        w = n / n.sum()
        mu = (resp * x[:, None]).sum(axis=0) / n
        sd = np.sqrt((resp * (x[:, None] - mu) ** 2).sum(axis=0) / n) + 1e-4
    sep = math.sqrt(2.0) * abs(mu[1] - mu[0]) / math.sqrt(float((sd**2).sum()))
    up = int(np.argmax(mu))
    grid = np.linspace(mu.min(), mu.max(), 2001)
    lp = -0.5 * ((grid[:, None] - mu) / sd) ** 2 - np.log(sd) + np.log(w)
    upper = lp[:, up] > lp[:, 1 - up]
    return (float(grid[int(np.argmax(upper))]) if upper.any() else math.inf), sep


def calibrate_threshold(margins: np.ndarray) -> tuple[float, bool]:
    """Threshold on ``score - null score`` for one label over a collection; (threshold, split used).

    See the module docstring for the rule.
    """
    margins = np.asarray(margins, dtype=np.float64)
    if len(margins) < MIN_CALIBRATION_IMAGES:
        return 0.0, False
    boundary, sep = _two_groups(margins)
    if sep < _MIN_SEPARATION or not math.isfinite(boundary) or boundary >= 0.0:
        return 0.0, False
    return boundary, True


def _margins(label: TagLabel, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores = vectors @ label.classifier.astype(np.float32)
    return scores, scores - vectors @ label.null_classifier.astype(np.float32)


def tag_catalog(
    catalog: Catalog,
    dim: int,
    labels: Sequence[TagLabel],
    *,
    recalibrate: bool,
    progress: Callable[[str], None] | None = None,
) -> list[LabelReport]:
    """Score images against ``labels`` and store the tags that pass.

    With ``recalibrate`` every image is scored, thresholds are recalibrated on the
    whole collection and all tags of those labels replaced; otherwise only
    images written after a label's ``scored_generation`` are scored, with its
    stored threshold (a label whose collection has doubled since its calibration
    is recalibrated anyway).
    """
    generation = catalog.read.generation()
    total = catalog.read.image_count()
    reports = []
    for label in labels:
        full = recalibrate or total >= 2 * max(label.calibrated_images, MIN_CALIBRATION_IMAGES // 2)
        if not full and label.scored_generation >= generation:
            reports.append(LabelReport(label.name, -1, 0, label.threshold, False))
            continue  # nothing written since: no work, no write
        since = 0 if full else label.scored_generation
        ids_parts, score_parts, margin_parts = [], [], []
        for ids, vectors in catalog.read.embeddings_since(since, dim):
            scores, margins = _margins(label, vectors)
            ids_parts.append(ids)
            score_parts.append(scores)
            margin_parts.append(margins)
        ids = np.concatenate(ids_parts) if ids_parts else np.zeros(0, np.int64)
        scores = np.concatenate(score_parts) if score_parts else np.zeros(0, np.float32)
        margins = np.concatenate(margin_parts) if margin_parts else np.zeros(0, np.float32)
        calibrated = False
        threshold = label.threshold
        calibrated_images = label.calibrated_images
        if full:
            threshold, calibrated = calibrate_threshold(margins)
            calibrated_images = len(ids)
        keep = margins > threshold
        tags = list(zip(ids[keep].tolist(), scores[keep].tolist(), (margins[keep] - threshold).tolist(),
                        strict=True))
        updated = TagLabel(label.name, label.templates, label.classifier, label.null_classifier,
                           float(threshold), calibrated_images, generation)
        catalog.tags.store(updated, ids, tags, replace_all=full)
        log.info("label %r: scored %d images, threshold %.4f%s", label.name, len(ids), threshold,
                 " (two-group split)" if calibrated else "")
        if progress is not None:
            progress(label.name)
        reports.append(LabelReport(label.name, -1, len(ids), float(threshold), calibrated))
    counts = dict(catalog.read.tag_counts())
    return [LabelReport(r.label, counts.get(r.label, 0), r.scored, r.threshold, r.calibrated) for r in reports]


def define_labels(encoder: Encoder, labels: Sequence[str],
                  templates: str | os.PathLike[str] | Sequence[str] | None) -> list[TagLabel]:
    """New labels (not yet calibrated) with their classifiers from ``templates`` (see :func:`load_templates`).

    Raises:
        QueryError: no labels, bad templates.
    """
    names = [str(lab).strip() for lab in labels if str(lab).strip()]
    if not names:
        raise QueryError("no labels given")
    chosen = load_templates(templates)
    null = null_classifier(encoder, chosen)
    return [TagLabel(name, chosen, label_classifier(encoder, name, chosen), null, 0.0, 0, 0) for name in names]


def labels_to_tag(catalog: Catalog, encoder: Callable[[], Encoder], labels: Sequence[str] | None,
                  templates: str | os.PathLike[str] | Sequence[str] | None) -> list[TagLabel]:
    """The labels a tagging pass computes: ``labels`` defined anew with ``templates`` (the model is
    loaded through ``encoder``), or for ``None`` the stored ones, to recalibrate.

    Raises:
        QueryError: no labels (given or stored), bad templates.
    """
    if labels is None:
        stored = catalog.read.tag_labels()
        if not stored:
            raise QueryError("this index has no labels yet; give some with --labels")
        return stored
    return define_labels(encoder(), labels, templates)


def tag_new_images(catalog: Catalog, dim: int) -> None:
    """Tag the images written since each stored label last ran (after an indexing run)."""
    labels = catalog.read.tag_labels()
    if labels:
        tag_catalog(catalog, dim, labels, recalibrate=False)
