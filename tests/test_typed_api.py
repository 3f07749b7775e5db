"""The library's options are typed parameters: a type checker catches a misspelt one, and bad
values at run time are the library's own errors."""

from __future__ import annotations

import inspect
import os
import re
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from searchindex import Index, SearchRequest
from searchindex.errors import ParameterError, QueryError

ROOT = Path(__file__).resolve().parent.parent

_SNIPPET = '''from searchindex import Index


def run(index: Index) -> None:
    index.search("x", {keyword}=0.2)
'''


def test_mypy_strict_catches_a_misspelt_search_option(tmp_path: Path) -> None:
    pytest.importorskip("mypy")
    (tmp_path / "typo.py").write_text(_SNIPPET.format(keyword="threshhold"))
    (tmp_path / "right.py").write_text(_SNIPPET.format(keyword="min_score"))
    env = {**os.environ, "MYPYPATH": str(ROOT)}
    run = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--follow-imports=silent", "--no-error-summary",
         "--cache-dir", str(ROOT / ".mypy_cache"), str(tmp_path / "typo.py"), str(tmp_path / "right.py")],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    lines = [line for line in run.stdout.splitlines() if ": error:" in line]
    assert run.returncode == 1, run.stdout + run.stderr
    assert len(lines) == 1 and "typo.py:5" in lines[0] and '"threshhold"' in lines[0], run.stdout


@pytest.mark.parametrize("method", ["search", "search_image"])
def test_search_parameters_are_the_request_fields(method: str) -> None:
    """Described once: the keyword-only parameters of search are exactly SearchRequest's fields."""
    params = inspect.signature(getattr(Index, method)).parameters
    keywords = {n for n, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY} - {"request"}
    assert keywords == {f.name for f in fields(SearchRequest)} - {"k"}
    assert not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    doc = Index.search.__doc__ or ""
    for name in keywords:  # the docstring lists every one
        assert re.search(rf"\b{name}\b", doc), name


def test_add_folder_takes_no_free_keywords() -> None:
    for method in (Index.add_folder, Index.add_files, Index.reindex):
        params = inspect.signature(method).parameters
        assert not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()), method
        assert {"progress", "batch_size", "workers", "max_megapixels", "max_file_bytes", "stop"} <= set(params)


@pytest.mark.parametrize(("query", "options", "error", "message"), [
    ("a star", {"k": 1.5}, ParameterError, "k must be a whole number"),
    ("a star", {"k": 0}, ParameterError, "k must be at least 1"),
    ("a star", {"k": True}, ParameterError, "k must be a whole number"),
    ("a star", {"pool": "many"}, ParameterError, "pool must be a whole number"),
    ("a star", {"min_score": "high"}, ParameterError, "min_score must be a number"),
    ("a star", {"filters": {"min_width": 3}}, ParameterError, "filters must be a Filters"),
    ("a star", {"mode": "fast"}, QueryError, "mode must be one of"),
    ("a star", {"threshold": 0.2}, QueryError, "threshold must be 'auto' or None"),
    (None, {}, QueryError, "a query is a text"),
    (42, {}, QueryError, "a query is a text"),
])
def test_bad_values_are_the_library_errors(small_index: Path, query: object, options: dict[str, object],
                                           error: type[Exception], message: str) -> None:
    with Index.open(small_index, device="cpu") as index, pytest.raises(error, match=message):
        index.search(query, **options)  # type: ignore[arg-type]


def test_numpy_integers_are_whole_numbers(small_index: Path) -> None:
    np = pytest.importorskip("numpy")
    with Index.open(small_index, device="cpu") as index:
        assert len(index.search("a star", k=np.int64(3))) == 3  # type: ignore[arg-type]


def test_bad_indexing_options_are_parameter_errors(small_index: Path, small_folder: Path) -> None:
    with Index.open(small_index, device="cpu") as index:
        for options, message in (({"batch_size": 0}, "batch_size"), ({"workers": 1.5}, "workers"),
                                 ({"max_megapixels": float("nan")}, "max_megapixels"),
                                 ({"stop": True}, "stop"), ({"progress": 3}, "progress")):
            with pytest.raises(ParameterError, match=message):
                index.add_folder(small_folder, **options)  # type: ignore[arg-type]
        assert index.count() == 40
