"""The restructure's seams (issue 14): layers, one home per name, one JSON form, SearchRequest, the Producer."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from collections.abc import Iterator, Sequence, Set
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from searchindex import FailureRecord, Index, QueryError, SearchRequest, SearchResult
from searchindex.cli import cli
from searchindex.ingest.produce import ReadLimits, Result, read_file
from searchindex.ingest.scan import FileEntry
from searchindex.models.encoders import Encoder
from searchindex.results import DuplicateGroup, DuplicateImage, IndexSummary
from searchindex.store.catalog.filters import Filters

ROOT = Path(__file__).resolve().parent.parent


def test_help_imports_no_heavy_module() -> None:
    probe = ("import sys\nfrom searchindex.cli import main\nsys.argv = ['searchindex', '--help']\n"
             "try:\n    main()\nexcept SystemExit:\n    pass\n"
             "heavy = ('torch', 'numpy', 'sqlalchemy', 'PIL', 'faiss')\n"
             "print('HEAVY', sorted(m for m in heavy if m in sys.modules))\n")
    res = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    assert "Search your photos" in res.stdout
    assert "HEAVY []" in res.stdout


def test_import_layers_hold() -> None:
    """.importlinter: cli -> demo -> index -> ingest|search|enrich -> store|models, and no cycles inside."""
    configuration = pytest.importorskip("importlinter.configuration", reason="import-linter is in the dev extra")
    configuration.configure()
    from importlinter.application.use_cases import lint_imports

    kept = lint_imports(config_filename=str(ROOT / ".importlinter"), no_logo=True, cache_dir=None)
    assert kept, "an import points the wrong way (see lint-imports)"


def _top_level_names(path: Path) -> tuple[set[str], list[str]]:
    """(names a module defines at its top level, its ``__all__``), read from its source."""
    import ast

    defined: set[str] = set()
    exported: list[str] = []
    body = list(ast.parse(path.read_text()).body)
    while body:
        node = body.pop(0)
        if isinstance(node, (ast.If, ast.Try)):
            handlers = getattr(node, "handlers", ())
            body[:0] = [*node.body, *node.orelse, *(h for handler in handlers for h in handler.body)]
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            defined.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names = {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
            defined |= names
            if "__all__" in names and node.value is not None:
                exported = list(ast.literal_eval(node.value))
    return defined, exported


def test_each_exported_name_has_one_home() -> None:
    """A module's ``__all__`` lists what it defines, never a name it imports from another module, so that
    every name is imported from the module that defines it (the package root's lazy API aside)."""
    package = ROOT / "searchindex"
    borrowed = {}
    for path in sorted(package.rglob("*.py")):
        if path == package / "__init__.py":
            continue
        defined, exported = _top_level_names(path)
        if extra := [n for n in exported if n not in defined]:
            borrowed[str(path.relative_to(ROOT))] = extra
    assert borrowed == {}


def test_lazy_api_names_point_at_their_defining_modules() -> None:
    import searchindex

    for name, module in searchindex._LAZY.items():
        path = ROOT / "searchindex" / module.replace(".", "/")
        defined, _ = _top_level_names(path / "__init__.py" if path.is_dir() else path.with_suffix(".py"))
        assert name in defined, f"searchindex.{name} is not defined in searchindex.{module}"


def test_json_form_is_plain_and_nested() -> None:
    failure = FailureRecord("/p/x.jpg", 3, 7, "not a recognised image format")
    summary = IndexSummary(scanned=2, indexed=1, unchanged=0, failed=1, seconds=0.5, failures=(failure,))
    data = summary.to_dict()
    assert data["failures"] == [
        {"path": "/p/x.jpg", "size": 3, "mtime_ns": 7, "reason": "not a recognised image format"}]
    group = DuplicateGroup((DuplicateImage("/a", 1, 4, 4, 10, 1, None, 1.0),
                            DuplicateImage("/b", 2, 2, 2, 5, 2, None, 0.99)))
    assert group.to_dict()["images"][1] == {"path": "/b", "image_id": 2, "width": 2, "height": 2, "size": 5,
                                            "mtime_ns": 2, "taken_at": None, "similarity": 0.99}
    result = SearchResult(1, np.float32(0.5).item(), "/a", 1, 4, 4, "PNG", 10, "0" * 64, tags=("circle",))
    assert json.loads(json.dumps(result.to_dict()))["tags"] == ["circle"]


def test_cli_json_is_the_library_json(shapes_index: Path) -> None:
    """The CLI prints exactly the results' to_dict(): a web API using to_dict() cannot drift from it."""
    res = CliRunner().invoke(cli, ["search", "a photo of a red circle", "--index", str(shapes_index), "-k", "4",
                                   "--json"])
    assert res.exit_code == 0, res.output
    printed = [json.loads(line) for line in res.output.splitlines()]
    with Index.open(shapes_index) as index:
        expected = [json.loads(json.dumps(r.to_dict())) for r in index.search("a photo of a red circle", k=4)]
        info = index.info().to_dict()
    assert printed == expected and len(printed) == 4
    res = CliRunner().invoke(cli, ["info", "--index", str(shapes_index), "--json"])
    got = json.loads(res.output)
    assert got == json.loads(json.dumps(info))


def test_search_request_decides_what_front_ends_leave_open() -> None:
    assert SearchRequest.from_options().k == 10
    cut = SearchRequest.from_options(threshold="0.3")
    assert (cut.k, cut.min_score, cut.threshold) == (None, 0.3, None)  # a number is a floor; no k: no limit
    both = SearchRequest.from_options(threshold=0.2, min_score=0.25, k=5)
    assert (both.k, both.min_score) == (5, 0.25)  # the higher floor counts; a given k stays
    assert SearchRequest.from_options(threshold="auto").threshold == "auto"
    with pytest.raises(QueryError, match="neither 'auto' nor a number"):
        SearchRequest.from_options(threshold="most")
    with pytest.raises(QueryError, match="between -1 and 1"):
        SearchRequest.from_options(threshold="2")
    with pytest.raises(QueryError, match="mode must be one of"):
        SearchRequest(mode="fuzzy")
    with pytest.raises(QueryError, match="cannot be combined"):
        SearchRequest(like=("a.jpg",), min_score=0.2)
    assert SearchRequest(like="a.jpg").like == ("a.jpg",)


def test_search_takes_a_request_or_keywords_not_both(shapes_index: Path) -> None:
    with Index.open(shapes_index) as index:
        request = SearchRequest(k=3, filters=Filters(min_width=1))
        by_request = index.search("a photo of a blue square", request=request)
        by_keywords = index.search("a photo of a blue square", k=3, filters=Filters(min_width=1))
        assert [r.path for r in by_request] == [r.path for r in by_keywords] and len(by_request) == 3
        with pytest.raises(QueryError, match="not both"):
            index.search("x", request=request, sort="date")
        with pytest.raises(TypeError, match="mode"):
            index.search_vector(index.embed("x"), mode="text")


class SerialProducer:
    """A second execution engine, as small as the Producer protocol allows: read and encode one by one."""

    def __init__(self, encoder: Encoder) -> None:
        self.encoder = encoder
        self.batches_seen: list[int] = []
        self.closed = False

    def produce(self, batches: Sequence[Sequence[FileEntry]], known: Set[str]) -> Iterator[list[Result]]:
        for batch in batches:
            self.batches_seen.append(len(batch))
            out: list[Result] = []
            spec = self.encoder.pixel_spec
            for entry in batch:
                read = read_file(entry, known, spec or self.encoder, ReadLimits())
                if isinstance(read, FailureRecord):
                    out.append(read)
                elif read.pixels is None:
                    out.append(read.produced)
                else:
                    pixels = [read.pixels]
                    encoded = self.encoder.encode_pixels(pixels) if spec else self.encoder.encode_batch(pixels)
                    out.append(dataclasses.replace(read.produced, vector=encoded[0]))
            yield out

    def close(self) -> None:
        self.closed = True


def test_another_producer_replaces_the_worker_pool(small_folder: Path, tmp_path: Path) -> None:
    (small_folder / "broken.png").write_bytes(b"not a picture")
    with Index.create(tmp_path / "local", model="tiny-shapes", device="cpu", precision="fp32") as local:
        expected = local.add_folder(small_folder, workers=0)
        local_vectors = {r.path: r for r in local.search("a red circle", k=None, min_score=-1.0)}
    with Index.create(tmp_path / "engine", model="tiny-shapes", device="cpu", precision="fp32") as index:
        engine = SerialProducer(index.encoder)
        summary = index.add_folder(small_folder, engine=engine, batch_size=16)
        assert engine.batches_seen == [16, 16, 9] and engine.closed
        assert (summary.indexed, summary.failed, summary.new) == (expected.indexed, 1, expected.new) == (40, 1, 40)
        ranked = {r.path: r for r in index.search("a red circle", k=None, min_score=-1.0)}
    assert ranked.keys() == local_vectors.keys()
    for path, hit in ranked.items():
        assert hit.score == pytest.approx(local_vectors[path].score, abs=1e-5)
