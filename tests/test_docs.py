"""The docs tell the truth: every command and option is in the generated reference,
every command is explained somewhere, the README stays a short front door, and the
site builds with ``mkdocs build --strict``."""

from __future__ import annotations

import html
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from searchindex.cli import cli

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
README = (ROOT / "README.md").read_text(encoding="utf-8")
COMMANDS = sorted(cli.commands)
# The front door stays short; everything else lives in docs/.
README_MAX_BYTES = 10 * 1024


def _nav_pages() -> list[Path]:
    """The markdown pages mkdocs.yml puts in the navigation."""
    text = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    nav = text.split("\nnav:", 1)[1].split("\n\n", 1)[0]
    return [DOCS / name for name in re.findall(r":\s*([\w./-]+\.md)\s*$", nav, re.M)]


def _docs_text() -> str:
    return "\n".join(page.read_text(encoding="utf-8") for page in _nav_pages())


def _long_flags(command: click.Command) -> list[str]:
    """Every long flag of a command, the secondary ones (--no-x, --null) included."""
    flags = []
    for param in command.params:
        if isinstance(param, click.Option):
            flags += [opt for opt in param.opts + param.secondary_opts if opt.startswith("--")]
    return flags


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site as ``mkdocs build --strict`` writes it: a broken link, a missing page or a
    failing directive (such as the CLI reference's) fails the build, and so CI."""
    mkdocs = shutil.which("mkdocs", path=str(Path(sys.executable).parent)) or shutil.which("mkdocs")
    if mkdocs is None:
        pytest.skip("mkdocs is not installed (pip install -e '.[docs]')")
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run([mkdocs, "build", "--strict", "--site-dir", str(out)],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    return out


@pytest.fixture(scope="module")
def reference(site: Path) -> dict[str, str]:
    """The rendered CLI reference as text, one entry per heading (``searchindex NAME``)."""
    page = (site / "cli" / "index.html").read_text(encoding="utf-8")
    parts = re.split(r'<h\d id="[^"]*">', page)[1:]
    sections = {}
    for part in parts:
        text = html.unescape(re.sub(r"<[^>]+>", "", part))
        title, _, body = text.partition("\n")
        sections[title.replace("\u00b6", "").strip()] = body
    return sections


def test_there_are_commands() -> None:
    assert {"index", "search", "info", "demo"} <= set(COMMANDS)


@pytest.mark.parametrize("name", COMMANDS)
def test_command_has_help_text(name: str) -> None:
    command = cli.commands[name]
    assert command.help and len(command.help.strip()) > 20
    for param in command.params:
        if isinstance(param, click.Option):
            assert param.help, f"{name} {param.opts} has no help"


@pytest.mark.parametrize("name", COMMANDS)
def test_command_and_every_option_are_in_the_reference(name: str, reference: dict[str, str]) -> None:
    body = reference.get(f"searchindex {name}")
    assert body is not None, f"the CLI reference has no section for `searchindex {name}`"
    for flag in _long_flags(cli.commands[name]):
        assert re.search(rf"(?<![\w-]){re.escape(flag)}\b", body), f"`{name} {flag}` is missing from the reference"


def test_the_group_options_are_in_the_reference(reference: dict[str, str]) -> None:
    for flag in _long_flags(cli):
        assert flag in reference["searchindex"], f"`searchindex {flag}` is missing from the reference"


@pytest.mark.parametrize("name", COMMANDS)
def test_reference_matches_help(name: str, reference: dict[str, str]) -> None:
    """The generated reference carries the options part of each command's --help, character
    for character (compared without whitespace: the two wrap lines at different widths)."""
    result = CliRunner().invoke(cli, [name, "--help"], prog_name="searchindex")
    assert result.exit_code == 0
    # A group's --help lists its subcommands after the options; the reference gives each its own section.
    options = re.sub(r"\s+", "", result.output.split("Options:", 1)[1].split("Commands:", 1)[0])
    rendered = re.sub(r"\s+", "", reference[f"searchindex {name}"])
    assert options in rendered, f"`{name} --help` differs from the reference"


@pytest.mark.parametrize("name", COMMANDS)
def test_command_is_explained_in_readme_or_docs(name: str) -> None:
    text = README + _docs_text()
    assert re.search(rf"searchindex {name}\b", text), f"neither README nor docs show `searchindex {name}`"


def test_every_docs_page_is_in_the_nav() -> None:
    pages = {p.resolve() for p in _nav_pages()}
    assert all(p.exists() for p in pages)
    missing = sorted(p.name for p in DOCS.glob("*.md") if p.resolve() not in pages)
    assert not missing, f"docs pages missing from the mkdocs.yml nav: {missing}"


def test_public_api_is_on_the_api_page() -> None:
    import searchindex

    page = (DOCS / "api.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^::: searchindex\.(\w+)\s*$", page, re.M))
    assert "errors" in documented, "docs/api.md renders the whole searchindex.errors module"
    missing = [
        name for name in searchindex.__all__
        if not name.startswith("_") and name not in documented
        and getattr(getattr(searchindex, name), "__module__", "") != "searchindex.errors"
    ]
    assert not missing, f"public names without a `::: searchindex.NAME` entry in docs/api.md: {missing}"


def test_readme_is_a_short_front_door() -> None:
    size = len(README.encode("utf-8"))
    assert size <= README_MAX_BYTES, f"README.md is {size} bytes; move detail into docs/"


def test_readme_starts_with_install_and_demo_and_gives_the_two_commands() -> None:
    blocks = re.findall(r"```(?:bash|sh|console)?\n(.*?)```", README, re.S)
    commands = [[line.split("#")[0].strip() for line in b.splitlines() if line.split("#")[0].strip()] for b in blocks]
    assert commands[0][:2] == ["pipx install ./searchindex", "searchindex demo"]
    assert any(c[:2] == ["make demo", "make test"] for c in commands), "the README gives `make demo` and `make test`"


def test_readme_links_resolve() -> None:
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", README):
        if "://" not in target:
            assert (ROOT / target).exists(), f"README links to missing {target}"


def test_scripts_are_listed_with_help() -> None:
    listing = (ROOT / "scripts" / "README.md").read_text(encoding="utf-8")
    for script in sorted((ROOT / "scripts").glob("*.py")):
        assert script.name in listing, f"{script.name} missing from scripts/README.md"
        assert "argparse" in script.read_text() or "click" in script.read_text()


def test_site_builds_strict(site: Path) -> None:
    for page in _nav_pages():
        built = site / ("" if page.stem == "index" else page.stem) / "index.html"
        assert built.exists(), f"{page.name} was not built"


def test_duplicates_help_names_every_json_field() -> None:
    """`duplicates --json` prints each group as {"group": n, **DuplicateGroup.to_dict()}: its
    --help names every key, so a field added to the result shows up in the help too."""
    import dataclasses

    from searchindex.results import DuplicateGroup, DuplicateImage

    result = CliRunner().invoke(cli, ["duplicates", "--help"], prog_name="searchindex")
    assert result.exit_code == 0
    text = re.sub(r"\s+", " ", result.output)
    fields = ["group"] + [f.name for f in dataclasses.fields(DuplicateGroup) + dataclasses.fields(DuplicateImage)]
    missing = [name for name in fields if not re.search(rf"(?<![\w-]){name}\b", text)]
    assert not missing, f"`duplicates --help` does not name the JSON fields {missing}"


def test_shell_completion_through_the_console_script(tmp_path: Path) -> None:
    """The completion that docs/install.md documents works with the installed `searchindex`
    command: the bash script comes out, and a Tab press completes commands and choices."""
    script = shutil.which("searchindex", path=str(Path(sys.executable).parent))
    if script is None:
        pytest.skip("no `searchindex` console script beside this Python (pip install -e .)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    source = subprocess.run([script], env={**env, "_SEARCHINDEX_COMPLETE": "bash_source"},
                            capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert source.returncode == 0 and "complete -o nosort -F _searchindex_completion searchindex" in source.stdout
    assert "_SEARCHINDEX_COMPLETE=bash_source" in (DOCS / "install.md").read_text(encoding="utf-8")
    for words, cword, expected in (("searchindex dup", 1, {"plain,duplicates"}),
                                   ("searchindex search --mode ", 3, {"plain,auto", "plain,vector", "plain,text",
                                                                      "plain,hybrid"})):
        done = subprocess.run([script], env={**env, "_SEARCHINDEX_COMPLETE": "bash_complete", "COMP_WORDS": words,
                                             "COMP_CWORD": str(cword)},
                              capture_output=True, text=True, timeout=60, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        assert set(done.stdout.split()) == expected, (words, done.stdout)


def test_pages_keep_run_conditions_in_the_records() -> None:
    """User pages say what was measured and at which commit; the load on the machine and who
    else was using it belong in the benchmark records (docs/records/*.json)."""
    for page in [ROOT / "README.md", *_nav_pages()]:
        text = page.read_text(encoding="utf-8").lower()
        for phrase in ("load average", "other jobs", "other agents", "this session"):
            assert phrase not in text, f"{page.name} mentions {phrase!r}; put it in the benchmark record"
