"""Saved concepts: a query text with liked and unliked example images (see :meth:`searchindex.Index.save_concept`)."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence

from sqlalchemy import delete
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from ...errors import QueryError
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

    def remove(self, name: str) -> bool:
        """Forget a concept; False when there was none of that name."""
        with Session(self._engine) as s, s.begin():
            existed = s.get(ConceptRow, name) is not None
            s.execute(delete(ConceptRow).where(ConceptRow.name == name))
        return existed
