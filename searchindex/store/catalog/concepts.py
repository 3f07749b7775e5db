"""Saved concepts: a query text with liked and unliked example images (see :meth:`searchindex.Index.save_concept`)."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence

from sqlalchemy import delete, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from ...errors import NotFoundError, QueryError
from ...results import Concept
from .schema import ConceptRow, alive_ids

__all__ = ["ConceptRepository"]


class ConceptRepository:
    """The ``concepts`` table."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def save(self, name: str, query: str | None, like: Sequence[int], unlike: Sequence[int]) -> Concept:
        """Create or replace the concept ``name`` (surrounding blanks dropped; repeated examples once).

        Raises:
            QueryError: an empty name, nothing to search for, or an example id not in the index.
        """
        name = name.strip()
        if not name:
            raise QueryError("a concept needs a name")
        query = query.strip() if query and query.strip() else None
        if query is None and not like:
            raise QueryError("a concept needs a query text or at least one liked example")
        like, unlike = list(dict.fromkeys(int(i) for i in like)), list(dict.fromkeys(int(i) for i in unlike))
        now = time.time()
        with Session(self._engine) as s, s.begin():
            alive = alive_ids(s, like + unlike)
            for i in like + unlike:
                if i not in alive:
                    raise QueryError(f"no image with id {i} in this index (concept example)")
            s.merge(ConceptRow(name=name, query=query, like_ids=json.dumps(like), unlike_ids=json.dumps(unlike),
                               updated_at=now))
        return Concept(name, query, tuple(like), tuple(unlike), now)

    def all(self) -> list[Concept]:
        """Every saved concept, by name; example ids of images removed since are left out."""
        with Session(self._engine) as s:
            rows = list(s.scalars(select(ConceptRow).order_by(ConceptRow.name)))
            ids = {i for r in rows for i in (*json.loads(r.like_ids), *json.loads(r.unlike_ids))}
            alive = alive_ids(s, sorted(ids))
        return [Concept(r.name, r.query, tuple(i for i in json.loads(r.like_ids) if i in alive),
                        tuple(i for i in json.loads(r.unlike_ids) if i in alive), r.updated_at) for r in rows]

    def get(self, name: str) -> Concept:
        """The saved concept called ``name``.

        Raises:
            NotFoundError: no concept of that name (the message lists those there are).
        """
        saved = self.all()
        for c in saved:
            if c.name == name:
                return c
        known = ", ".join(c.name for c in saved) or "none yet"
        raise NotFoundError(f"no concept named {name!r} (concepts in this index: {known})")

    def remove(self, name: str) -> bool:
        """Forget a concept; False when there was none of that name."""
        with Session(self._engine) as s, s.begin():
            existed = s.get(ConceptRow, name) is not None
            s.execute(delete(ConceptRow).where(ConceptRow.name == name))
        return existed
