"""People: find the faces in indexed images, and group them into persons.

The face pass (:func:`find_faces`) walks the images not searched yet (or whose content changed),
decodes each as the indexer does (EXIF orientation applied, JPEG draft mode), runs the face
engine (:mod:`searchindex.models.faces`) and commits each batch's faces at once, so a killed run
loses at most one batch and the next run resumes.

Grouping (:func:`group_faces`) is incremental and density-based, with two rules it never breaks:

- two faces of one photo are never the same person;
- persons are never merged by grouping (only by a user's ``people merge``), so a person a user
  named or confirmed is never silently merged with another.  Faces a user placed stay where they are,
  and a face marked "not this person" never joins that person again.

Each round: (1) every face without a person joins the nearest existing person when its mean
distance to that person's :data:`JOIN_NEIGHBOURS` nearest faces is under :data:`JOIN_DISTANCE`
(closest pairs first, one face per person per photo); (2) the faces left are clustered DBSCAN-style:
a face with at least :data:`MIN_FACES` - 1 others within :data:`CLUSTER_DISTANCE` seeds a group that
grows through such neighbours, each newcomer also within :data:`JOIN_DISTANCE` of the group's mean
(which stops chains drifting from one person to a look-alike); a group of at least :data:`MIN_FACES`
faces becomes a new, unnamed person.  Faces still alone wait for the next round, after later runs
add photos.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

import numpy as np

from ..errors import ImageDecodeError
from ..faceresults import FaceFailure, FaceProgress, FaceSummary, GroupingSummary
from ..models.faces import FaceEngine
from ..models.images import decode_image
from ..store.catalog.database import Catalog
from ..store.catalog.faces import FaceRepository, FaceTable, NewFace
from .passes import Batches, unreadable

__all__ = ["CLUSTER_DISTANCE", "JOIN_DISTANCE", "JOIN_NEIGHBOURS", "MIN_FACES", "face_repository", "find_faces",
           "group_faces", "plan_grouping"]

log = logging.getLogger(__name__)

#: Two faces closer than this (Euclidean distance between dlib embeddings) are neighbours when new
#: persons are formed.  dlib's own same-person threshold is 0.6 (99.38% on LFW pairs); grouping
#: chains neighbours, so it uses a stricter value (see docs/people.md for the measurements).
CLUSTER_DISTANCE = 0.5

#: A face joins a person (or a forming group) when its mean distance to the person's nearest
#: faces (to the group's mean) is under this.
JOIN_DISTANCE = 0.5

#: How many of a person's nearest faces a newcomer is compared with.
JOIN_NEIGHBOURS = 3

#: The fewest faces that make a new person: one or two similar faces stay unassigned until more
#: photos of the same person arrive (a stranger in the background of one photo is not a person).
MIN_FACES = 3

_CHUNK = 256


def face_repository(catalog: Catalog) -> FaceRepository:
    """The faces tables of ``catalog``."""
    return FaceRepository(catalog.engine)


def _read(path: str, side: int) -> object:
    with open(path, "rb") as fh:
        data = fh.read()
    # Draft-decode JPEGs down to a size whose short side still covers the detector's copy.
    return decode_image(data, path, min_side=max(160, side * 3 // 4)).image


def find_faces(
    catalog: Catalog,
    engine: FaceEngine | None = None,
    *,
    batch_size: int = 8,
    group: bool = True,
    progress: Callable[[FaceProgress], None] | None = None,
    stop: threading.Event | None = None,
) -> FaceSummary:
    """Search every image not searched yet (or changed since) for faces, then group them.

    Each batch is committed at once; files that cannot be read are recorded with the reason (and
    searched again only when their content changes) and listed in the summary.

    Raises:
        MissingExtraError: ``searchindex[faces]`` is not installed.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    engine = engine or FaceEngine()
    repo = face_repository(catalog)
    t0 = time.perf_counter()
    repo.prune()
    todo = repo.todo()
    already = repo.counts()["images_searched"]
    failures: list[FaceFailure] = []
    found = searched = 0
    batches = Batches(todo, batch_size, stop)
    for done, chunk in batches:
        results: list[tuple[int, str, str, Sequence[NewFace], str | None]] = []
        for image_id, path, sha in chunk:
            try:
                image = _read(path, engine.detect_side)
            except (ImageDecodeError, OSError) as exc:
                reason = unreadable(exc)
                failures.append(FaceFailure(path, reason))
                results.append((image_id, sha, engine.name, [], reason))
                continue
            faces = engine.faces(image)  # type: ignore[arg-type]
            results.append((image_id, sha, engine.name,
                            [NewFace(f.box, f.score, f.quality, f.landmarks, f.embedding) for f in faces], None))
        found += repo.store(results)
        searched += len(results) - sum(1 for r in results if r[4] is not None)
        if progress is not None:
            progress(FaceProgress(done, len(todo), found, len(failures)))
    for f in failures:
        log.warning("cannot search %s for faces: %s", f.path, f.reason)
    grouping = group_faces(repo) if group and not batches.interrupted else None
    return FaceSummary(engine.name, searched, found, len(failures), already, time.perf_counter() - t0, grouping,
                       tuple(failures), batches.interrupted)


