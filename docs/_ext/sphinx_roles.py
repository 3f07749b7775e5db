"""Griffe extension for the API page: render the docstrings' Sphinx roles as code.

The docstrings cross-reference with reStructuredText roles (:class:`~searchindex.query.Term`),
which Markdown would show literally. Each becomes inline code naming the object, the way
Sphinx displays it (a leading ``~`` keeps only the last component).
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:class|meth|func|data|mod|attr|exc|obj):`(~?)([^`]+)`")


def _as_code(match: re.Match[str]) -> str:
    tilde, target = match.groups()
    return f"`{target.rsplit('.', 1)[-1] if tilde else target}`"


class SphinxRoles(griffe.Extension):
    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _ROLE.sub(_as_code, obj.docstring.value)
