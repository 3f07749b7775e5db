"""The people API under ``/api/people`` and ``/api/faces``: persons, their faces, and the fixes
(name, merge, move, not this person, hide), each a few lines over :class:`searchindex.Index`.

Ids are numbers, never paths; a state-changing request passes the same-origin rules of
:mod:`searchindex.web.security` like every other; errors are the API's JSON error objects.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from fastapi import APIRouter, Body, Path, Query
from fastapi.responses import Response

from .api import json_response
from .files import StaleFileError, open_indexed

if TYPE_CHECKING:
    from .app import WebApp

__all__ = ["people_router"]

_ID = Path(ge=1, le=2**63 - 1)


def face_crop(data: bytes, name: str, box: tuple[int, int, int, int], size: int) -> bytes:
    """A square JPEG of the face at ``box`` (with a margin of a third of its side), ``size`` pixels."""
    import io

    from ..models.images import decode_image

    image = decode_image(data, name).image
    left, top, width, height = box
    side = max(width, height) * 5 // 3
    cx, cy = left + width // 2, top + height // 2
    cut = image.crop((cx - side // 2, cy - side // 2, cx + side // 2, cy + side // 2)).resize((size, size))
    out = io.BytesIO()
    cut.save(out, "JPEG", quality=85)
    return out.getvalue()


def people_router(state: WebApp) -> APIRouter:
    """The people routes over ``state``."""
    router = APIRouter(prefix="/api", tags=["people"])

    @router.get("/people")
    async def people(hidden: bool = False, faces: Annotated[int, Query(ge=0, le=1000)] = 1) -> Response:
        """Persons, named first then by size, each with up to ``faces`` faces (representative first)."""
        found = await state.run(lambda: state.index.persons(hidden=hidden, faces=faces))
        return json_response({"people": [p.to_dict() for p in found]})

    @router.get("/people/{person_id}")
    async def person(person_id: Annotated[int, _ID]) -> Response:
        """One person with all its faces."""
        return json_response((await state.run(state.index.person, person_id)).to_dict())

    @router.post("/people/{person_id}/name")
    async def name(person_id: Annotated[int, _ID], name: Annotated[str, Body(embed=True, max_length=200)]) -> Response:
        """Name a person (which confirms it)."""
        done = await state.run(state.locked, lambda: state.index.name_person(person_id, name))
        return json_response(done.to_dict())

    @router.post("/people/{person_id}/merge")
    async def merge(person_id: Annotated[int, _ID], other: Annotated[int, Body(embed=True, ge=1)]) -> Response:
        """Make person ``other`` part of this person."""
        done = await state.run(state.locked, lambda: state.index.merge_persons(person_id, other))
        return json_response(done.to_dict())

    @router.post("/people/{person_id}/hide")
    async def hide(person_id: Annotated[int, _ID], hidden: Annotated[bool, Body(embed=True)] = True) -> Response:
        """Hide a person from the list (``hidden: false`` shows it again)."""
        await state.run(state.locked, lambda: state.index.hide_person(person_id, hidden))
        return Response(status_code=204)

    @router.post("/faces/{face_id}/move")
    async def move(face_id: Annotated[int, _ID],
                   person: Annotated[int | None, Body(embed=True, ge=1)] = None) -> Response:
        """Put a face in a person (``person: null``: a new person of its own)."""
        done = await state.run(state.locked, lambda: state.index.move_face(face_id, person))
        return json_response(done.to_dict())

    @router.post("/faces/{face_id}/not")
    async def not_person(face_id: Annotated[int, _ID], person: Annotated[int, Body(embed=True, ge=1)]) -> Response:
        """This face is not that person: it leaves it and never joins it again."""
        await state.run(state.locked, lambda: state.index.reject_face(face_id, person))
        return Response(status_code=204)

    @router.get("/faces/{face_id}/crop")
    async def crop(face_id: Annotated[int, _ID], size: Annotated[int, Query(ge=32, le=512)] = 128) -> Response:
        """The face cut from its photo (JPEG, EXIF orientation applied, a margin around the box)."""
        def make() -> bytes | None:
            face = state.index.face(face_id)
            details = state.index.image(face.image_id)
            try:
                handle = open_indexed(details)
            except StaleFileError:
                return None
            with handle:
                return face_crop(handle.read(), details.path, face.box, size)

        data = await state.run(make, pool=state.thumbnail_pool)
        if data is None:
            return Response(status_code=404)
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})

    @router.get("/images/{image_id}/faces")
    async def image_faces(image_id: Annotated[int, _ID]) -> Response:
        """The faces in one image, left to right, with their person ids (for outlining them)."""
        return json_response({"faces": [f.to_dict() for f in await state.run(state.index.faces_in, image_id)]})

    return router
