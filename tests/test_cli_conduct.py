"""How the command behaves around its results: exit codes by kind of error (the table in
docs/cli.md), -v/-q on either side of the command name, a reader that stops early, and where
the demo writes."""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import searchindex.errors as errors_module
from searchindex import Index
from searchindex.cli import cli
from searchindex.cli.common import EXIT_CODES, EXIT_USAGE, exit_code
from searchindex.errors import SearchIndexError

from .conftest import Shapes

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture()
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture(scope="module")
def full_index(shapes: Shapes, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An index with something for every listing command: a failure, a near-duplicate, a label."""
    folder = tmp_path_factory.mktemp("photos")
    for src in sorted(shapes.folder.glob("*.png"))[:30]:
        shutil.copy2(src, folder / src.name)
    first = sorted(folder.glob("*.png"))[0]
    shutil.copy2(first, folder / ("copy-" + first.name))
    (folder / "junk.jpg").write_bytes(b"\x00" * 100)
    path = tmp_path_factory.mktemp("idx") / "full.idx"
    with Index.create(path, model="tiny-shapes", device="cpu") as index:
        index.add_folder(folder, workers=0)
        index.tag(["red", "circle"])
    return path


# -- the exit-code table ---------------------------------------------------------


def _documented_codes() -> dict[str, int]:
    """Library error name -> exit code, from the table in docs/cli.md."""
    text = (ROOT / "docs" / "cli.md").read_text()
    table = text[text.index("## Exit codes"):text.index("## Output and verbosity")]
    codes: dict[str, int] = {}
    for row in table.splitlines():
        cells = [c.strip() for c in row.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].isdigit():
            for name in re.findall(r"`(\w+Error)`", cells[2]):
                assert name not in codes, f"{name} is in two rows"
                codes[name] = int(cells[0])
    return codes


def test_the_docs_table_is_the_cli_mapping() -> None:
    documented = _documented_codes()
    for cls, code in EXIT_CODES.items():
        assert documented.get(cls.__name__) == code, cls
    for name, code in documented.items():  # also subclasses named for clarity (ParameterError)
        cls = getattr(errors_module, name)
        assert exit_code(cls.__new__(cls)) == code, name
    # Every library error, listed or not, gets the code its documented ancestor has.
    for cls in vars(errors_module).values():
        if isinstance(cls, type) and issubclass(cls, SearchIndexError):
            nearest = next(c for c in cls.__mro__ if c.__name__ in documented)
            assert exit_code(cls.__new__(cls)) == documented[nearest.__name__], cls


BAD_VALUES = [
    # click's own checks
    ["search", "x", "-k", "many"],
    ["search", "x", "--min-width", "wide"],
    ["search", "x", "--sort", "colour"],
    ["duplicates", "--threshold", "2"],
    ["index", "{photos}", "--batch-size", "0"],
    ["index", "{photos}", "--max-megapixels", "nan"],
    # the library's checks of the same kinds of values
    ["search", "x", "-k", "0"],
    ["search", "x", "--offset", "-1"],
    ["search", "x", "--threshold", "most"],
    ["search", "x", "--threshold", "2"],
    ["search", "x", "--min-score", "5"],
    ["search", "x", "--pool", "0"],
    ["search", "x", "--after", "2023-13"],
    ["search", "x", "--before", "yesterday"],
    ["search", "x", "--after", "2024", "--before", "2023"],
    ["search", "x", "--near", "200,0"],
    ["search", "x", "--radius", "5"],
    ["search", "x", "--path", "/photos/[abc"],
    ["search", "x", "--plus", "0:sunset"],
    ["search", "--image", "{tmp}/no-such.jpg"],
    ["search", "x", "--tag", "no-such-label"],
    ["search", "x", "--concept", "no-such-concept"],
    ["search", "x", "--like", "987654"],
    ["search", "x", "--mode", "text", "--min-score", "0.2"],
    ["search"],
    ["index", "{photos}", "--index", "{tmp}/new", "--index-type", "Bogus,,"],
    ["index", "{photos}", "--index", "{tmp}/new", "--model", "ViT-Nonexistent-99"],
    ["index", "{tmp}/missing-folder", "--index", "{tmp}/new"],
    ["tag", "--labels", ",,"],
    ["tag", "--labels-file", "{tmp}/no-such-labels.txt"],
]


@pytest.mark.parametrize("args", BAD_VALUES, ids=lambda a: " ".join(a))
def test_bad_values_exit_with_the_usage_code(runner: CliRunner, full_index: Path, small_folder: Path,
                                             tmp_path: Path, args: list[str]) -> None:
    args = [a.format(photos=small_folder, tmp=tmp_path) for a in args]
    if "--index" not in args:
        args += ["--index", str(full_index)]
    res = runner.invoke(cli, args)
    assert res.exit_code == EXIT_USAGE == 2, (res.output, res.exception)
    assert "Error:" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "new").exists()  # nothing made for a bad value


@pytest.mark.parametrize(("args", "code"), [
    (["search", "x", "--index", "{tmp}/no-index"], 1),
    (["info", "--index", "{tmp}/no-index"], 1),
    (["index", "{photos}", "--index", "{strangers}"], 1),
    (["index", "{photos}", "--index", "{full}", "--model", "ViT-B-32", "--pretrained", "none"], 1),
    (["index", "{photos}", "--index", "{tmp}/new", "--model", "ViT-B-32", "--pretrained", "{tmp}/nofile.pt"], 1),
    (["search", "x", "--index", "{full}", "-q"], 0),
])
def test_errors_of_well_formed_requests_exit_1(runner: CliRunner, full_index: Path, small_folder: Path,
                                               tmp_path: Path, args: list[str], code: int) -> None:
    (tmp_path / "strangers").mkdir()
    (tmp_path / "strangers" / "notes.txt").write_text("mine")
    args = [a.format(photos=small_folder, tmp=tmp_path, full=full_index, strangers=tmp_path / "strangers")
            for a in args]
    res = runner.invoke(cli, args)
    assert res.exit_code == code, res.output
    assert "Traceback" not in res.output


# -- verbosity ---------------------------------------------------------------


@pytest.mark.parametrize(("args", "level"), [
    (["search", "x"], logging.WARNING),
    (["-v", "search", "x"], logging.INFO),
    (["search", "x", "-v"], logging.INFO),
    (["search", "-vv", "x"], logging.DEBUG),
    (["-v", "search", "x", "-v"], logging.DEBUG),
    (["-q", "search", "x"], logging.ERROR),
    (["search", "x", "-q"], logging.ERROR),
    (["search", "x", "--quiet"], logging.ERROR),
    (["-v", "search", "x", "-q"], logging.WARNING),
])
def test_verbosity_before_or_after_the_command(runner: CliRunner, full_index: Path, args: list[str],
                                               level: int) -> None:
    res = runner.invoke(cli, [*args, "--index", str(full_index), "-k", "2", "--paths"])
    assert res.exit_code == 0, res.output
    assert logging.getLogger("searchindex").level == level
    assert len(res.stdout.splitlines()) == 2


def test_verbose_after_the_command_logs_and_quiet_hides_the_progress_bar(
        small_folder: Path, tmp_path: Path) -> None:
    def run(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "searchindex.cli", "index", str(small_folder), "--index",
                               str(tmp_path / "i"), "--model", "tiny-shapes", "--workers", "0", *extra],
                              capture_output=True, text=True, timeout=300)

    loud = run("-v")
    assert loud.returncode == 0 and "INFO searchindex" in loud.stderr, loud.stderr
    (small_folder / "extra.png").write_bytes((next(small_folder.glob("*.png"))).read_bytes()[:-1] + b"\0")
    quiet = run("-q")
    assert quiet.returncode == 0 and "INFO" not in quiet.stderr and "indexing" not in quiet.stderr


# -- a reader that stops early -----------------------------------------------------

PIPED = [
    ["search", "a red circle", "-k", "20"],
    ["search", "a red circle", "--json"],
    ["search", "a red circle", "--paths"],
    ["search", "a red circle", "-0"],
    ["duplicates"],
    ["duplicates", "--json"],
    ["errors"],
    ["tags"],
    ["info", "--json"],
]


@pytest.mark.parametrize("args", PIPED, ids=lambda a: " ".join(a))
def test_a_closed_pipe_is_not_an_error(full_index: Path, args: list[str]) -> None:
    """`searchindex search x | head -1`: the reader leaves; the command ends quietly with 0."""
    proc = subprocess.Popen([sys.executable, "-m", "searchindex.cli", *args, "--index", str(full_index)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # before the command writes anything: its first write meets a closed pipe
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=300) == 0, stderr
    assert stderr == ""


def test_head_takes_the_first_line(full_index: Path) -> None:
    shell = shutil.which("bash")
    if shell is None:
        pytest.skip("no bash")
    cmd = (f"set -o pipefail; {sys.executable} -m searchindex.cli search 'a red circle' --json -k 30 "
           f"--index {full_index} | head -1")
    run = subprocess.run([shell, "-c", cmd], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and run.stderr == "", run.stderr
    assert run.stdout.count("\n") == 1 and '"rank": 1' in run.stdout


# -- the demo's folder -------------------------------------------------------------


def test_demo_writes_to_the_user_data_folder(runner: CliRunner, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    data, work = tmp_path / "data", tmp_path / "work"
    work.mkdir()
    monkeypatch.setenv("XDG_DATA_HOME", str(data))
    monkeypatch.chdir(work)
    res = runner.invoke(cli, ["demo", "--count", "10"])
    assert res.exit_code == 0, res.output
    demo = data / "searchindex" / "demo"
    assert Index.exists(demo) and len(list((demo / "images").glob("*.png"))) == 10
    assert f"Demo index {demo}:" in res.output and f"--index {demo} " in res.output
    assert list(work.iterdir()) == []  # nothing where it was run
    # The default index lives in the same user-data folder: the demo beside it is no stranger.
    photos = tmp_path / "photos"
    shutil.copytree(demo / "images", photos)
    res = runner.invoke(cli, ["index", str(photos), "--model", "tiny-shapes", "--workers", "0"],
                        env={"SEARCHINDEX_HOME": ""})
    assert res.exit_code == 0, res.output
    assert Index.exists(data / "searchindex") and Index.exists(demo)
    # ... and it stays where it is when the default index is switched to other weights.
    res = runner.invoke(cli, ["reindex", "--model", "tiny-shapes", "--pretrained", "none", "--workers", "0"],
                        env={"SEARCHINDEX_HOME": ""})
    assert res.exit_code == 0, res.output
    assert Index.exists(data / "searchindex") and Index.exists(demo)
    assert sorted(p.name for p in data.iterdir()) == ["searchindex"]  # no staging folder left behind


def test_demo_with_index_and_the_makefile(runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(cli, ["demo", "--count", "10", "--index", "indexes/demo"])
    assert res.exit_code == 0, res.output
    assert Index.exists(tmp_path / "indexes" / "demo") and not (tmp_path / "data").exists()
    assert "Demo index indexes/demo:" in res.output and "  indexes/demo/images/shape_" in res.output
    make = (ROOT / "Makefile").read_text()
    assert re.search(r"^demo:.*\n\t\$\(VENV\)/bin/searchindex demo --index indexes/demo$", make, re.M)
    assert "indexes/demo" in (ROOT / "README.md").read_text()
