"""The search API's query parameters, derived from the one description of the search options.

:func:`query_parameters` makes the FastAPI dependency of ``GET /api/search``: a query
parameter for each option the API takes (``SearchOption.api``), with its description in
the OpenAPI page; it hands the values on by option name, as text, for
:func:`~searchindex.frontend.params.search_params` to check, so a bad value gets the
CLI's message and a 400 (example images, given by image_id, are read as ids here).
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Sequence
from typing import Annotated, Any

from fastapi import Query

from ..frontend.options import SEARCH_OPTIONS, SearchOption
from ..frontend.params import example_ids

__all__ = ["query_parameters"]


def query_parameters(options: Sequence[SearchOption] = SEARCH_OPTIONS) -> Callable[..., Awaitable[dict[str, Any]]]:
    """A FastAPI dependency reading the API's search parameters (those of ``options`` with an
    ``api`` name) from the query string; it returns them by option name.

    Raises (when called):
        ParameterError: an example image that is no image_id.
    """
    taken = [(o.api, o) for o in options if o.api is not None]

    async def read(**values: Any) -> dict[str, Any]:
        given: dict[str, Any] = {}
        for name, option in taken:
            value = values[name]
            if option.api_ids:
                value = example_ids(value, option.flag, option.param)
            given[option.name] = value
        return given

    # FastAPI reads the parameters from the signature: give it one parameter per option.
    read.__signature__ = inspect.Signature([_parameter(name, o) for name, o in taken])  # type: ignore[attr-defined]
    return read


def _parameter(name: str, option: SearchOption) -> inspect.Parameter:
    """One query parameter: repeated text for a repeatable option, else text (checked by the library)."""
    description = option.api_help or option.help
    if option.multiple:
        return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=[],
                                 annotation=Annotated[list[str], Query(description=description)])
    default = None if option.default is None else str(option.default)
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default,
                             annotation=Annotated[str | None, Query(description=description)])
