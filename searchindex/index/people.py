"""The facade's people methods: find faces, group them into persons, name and fix them
(:mod:`searchindex.enrich.faces`)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from .state import IndexState

if TYPE_CHECKING:
    from ..faceresults import Face, FaceProgress, FaceSummary, GroupingSummary, Person
    from ..models.faces import FaceEngine
    from ..store.catalog.faces import FaceRepository

__all__ = ["People"]


class People(IndexState):
    """:meth:`find_faces`, :meth:`persons`, :meth:`person`, :meth:`faces_in`, :meth:`name_person`,
    :meth:`merge_persons`, :meth:`move_face`, :meth:`reject_face`, :meth:`hide_person` and
    :meth:`face_counts` of :class:`~searchindex.index.Index`."""

    @property
    def _faces(self) -> FaceRepository:
        from ..enrich.faces import face_repository

        self._follow_swap()
        return face_repository(self.catalog)

    def find_faces(self, detector: str = "hog", *, detect_side: int | None = None, group: bool = True,
                   progress: Callable[[FaceProgress], None] | None = None,
                   stop: threading.Event | None = None, engine: FaceEngine | None = None) -> FaceSummary:
        """Search every image not searched yet (or changed since) for faces, then group the faces
        into persons; each batch is committed at once, so an interrupted run resumes.

        ``detector``: ``"hog"`` (default, fast) or ``"cnn"`` (finds turned and smaller faces,
        much slower on a CPU); ``detect_side``: long side of the copy the detector searches
        (default :data:`~searchindex.models.faces.DETECT_SIDE`); ``engine``: a loaded
        :class:`~searchindex.models.faces.FaceEngine` (``detector`` and ``detect_side`` are then
        its own).  The choice is recorded: a watch (:meth:`watch`) searches the images it adds so.

        Raises:
            MissingExtraError (``searchindex[faces]``), ModelError (a bad detector),
            IndexLockedError, IndexWriteError.
        """
        from ..enrich.faces import find_faces
        from ..models.faces import DETECT_SIDE, FaceEngine, face_models
        from .following import FaceChoice, record_face_choice

        face_models()  # the missing extra's message before anything else happens
        if engine is None:
            engine = FaceEngine(detector, detect_side=detect_side or DETECT_SIDE)
            choice = FaceChoice(detector, detect_side)
        else:
            choice = FaceChoice(engine.detector, None if engine.detect_side == DETECT_SIDE else engine.detect_side)
        with self._writing():
            summary = find_faces(self.catalog, engine, group=group, progress=progress, stop=stop)
            record_face_choice(self.catalog, choice)  # once the run went: a watch searches new images so
            return summary

    def group_faces(self) -> GroupingSummary:
        """Run one grouping round over the stored faces (:meth:`find_faces` runs one after its faces)."""
        from ..enrich.faces import group_faces

        with self._writing():
            return group_faces(self._faces)

    def persons(self, *, hidden: bool = False, faces: int | None = None) -> list[Person]:
        """Persons: named first (by name), then unnamed by number of faces; ``hidden`` includes
        hidden ones; each with up to ``faces`` faces (``None``: all), its representative first."""
        return self._faces.persons(hidden=hidden, faces=faces)

    def person(self, person_id: int) -> Person:
        """One person with all its faces.  Raises NotFoundError."""
        return self._faces.person(int(person_id))

    def face(self, face_id: int) -> Face:
        """One face.  Raises NotFoundError."""
        return self._faces.face(int(face_id))

    def faces_in(self, image_id: int) -> list[Face]:
        """The faces found in one image, left to right, with their persons."""
        return self._faces.faces_of(int(image_id))

    def name_person(self, person_id: int, name: str) -> Person:
        """Name a person (which confirms it: grouping never merges it with another).

        Raises:
            NotFoundError, ParameterError (empty, or another person's name: merge them instead).
        """
        with self._writing():
            self._faces.name(int(person_id), name)
        return self.person(int(person_id))

    def merge_persons(self, keep: int, other: int) -> Person:
        """Make ``other`` part of ``keep`` (see :meth:`FaceRepository.merge
        <searchindex.store.catalog.faces.FaceRepository.merge>`); returns the merged person.

        Raises:
            NotFoundError, ParameterError (the same person, or two different names).
        """
        with self._writing():
            self._faces.merge(int(keep), int(other))
        return self.person(int(keep))

    def move_face(self, face_id: int, person_id: int | None) -> Person:
        """Put a face in a person (``None``: a new person of its own); it stays there whatever
        grouping does later.  Returns the person.

        Raises:
            NotFoundError, ParameterError (the person already has another face in that photo).
        """
        with self._writing():
            pid = self._faces.move(int(face_id), None if person_id is None else int(person_id))
        return self.person(pid)

    def reject_face(self, face_id: int, person_id: int) -> None:
        """"Not this person": the face leaves the person and never joins it again.  Raises NotFoundError."""
        with self._writing():
            self._faces.reject(int(face_id), int(person_id))

    def hide_person(self, person_id: int, hidden: bool = True) -> None:
        """Hide a person from :meth:`persons` (or show it again).  Raises NotFoundError."""
        with self._writing():
            self._faces.hide(int(person_id), hidden)

    def face_counts(self) -> dict[str, int]:
        """Images searched for faces, faces, faces in a person, persons, named persons."""
        return self._faces.counts()
