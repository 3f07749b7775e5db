"""Person names in the query box: ``Mom at the beach`` searches "at the beach" among Mom's photos.

Two rules, so that what happens is predictable:

- ``@Name`` or ``@"First Last"``: always a person (case-insensitive); an unknown name is an error.
- A known person's name written exactly as it is stored (same capitals, whole words) anywhere in
  the query text: that person.  A name that is also an ordinary word matches only with its
  capitals: with a person named "Rose", ``Rose in the garden`` means her, ``a rose in the garden``
  means the flower.

The words left (less joining words such as "and" or "with" at either end) are the CLIP query; when
none are left, the query is "a photo", which ranks the person's photos by how photo-like they are.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from ..errors import QueryError

__all__ = ["EMPTY_REST", "split_person_names"]

#: The query text when the query held nothing but names.
EMPTY_REST = "a photo"

_EXPLICIT = re.compile(r'@"([^"]+)"|@([^\s,;]+)')
_JOINERS = re.compile(r"^(?:(?:and|with|&|,|;)\s*)+|(?:\s*(?:and|with|&|,|;))+$", re.IGNORECASE)


def split_person_names(text: str, names: Sequence[str]) -> tuple[str, list[str]]:
    """(the query text without the person names, the names found, as stored).

    Raises:
        QueryError: an ``@name`` that no person has.
    """
    by_fold = {n.casefold(): n for n in names}
    found: list[str] = []

    def explicit(m: re.Match[str]) -> str:
        wanted = " ".join((m.group(1) or m.group(2)).split())
        name = by_fold.get(wanted.casefold())
        if name is None:
            known = ", ".join(sorted(names)[:10]) or "none yet"
            raise QueryError(f"no person named {wanted!r} in this index (named persons: {known})")
        if name not in found:
            found.append(name)
        return " "

    rest = _EXPLICIT.sub(explicit, text)
    for name in sorted(names, key=len, reverse=True):  # "Anna Maria" before "Anna"
        pattern = re.compile(rf"(?<!\w){re.escape(name)}(?!\w)")
        if pattern.search(rest):
            rest = pattern.sub(" ", rest)
            if name not in found:
                found.append(name)
    if not found:
        return text, []
    rest = _JOINERS.sub("", " ".join(rest.split())).strip()
    return (rest or EMPTY_REST), found
