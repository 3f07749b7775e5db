"""Text a user gave (a query, a label, a term) checked once at the library's boundary."""

from __future__ import annotations

from .errors import QueryError

__all__ = ["checked_text"]


def checked_text(value: object, what: str) -> str:
    """``value`` if it is text that can be stored and encoded (UTF-8), else :class:`QueryError`.

    Bytes that are not UTF-8 in a command line reach Python as lone surrogates
    (``"\\udcff"``); they cannot be tokenized, cached or matched, so they are refused here
    with a message rather than as a ``UnicodeEncodeError`` deep in a search.
    """
    if not isinstance(value, str):
        raise QueryError(f"{what} must be text (a str), not {type(value).__name__}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        shown = value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        raise QueryError(f"{what} holds bytes that are not UTF-8 text: {shown[:80]!r}") from None
    return value
