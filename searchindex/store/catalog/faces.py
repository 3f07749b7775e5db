"""Faces, persons, "not this person" marks and which images were searched for faces (schema 9).

Face rows hang off image rows by id, but the indexer does not know about them: a face whose image
left the catalog is ignored by every read here (they join ``images``) and deleted by :meth:`prune`,
which each face pass runs first; an image whose content changed (another sha256 than when it was
searched) is searched again, and its old faces go.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine

from ...errors import NotFoundError, ParameterError
from ...faceresults import Face, Person
from .sqlite import decode_path

__all__ = ["FLAG_MANUAL", "FaceRepository", "FaceTable", "NewFace", "carry_faces"]

#: A user put this face in its person (move, merge): grouping never takes it out.
FLAG_MANUAL = 1

_FACE_COLUMNS = "f.id, f.image_id, i.path, f.left, f.top, f.width, f.height, f.score, f.quality, f.person_id"
_MAX_NAME = 200


@dataclass(frozen=True)
class NewFace:
    """A face to store (what :class:`searchindex.models.faces.DetectedFace` carries)."""

    box: tuple[int, int, int, int]
    score: float
    quality: float
    landmarks: tuple[tuple[float, float], ...]
    embedding: np.ndarray


@dataclass(frozen=True)
class FaceTable:
    """Every face as arrays, for grouping: ids, image ids, person ids (-1: none), flags, quality, embeddings."""

    ids: np.ndarray
    image_ids: np.ndarray
    person_ids: np.ndarray
    flags: np.ndarray
    quality: np.ndarray
    embeddings: np.ndarray  # float32 (n, 128)


def _face(row: Sequence[Any]) -> Face:
    return Face(int(row[0]), int(row[1]), decode_path(row[2]), (int(row[3]), int(row[4]), int(row[5]), int(row[6])),
                float(row[7]), float(row[8]), None if row[9] is None else int(row[9]))


def _check_name(name: str) -> str:
    clean = " ".join(str(name).split())
    if not clean:
        raise ParameterError("a person's name cannot be empty", "name")
    if len(clean) > _MAX_NAME:
        raise ParameterError(f"a person's name is at most {_MAX_NAME} characters", "name")
    return clean


class FaceRepository:
    """The ``faces``, ``persons``, ``face_rejections`` and ``face_states`` tables."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    # -- the face pass ---------------------------------------------------------------------------

    def prune(self) -> int:
        """Delete the faces and states of images no longer in the catalog, the marks of faces that
        are gone, and unnamed persons left without faces; returns how many faces went."""
        with self._engine.begin() as c:
            gone = c.execute(text("DELETE FROM faces WHERE image_id NOT IN (SELECT id FROM images)")).rowcount
            c.execute(text("DELETE FROM face_states WHERE image_id NOT IN (SELECT id FROM images)"))
            c.execute(text("DELETE FROM face_rejections WHERE face_id NOT IN (SELECT id FROM faces)"))
            c.execute(text("DELETE FROM persons WHERE name IS NULL AND id NOT IN "
                           "(SELECT person_id FROM faces WHERE person_id IS NOT NULL)"))
        return int(gone or 0)

    def todo(self) -> list[tuple[int, str, str]]:
        """(image id, path, sha256) of the images not searched for faces yet, or whose content
        changed since, by id."""
        with self._engine.connect() as c:
            rows = c.execute(text(
                "SELECT i.id, i.path, i.sha256 FROM images i LEFT JOIN face_states s ON s.image_id = i.id "
                "WHERE s.image_id IS NULL OR s.sha256 != i.sha256 ORDER BY i.id")).all()
        return [(int(r[0]), decode_path(r[1]), str(r[2])) for r in rows]

    def store(self, results: Sequence[tuple[int, str, str, Sequence[NewFace], str | None]]) -> int:
        """Save (image id, sha256, detector, faces, error) of searched images in one transaction,
        replacing earlier faces of those images; images deleted meanwhile are skipped.  Returns
        how many faces were stored."""
        now = time.time()
        stored = 0
        with self._engine.begin() as c:
            for image_id, sha, detector, faces, error in results:
                if c.execute(text("SELECT 1 FROM images WHERE id = :i"), {"i": image_id}).first() is None:
                    continue
                old = [r[0] for r in c.execute(text("SELECT id FROM faces WHERE image_id = :i"), {"i": image_id})]
                for fid in old:
                    c.execute(text("DELETE FROM face_rejections WHERE face_id = :f"), {"f": fid})
                c.execute(text("DELETE FROM faces WHERE image_id = :i"), {"i": image_id})
                for f in faces:
                    c.execute(text(
                        'INSERT INTO faces (image_id, "left", top, width, height, score, quality, landmarks, '
                        "embedding, person_id, flags) VALUES (:i, :l, :t, :w, :h, :s, :q, :m, :e, NULL, 0)"),
                        {"i": image_id, "l": f.box[0], "t": f.box[1], "w": f.box[2], "h": f.box[3],
                         "s": float(f.score), "q": float(f.quality),
                         "m": json.dumps([[round(x, 1), round(y, 1)] for x, y in f.landmarks]),
                         "e": np.ascontiguousarray(f.embedding, dtype=np.float32).tobytes()})
                    stored += 1
                c.execute(text("INSERT OR REPLACE INTO face_states VALUES (:i, :s, :d, :n, :e, :t)"),
                          {"i": image_id, "s": sha, "d": detector, "n": len(faces), "e": error, "t": now})
        return stored

    def table(self) -> FaceTable:
        """Every face of an image still in the catalog, by id."""
        with self._engine.connect() as c:
            rows = c.execute(text(
                "SELECT f.id, f.image_id, coalesce(f.person_id, -1), f.flags, f.quality, f.embedding FROM faces f "
                "JOIN images i ON i.id = f.image_id ORDER BY f.id")).all()
        n = len(rows)
        emb = np.frombuffer(b"".join(r[5] for r in rows), dtype=np.float32).reshape(n, -1) if n else \
            np.zeros((0, 128), np.float32)
        return FaceTable(np.array([r[0] for r in rows], np.int64), np.array([r[1] for r in rows], np.int64),
                         np.array([r[2] for r in rows], np.int64), np.array([r[3] for r in rows], np.int64),
                         np.array([r[4] for r in rows], np.float32), emb)

    def rejections(self) -> dict[int, set[int]]:
        """face id -> the persons it must never be put in."""
        out: dict[int, set[int]] = {}
        with self._engine.connect() as c:
            for face_id, person_id in c.execute(text("SELECT face_id, person_id FROM face_rejections")):
                out.setdefault(int(face_id), set()).add(int(person_id))
        return out

    def apply_grouping(self, joins: Sequence[tuple[int, int]], groups: Sequence[Sequence[int]]) -> list[int]:
        """In one transaction: put faces in existing persons ((face id, person id)), and make a new
        unnamed person of each group of face ids; returns the new persons' ids.  A face that a user
        placed meanwhile keeps its place."""
        now = time.time()
        made: list[int] = []
        with self._engine.begin() as c:
            for face_id, person_id in joins:
                c.execute(text("UPDATE faces SET person_id = :p WHERE id = :f AND person_id IS NULL"),
                          {"p": int(person_id), "f": int(face_id)})
            for group in groups:
                pid = int(c.execute(text("INSERT INTO persons (name, hidden, confirmed, created_at) "
                                         "VALUES (NULL, 0, 0, :t)"), {"t": now}).lastrowid or 0)
                made.append(pid)
                for face_id in group:
                    c.execute(text("UPDATE faces SET person_id = :p WHERE id = :f AND person_id IS NULL"),
                              {"p": pid, "f": int(face_id)})
        return made

    def counts(self) -> dict[str, int]:
        """Images searched, faces, faces in a person, persons, named persons."""
        with self._engine.connect() as c:
            def one(sql: str) -> int:
                return int(c.execute(text(sql)).scalar() or 0)
            return {
                "images_searched": one("SELECT count(*) FROM face_states s JOIN images i ON i.id = s.image_id"),
                "faces": one("SELECT count(*) FROM faces f JOIN images i ON i.id = f.image_id"),
                "faces_grouped": one("SELECT count(*) FROM faces f JOIN images i ON i.id = f.image_id "
                                     "WHERE f.person_id IS NOT NULL"),
                "persons": one("SELECT count(*) FROM persons"),
                "named_persons": one("SELECT count(*) FROM persons WHERE name IS NOT NULL"),
            }

    # -- reads -----------------------------------------------------------------------------------

    def persons(self, *, hidden: bool = False, faces: int | None = None) -> list[Person]:
        """Persons with faces: named first (by name), then unnamed by size; ``hidden`` includes the
        hidden ones; each carries up to ``faces`` faces (``None``: all), the representative first
        (the largest, most frontal, most confident)."""
        with self._engine.connect() as c:
            prow = c.execute(text("SELECT id, name, hidden, confirmed FROM persons")).all()
            frows = c.execute(text(
                f"SELECT {_FACE_COLUMNS} FROM faces f JOIN images i ON i.id = f.image_id "
                "WHERE f.person_id IS NOT NULL "
                "ORDER BY f.person_id, (f.width * f.height) * f.quality * min(f.score + 0.5, 2.0) DESC, f.id")).all()
        by_person: dict[int, list[Face]] = {}
        for r in frows:
            by_person.setdefault(int(r[9]), []).append(_face(r))
        out = []
        for pid, name, hid, conf in prow:
            fs = by_person.get(int(pid), [])
            if (hid and not hidden) or (not fs and name is None):
                continue
            out.append(Person(int(pid), name, len(fs), len({f.image_id for f in fs}), bool(hid), bool(conf),
                              tuple(fs if faces is None else fs[:faces])))
        out.sort(key=lambda p: (p.name is None, (p.name or "").casefold(), -p.count, p.id))
        return out

    def person(self, person_id: int) -> Person:
        """One person with all its faces.

        Raises:
            NotFoundError: no such person.
        """
        for p in self.persons(hidden=True):
            if p.id == person_id:
                return p
        with self._engine.connect() as c:
            row = c.execute(text("SELECT id, name, hidden, confirmed FROM persons WHERE id = :p"),
                            {"p": person_id}).first()
        if row is None:
            raise NotFoundError(f"no person {person_id} in this index (see `searchindex people`)")
        return Person(int(row[0]), row[1], 0, 0, bool(row[2]), bool(row[3]))

    def face(self, face_id: int) -> Face:
        """One face.

        Raises:
            NotFoundError: no such face.
        """
        with self._engine.connect() as c:
            row = c.execute(text(f"SELECT {_FACE_COLUMNS} FROM faces f JOIN images i ON i.id = f.image_id "
                                 "WHERE f.id = :f"), {"f": face_id}).first()
        if row is None:
            raise NotFoundError(f"no face {face_id} in this index (see `searchindex people --json`)")
        return _face(row)

    def faces_of(self, image_id: int) -> list[Face]:
        """The faces of one image, left to right."""
        with self._engine.connect() as c:
            rows = c.execute(text(f"SELECT {_FACE_COLUMNS} FROM faces f JOIN images i ON i.id = f.image_id "
                                  'WHERE f.image_id = :i ORDER BY f."left", f.id'), {"i": image_id}).all()
        return [_face(r) for r in rows]

    # -- a user's fixes --------------------------------------------------------------------------

    def _person_row(self, c: Connection, person_id: int) -> tuple[int, str | None]:
        row = c.execute(text("SELECT id, name FROM persons WHERE id = :p"), {"p": int(person_id)}).first()
        if row is None:
            raise NotFoundError(f"no person {person_id} in this index (see `searchindex people`)")
        return int(row[0]), row[1]

    def name(self, person_id: int, name: str) -> None:
        """Name a person (which also confirms it).

        Raises:
            NotFoundError: no such person.
            ParameterError: an empty name, or one another person has (merge them instead).
        """
        clean = _check_name(name)
        with self._engine.begin() as c:
            self._person_row(c, person_id)
            other = c.execute(text("SELECT id FROM persons WHERE lower(name) = lower(:n) AND id != :p"),
                              {"n": clean, "p": int(person_id)}).first()
            if other is not None:
                raise ParameterError(f"person {other[0]} is already named {clean!r}: to make them one, "
                                     f"`searchindex people merge {other[0]} {person_id}`", "name")
            c.execute(text("UPDATE persons SET name = :n, confirmed = 1 WHERE id = :p"),
                      {"n": clean, "p": int(person_id)})

    def hide(self, person_id: int, hidden: bool = True) -> None:
        """Hide a person from the listing (or show it again); its faces stay in it.

        Raises:
            NotFoundError: no such person.
        """
        with self._engine.begin() as c:
            self._person_row(c, person_id)
            c.execute(text("UPDATE persons SET hidden = :h WHERE id = :p"), {"h": int(hidden), "p": int(person_id)})

    def merge(self, keep: int, other: int) -> int:
        """Move every face of person ``other`` into ``keep`` and delete ``other``; ``keep`` keeps its
        name (or takes ``other``'s) and is confirmed.  A face of ``other`` in a photo where ``keep``
        already has a face is left without a person and marked "not ``keep``" (one photo never shows
        one person twice).  Returns how many faces moved.

        Raises:
            NotFoundError: no such person.
            ParameterError: the same person twice, or two different names.
        """
        if int(keep) == int(other):
            raise ParameterError("merge needs two different persons", "ids")
        with self._engine.begin() as c:
            _, keep_name = self._person_row(c, keep)
            _, other_name = self._person_row(c, other)
            if keep_name and other_name and keep_name.casefold() != other_name.casefold():
                raise ParameterError(f"persons {keep} ({keep_name}) and {other} ({other_name}) have different "
                                     f"names: rename one first if they are the same person", "ids")
            taken = {r[0] for r in c.execute(text("SELECT image_id FROM faces WHERE person_id = :p"), {"p": keep})}
            moved = 0
            for fid, image_id in c.execute(text("SELECT id, image_id FROM faces WHERE person_id = :p ORDER BY "
                                                "quality * width * height DESC"), {"p": other}).all():
                if image_id in taken:
                    c.execute(text("UPDATE faces SET person_id = NULL WHERE id = :f"), {"f": fid})
                    c.execute(text("INSERT OR IGNORE INTO face_rejections VALUES (:f, :p)"), {"f": fid, "p": keep})
                    continue
                taken.add(image_id)
                c.execute(text("UPDATE faces SET person_id = :p, flags = flags | :m WHERE id = :f"),
                          {"p": keep, "m": FLAG_MANUAL, "f": fid})
                moved += 1
            c.execute(text("UPDATE OR IGNORE face_rejections SET person_id = :k WHERE person_id = :o"),
                      {"k": keep, "o": other})
            c.execute(text("DELETE FROM face_rejections WHERE person_id = :o"), {"o": other})
            c.execute(text("UPDATE persons SET confirmed = 1, name = coalesce(name, :n) WHERE id = :k"),
                      {"n": other_name, "k": keep})
            c.execute(text("DELETE FROM persons WHERE id = :o"), {"o": other})
        return moved

    def move(self, face_id: int, person_id: int | None) -> int:
        """Put a face in a person (``None``: a new person of its own); the face stays there whatever
        grouping does later, and the person is confirmed.  Returns the person's id.

        Raises:
            NotFoundError: no such face or person.
            ParameterError: the person already has another face in that photo.
        """
        with self._engine.begin() as c:
            row = c.execute(text("SELECT image_id FROM faces WHERE id = :f"), {"f": int(face_id)}).first()
            if row is None:
                raise NotFoundError(f"no face {face_id} in this index (see `searchindex people --json`)")
            if person_id is None:
                person_id = int(c.execute(text("INSERT INTO persons (name, hidden, confirmed, created_at) "
                                               "VALUES (NULL, 0, 1, :t)"), {"t": time.time()}).lastrowid or 0)
            else:
                self._person_row(c, person_id)
                clash = c.execute(text("SELECT id FROM faces WHERE person_id = :p AND image_id = :i AND id != :f"),
                                  {"p": int(person_id), "i": row[0], "f": int(face_id)}).first()
                if clash is not None:
                    raise ParameterError(f"person {person_id} already has face {clash[0]} in that photo: one photo "
                                         f"never shows one person twice (move face {clash[0]} first)", "face")
            c.execute(text("DELETE FROM face_rejections WHERE face_id = :f AND person_id = :p"),
                      {"f": int(face_id), "p": int(person_id)})
            c.execute(text("UPDATE faces SET person_id = :p, flags = flags | :m WHERE id = :f"),
                      {"p": int(person_id), "m": FLAG_MANUAL, "f": int(face_id)})
            c.execute(text("UPDATE persons SET confirmed = 1 WHERE id = :p"), {"p": int(person_id)})
        return int(person_id)

    def reject(self, face_id: int, person_id: int) -> None:
        """Mark a face as "not this person": it leaves the person if it is in it, and grouping never
        puts it there again (it may join another person).

        Raises:
            NotFoundError: no such face or person.
        """
        with self._engine.begin() as c:
            if c.execute(text("SELECT 1 FROM faces WHERE id = :f"), {"f": int(face_id)}).first() is None:
                raise NotFoundError(f"no face {face_id} in this index (see `searchindex people --json`)")
            self._person_row(c, person_id)
            c.execute(text("INSERT OR IGNORE INTO face_rejections VALUES (:f, :p)"),
                      {"f": int(face_id), "p": int(person_id)})
            c.execute(text("UPDATE faces SET person_id = NULL, flags = flags & ~:m WHERE id = :f AND person_id = :p"),
                      {"f": int(face_id), "p": int(person_id), "m": FLAG_MANUAL})


