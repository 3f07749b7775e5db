"""Korean, Chinese and Japanese text for a word index: overlapping character bigrams.

These scripts do not put spaces between words, and Korean attaches particles to nouns
(서울역에서 = 서울역 + 에서), so SQLite FTS5's ``unicode61`` tokenizer makes one token of
the whole run and a search for 서울역 finds nothing; its trigram tokenizer cannot match a
two-syllable word.  Indexing every pair of neighbouring characters of a CJK run (서울 울역
역에 에서) and searching for the query word's pairs as a phrase (서울 울역) finds a word of two
or more characters anywhere inside a run; a one-character word is searched as a prefix of the
pairs.  Latin words pass through unchanged.

A leaf module (plain text in, plain text out): the catalog uses it to write the index and the
search to write the query, so both split text the same way.
"""

from __future__ import annotations

import re

__all__ = ["bigrams", "fts_terms", "index_form", "is_cjk"]

# Hangul syllables and jamo, CJK ideographs (with extension A and compatibility), kana.
_CJK = "\u1100-\u11ff\u3040-\u30ff\u3130-\u318f\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7a3\uf900-\ufaff"
_CJK_RUN = re.compile(f"[{_CJK}]+")
_TOKEN = re.compile(f"[{_CJK}]+|[^\\W_{_CJK}]+")


def is_cjk(text: str) -> bool:
    """Whether ``text`` holds any Hangul, CJK ideograph or kana."""
    return _CJK_RUN.search(text) is not None


def bigrams(run: str) -> list[str]:
    """The overlapping character pairs of a run of CJK characters (a lone character: itself)."""
    if len(run) < 2:
        return [run] if run else []
    return [run[i : i + 2] for i in range(len(run) - 1)]


def index_form(text: str) -> str:
    """``text`` as the word index stores it: every CJK run replaced by its bigrams, the rest as is.

    >>> index_form("서울역에서 Coffee")
    '서울 울역 역에 에서 Coffee'
    """
    return " ".join(_CJK_RUN.sub(lambda m: " " + " ".join(bigrams(m.group())) + " ", text).split())


def fts_terms(word: str) -> list[str]:
    """The FTS5 query terms for one query word, each quoted so that no user text is read as syntax.

    A CJK run becomes one phrase of its bigrams; a one-character run a prefix query; a word
    mixing scripts (``KTX역``) becomes one term per piece (all must match).
    """
    terms = []
    for piece in _TOKEN.findall(word.lower()):
        if _CJK_RUN.fullmatch(piece):
            terms.append(f'"{piece}"*' if len(piece) == 1 else '"' + " ".join(bigrams(piece)) + '"')
        else:
            terms.append(f'"{piece}"')
    return terms
