"""What the people (faces) API returns: faces, persons, and what a face pass did.

Like :mod:`searchindex.results` (whose :class:`~searchindex.results.JsonForm` they use), these are
frozen dataclasses with one JSON form, and this module imports nothing heavy.
"""

from __future__ import annotations

from dataclasses import dataclass

from .results import JsonForm

__all__ = ["Face", "FaceFailure", "FaceProgress", "FaceSummary", "GroupingSummary", "Person"]


@dataclass(frozen=True)
class Face(JsonForm):
    """One face in one image; ``box`` is (left, top, width, height) in the image's pixels with its
    EXIF orientation applied, as it is shown."""

    id: int
    image_id: int
    path: str
    box: tuple[int, int, int, int]
    score: float  # the detector's confidence
    quality: float  # 0..1, how frontal (from the landmarks)
    person_id: int | None = None


@dataclass(frozen=True)
class Person(JsonForm):
    """A person: faces grouped together, perhaps named; ``faces`` lists the representative face first."""

    id: int
    name: str | None
    count: int  # faces
    images: int  # photos the person is in
    hidden: bool
    confirmed: bool  # named or confirmed by a user: grouping never merges it with another person
    faces: tuple[Face, ...] = ()


@dataclass(frozen=True)
class FaceFailure(JsonForm):
    """An indexed image that could not be searched for faces, and why."""

    path: str
    reason: str


@dataclass(frozen=True)
class FaceProgress(JsonForm):
    """Reported after each committed batch of a face pass."""

    done: int
    total: int
    faces: int
    failed: int


@dataclass(frozen=True)
class GroupingSummary(JsonForm):
    """What one grouping round did."""

    joined: int  # faces that joined an existing person
    new_persons: int
    grouped: int  # faces in the new persons
    unassigned: int  # faces left without a person (retried after later runs)


@dataclass(frozen=True)
class FaceSummary(JsonForm):
    """What one ``faces`` run did."""

    detector: str
    images: int  # images searched in this run
    faces: int  # faces found in them
    failed: int
    already: int  # images searched by earlier runs
    seconds: float
    grouping: GroupingSummary | None = None
    failures: tuple[FaceFailure, ...] = ()
    interrupted: bool = False