def group_faces(repo: FaceRepository, *, join_distance: float = JOIN_DISTANCE,
                cluster_distance: float = CLUSTER_DISTANCE, min_faces: int = MIN_FACES) -> GroupingSummary:
    """One grouping round over the stored faces (see the module's description); committed at once."""
    table = repo.table()
    joins, groups = plan_grouping(table, repo.rejections(), join_distance=join_distance,
                                  cluster_distance=cluster_distance, min_faces=min_faces)
    repo.apply_grouping(joins, groups)
    grouped = sum(len(g) for g in groups)
    left = int((table.person_ids < 0).sum()) - len(joins) - grouped
    log.info("grouping: %d faces joined persons, %d new persons (%d faces), %d faces wait",
             len(joins), len(groups), grouped, left)
    return GroupingSummary(len(joins), len(groups), grouped, left)


def _distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distances between the rows of ``a`` and ``b`` (float32)."""
    aa = np.einsum("ij,ij->i", a, a)[:, None]
    bb = np.einsum("ij,ij->i", b, b)[None, :]
    return np.sqrt(np.maximum(aa + bb - 2.0 * (a @ b.T), 0.0))


def plan_grouping(
    table: FaceTable,
    rejections: dict[int, set[int]],
    *,
    join_distance: float = JOIN_DISTANCE,
    cluster_distance: float = CLUSTER_DISTANCE,
    min_faces: int = MIN_FACES,
) -> tuple[list[tuple[int, int]], list[list[int]]]:
    """What one grouping round does, without writing: (face id, person id) joins, and the face ids
    of each new person."""
    if min_faces < 1:
        raise ValueError("min_faces must be at least 1")
    emb = table.embeddings.astype(np.float32)
    free = np.flatnonzero(table.person_ids < 0)
    placed = np.flatnonzero(table.person_ids >= 0)
    # (image id, person id) pairs already taken: one person appears once per photo.
    taken = {(int(table.image_ids[i]), int(table.person_ids[i])) for i in placed}
    joins: list[tuple[int, int]] = []
    joined: set[int] = set()
    if len(free) and len(placed):
        persons = np.unique(table.person_ids[placed])
        members = {int(p): placed[table.person_ids[placed] == p] for p in persons}
        proposals: list[tuple[float, int, int]] = []
        for start in range(0, len(free), _CHUNK):
            rows = free[start:start + _CHUNK]
            for p, cols in members.items():
                d = _distances(emb[rows], emb[cols])
                k = min(JOIN_NEIGHBOURS, len(cols))
                near = np.partition(d, k - 1, axis=1)[:, :k].mean(axis=1) if k < d.shape[1] else d.mean(axis=1)
                for r, dist in zip(rows, near, strict=True):
                    if dist < join_distance:
                        proposals.append((float(dist), int(r), p))
        proposals.sort()
        for _dist, r, p in proposals:
            face_id, image_id = int(table.ids[r]), int(table.image_ids[r])
            if r in joined or (image_id, p) in taken or p in rejections.get(face_id, ()):
                continue
            joins.append((face_id, p))
            joined.add(r)
            taken.add((image_id, p))
    rest = np.array([r for r in free if int(r) not in joined], dtype=np.int64)
    return joins, _clusters(table, emb, rest, cluster_distance, join_distance, min_faces)


def _clusters(table: FaceTable, emb: np.ndarray, rest: np.ndarray, eps: float, join: float,
              min_faces: int) -> list[list[int]]:
    """New persons among the faces ``rest`` (row numbers), as lists of face ids."""
    if len(rest) < min_faces:
        return []
    neighbours: list[np.ndarray] = []
    for start in range(0, len(rest), _CHUNK):
        d = _distances(emb[rest[start:start + _CHUNK]], emb[rest])
        for i, row in enumerate(d):
            near = np.flatnonzero(row < eps)
            neighbours.append(near[near != start + i])
    order = sorted(range(len(rest)), key=lambda i: (-len(neighbours[i]), i))
    used: set[int] = set()
    groups: list[list[int]] = []
    for seed in order:
        if seed in used or len(neighbours[seed]) + 1 < min_faces:
            continue
        group = [seed]
        images = {int(table.image_ids[rest[seed]])}
        total = emb[rest[seed]].astype(np.float64).copy()
        queue = sorted(neighbours[seed].tolist(),
                       key=lambda j: float(np.linalg.norm(emb[rest[j]] - emb[rest[seed]])))
        seen = {seed, *queue}
        while queue:
            j = queue.pop(0)
            image_id = int(table.image_ids[rest[j]])
            if j in used or image_id in images:
                continue
            if float(np.linalg.norm(emb[rest[j]] - total / len(group))) >= join:
                continue
            group.append(j)
            images.add(image_id)
            total += emb[rest[j]]
            if len(neighbours[j]) + 1 >= min_faces:  # a core face: its neighbours may join too
                for n in neighbours[j].tolist():
                    if n not in seen:
                        seen.add(n)
                        queue.append(n)
        if len(group) >= min_faces:
            used.update(group)
            groups.append([int(table.ids[rest[g]]) for g in group])
    return groups

