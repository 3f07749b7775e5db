"""Each search option is described once (frontend/options.py): the CLI's options, the API's query
parameters and the library's request are derived from the description, so a new option is one entry."""

from __future__ import annotations

import dataclasses
import inspect
import json
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient

from searchindex import Index
from searchindex.cli import cli
from searchindex.cli.common import errors_as_click
from searchindex.cli.searching import search_options
from searchindex.errors import ParameterError
from searchindex.frontend.options import SEARCH_OPTIONS, SearchOption
from searchindex.frontend.params import search_params
from searchindex.search.query import Query
from searchindex.search.request import SearchRequest
from searchindex.store.catalog.filters import Filters
from searchindex.web.app import build_app
from searchindex.web.options import query_parameters

# The search command's own options (and those every command has), which are no option of a search.
CLI_ONLY = {"index_path", "as_json", "show_moments", "paths_only", "null", "device", "verbose", "quiet"}


def test_the_cli_takes_exactly_the_described_options() -> None:
    command = cli.commands["search"]
    params = {p.name: p for p in command.params}
    assert set(params) - CLI_ONLY == {o.name for o in SEARCH_OPTIONS}
    for option in SEARCH_OPTIONS:
        param = params[option.name]
        assert tuple(param.opts) == (option.flags or (option.name,))
        assert getattr(param, "multiple", False) == option.multiple
        if option.flags and not option.multiple:
            assert param.default == option.default


def test_the_api_takes_exactly_the_described_options(tmp_path: Path) -> None:
    Index.create(tmp_path / "idx", model="tiny-shapes", device="cpu").close()
    app = build_app(tmp_path / "idx").fastapi  # type: ignore[attr-defined]
    parameters = app.openapi()["paths"]["/api/search"]["get"]["parameters"]
    described = {o.api: o for o in SEARCH_OPTIONS if o.api is not None}
    assert {p["name"] for p in parameters} == set(described)
    for p in parameters:
        option = described[p["name"]]
        assert p["description"] == (option.api_help or option.help)
        assert (p["schema"].get("type") == "array") == option.multiple


def test_every_option_goes_somewhere_that_exists() -> None:
    """Each `to` names a field of Filters or SearchRequest, a keyword of Query.parse, or the page."""
    fields = {"filters": {f.name for f in dataclasses.fields(Filters)} - {"cwd"},
              "request": {f.name for f in dataclasses.fields(SearchRequest)},
              "query": set(inspect.signature(Query.parse).parameters) | {"images"},
              "page": {"offset"}, "concept": {"concept"}}
    targets = [o.target for o in SEARCH_OPTIONS]
    assert all(field in fields[where] for where, field in targets), targets
    assert len(set(targets)) == len(targets)  # no two options fill one field
    names = {o.name for o in SEARCH_OPTIONS}
    assert all(o.needs in names for o in SEARCH_OPTIONS if o.needs is not None)
    for attribute in ("name", "api", "flag"):
        values = [getattr(o, attribute) for o in SEARCH_OPTIONS if getattr(o, attribute) is not None]
        assert len(set(values)) == len(values), attribute


# -- a throw-away option: one entry, and the CLI, the API and the request all have it ------------

WIDER = SearchOption("wider_than", "filters.min_width", "Only images wider than this (a test's option).",
                     ("--wider-than",), type=int, minimum=1, metavar="PX", api="wider")
LABEL = SearchOption("label", "request.tag", "Only images with this label (a test's option).", ("--label",),
                     api="label")
# The test's description: --tag and --min-width make way for the two new spellings of their fields.
OPTIONS = tuple(o for o in SEARCH_OPTIONS if o.name not in ("tag", "min_width")) + (WIDER, LABEL)


def _request_of(given: dict[str, Any]) -> dict[str, Any]:
    request = search_params(None, options=OPTIONS, cwd="/", **given).request
    assert request.filters is not None
    return {"tag": request.tag, "min_width": request.filters.min_width, "k": request.k}


@click.command()
@search_options(OPTIONS)
def _command(**given: Any) -> None:
    with errors_as_click():
        click.echo(json.dumps(_request_of(given)))


def test_a_new_option_appears_in_the_cli_help_and_reaches_the_request() -> None:
    runner = CliRunner()
    help_text = runner.invoke(_command, ["--help"]).output
    assert "--wider-than PX" in help_text and "a test's option" in help_text and "--label TEXT" in help_text
    assert "--tag" not in help_text and "--min-width" not in help_text
    res = runner.invoke(_command, ["red things", "--label", "red", "--wider-than", "30", "-k", "4"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output) == {"tag": "red", "min_width": 30, "k": 4}
    res = runner.invoke(_command, ["x", "--wider-than", "0"])
    assert res.exit_code == 2 and "--wider-than must be at least 1, not 0" in res.output  # a usage error
    res = runner.invoke(_command, ["x", "--wider-than", "wide"])  # click's own type check speaks first
    assert res.exit_code == 2 and "'wide' is not a valid integer" in res.output


def test_a_new_option_is_an_api_parameter_and_reaches_the_request() -> None:
    app = FastAPI()

    @app.get("/search")
    async def search(params: dict[str, Any] = Depends(query_parameters(OPTIONS))) -> dict[str, Any]:  # noqa: B008
        try:
            return _request_of(params)
        except ParameterError as exc:
            return {"error": str(exc), "parameter": exc.param}

    client = TestClient(app)
    names = {p["name"] for p in app.openapi()["paths"]["/search"]["get"]["parameters"]}
    assert {"wider", "label"} <= names and not {"tag", "min_width"} & names
    got = client.get("/search", params={"q": "red things", "label": "red", "wider": "30"}).json()
    assert got == {"tag": "red", "min_width": 30, "k": 10}
    bad = client.get("/search", params={"q": "x", "wider": "0"}).json()
    assert bad == {"error": "--wider-than must be at least 1, not 0", "parameter": "wider"}


def test_an_option_not_described_is_refused() -> None:
    with pytest.raises(TypeError, match="unknown options: colour"):
        search_params(None, "x", colour="red")
    with pytest.raises(TypeError, match="unknown options: tag"):
        search_params(None, "x", options=OPTIONS, tag="red")