def carry_faces(old: Engine, new: Engine) -> int:
    """Copy faces, persons, "not this person" marks and searched-image records from the catalog
    behind ``old`` to the images with the same content (sha256) in the catalog behind ``new`` (a
    reindex: faces do not depend on the CLIP model).  Does nothing when ``new`` already has faces
    or persons (a resumed reindex that carried them before).  Returns how many faces were copied."""
    with new.connect() as c:
        if c.execute(text("SELECT (SELECT count(*) FROM faces) + (SELECT count(*) FROM persons)")).scalar():
            return 0
        new_ids: dict[str, list[int]] = {}
        for image_id, sha in c.execute(text("SELECT id, sha256 FROM images")):
            new_ids.setdefault(str(sha), []).append(int(image_id))
    with old.connect() as c:
        persons = c.execute(text("SELECT id, name, hidden, confirmed, created_at FROM persons")).all()
        faces = c.execute(text(
            'SELECT f.id, i.sha256, f."left", f.top, f.width, f.height, f.score, f.quality, f.landmarks, '
            "f.embedding, f.person_id, f.flags FROM faces f JOIN images i ON i.id = f.image_id ORDER BY f.id")).all()
        states = c.execute(text("SELECT i.sha256, s.detector, s.faces, s.error, s.processed_at FROM face_states s "
                                "JOIN images i ON i.id = s.image_id")).all()
        rejections = c.execute(text("SELECT face_id, person_id FROM face_rejections")).all()
    copied = 0
    face_map: dict[int, list[int]] = {}
    with new.begin() as c:
        for row in persons:
            c.execute(text("INSERT INTO persons (id, name, hidden, confirmed, created_at) VALUES (:i, :n, :h, :c, :t)"),
                      {"i": row[0], "n": row[1], "h": row[2], "c": row[3], "t": row[4]})
        for fid, sha, left, top, width, height, score, quality, marks, emb, pid, flags in faces:
            for image_id in new_ids.get(str(sha), ()):
                made = c.execute(text(
                    'INSERT INTO faces (image_id, "left", top, width, height, score, quality, landmarks, embedding, '
                    "person_id, flags) VALUES (:i, :l, :t, :w, :h, :s, :q, :m, :e, :p, :f)"),
                    {"i": image_id, "l": left, "t": top, "w": width, "h": height, "s": score, "q": quality,
                     "m": marks, "e": emb, "p": pid, "f": flags})
                face_map.setdefault(int(fid), []).append(int(made.lastrowid or 0))
                copied += 1
        for sha, detector, n, error, at in states:
            for image_id in new_ids.get(str(sha), ()):
                c.execute(text("INSERT OR REPLACE INTO face_states VALUES (:i, :s, :d, :n, :e, :t)"),
                          {"i": image_id, "s": sha, "d": detector, "n": n, "e": error, "t": at})
        for face_id, person_id in rejections:
            for new_face in face_map.get(int(face_id), ()):
                c.execute(text("INSERT OR IGNORE INTO face_rejections VALUES (:f, :p)"),
                          {"f": new_face, "p": person_id})
    return copied
