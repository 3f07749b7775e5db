"""The CLI through click's CliRunner: output formats and exit codes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from searchindex.cli import cli

from .conftest import Shapes


@pytest.fixture()
def runner() -> CliRunner:
    return CliRunner()


def test_index_search_info_round_trip(runner: CliRunner, small_folder: Path, tmp_path: Path) -> None:
    idx = str(tmp_path / "idx")
    res = runner.invoke(cli, ["index", str(small_folder), "--index", idx, "--model", "tiny-shapes",
                              "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert "40 indexed, 0 unchanged, 0 failed" in res.output
    assert "holds 40 images" in res.output

    res = runner.invoke(cli, ["index", str(small_folder), "--index", idx, "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output)
    assert (summary["indexed"], summary["unchanged"], summary["failed"]) == (0, 40, 0)
    assert summary["images_in_index"] == 40

    res = runner.invoke(cli, ["search", "a red circle", "--index", idx, "-k", "3"])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert lines[0].split() == ["rank", "score", "date", "path"]
    assert len(lines) == 4 and lines[1].split()[0] == "1"
    assert re.match(r"^\s*1\s+[-\d.]+\s+\d{4}-\d\d-\d\d \d\d:\d\d\s+/", lines[1]), lines[1]

    res = runner.invoke(cli, ["search", "a red circle", "--index", idx, "-k", "3", "--paths"])
    assert res.exit_code == 0
    paths = res.output.splitlines()
    assert len(paths) == 3 and all(Path(p).is_file() for p in paths)

    res = runner.invoke(cli, ["search", "a red circle", "--index", idx, "-k", "3", "--json"])
    assert res.exit_code == 0
    rows = [json.loads(line) for line in res.output.splitlines()]
    assert [r["rank"] for r in rows] == [1, 2, 3]
    assert [r["path"] for r in rows] == paths
    assert all({"rank", "score", "path", "image_id", "width", "height"} <= set(r) for r in rows)

    res = runner.invoke(cli, ["search", "--image", paths[0], "--index", idx, "-k", "1", "--paths"])
    assert res.exit_code == 0 and res.output.strip() == paths[0]

    res = runner.invoke(cli, ["info", "--index", idx])
    assert res.exit_code == 0
    assert "tiny-shapes / builtin" in res.output and "40 (0 files on record as failed" in res.output
    res = runner.invoke(cli, ["info", "--index", idx, "--json"])
    data = json.loads(res.output)
    assert (data["model"], data["images"], data["dim"]) == ("tiny-shapes", 40, 64)


def test_default_index_comes_from_searchindex_home(runner: CliRunner, small_folder: Path, tmp_path: Path) -> None:
    home = tmp_path / "home-index"
    env = {"SEARCHINDEX_HOME": str(home)}
    res = runner.invoke(cli, ["index", str(small_folder), "--model", "tiny-shapes"], env=env)
    assert res.exit_code == 0, res.output
    assert (home / "catalog.sqlite").is_file()
    res = runner.invoke(cli, ["search", "a star", "-k", "2", "--paths"], env=env)
    assert res.exit_code == 0 and len(res.output.splitlines()) == 2


@pytest.mark.parametrize(
    ("args", "message", "code"),
    [
        # A bad value typed on the command line: a usage error, as click's own checks (docs/cli.md).
        (["index", "{tmp}/missing-folder", "--index", "{tmp}/i"], "not a folder", 2),
        (["search", "a cat", "--index", "{tmp}/no-index"], "no index at", 1),
        (["info", "--index", "{tmp}/no-index"], "no index at", 1),
        (["index", "{photos}", "--index", "{tmp}/i2", "--model", "ViT-Nonexistent-99"], "Unknown model", 2),
        (["index", "{photos}", "--index", "{tmp}/i3", "--model", "ViT-B-32", "--pretrained", "{tmp}/nofile.pt"],
         "neither a pretrained tag", 1),
    ],
)
def test_errors_exit_non_zero_with_a_message(
    runner: CliRunner, small_folder: Path, tmp_path: Path, args: list[str], message: str, code: int
) -> None:
    args = [a.format(tmp=tmp_path, photos=small_folder) for a in args]
    res = runner.invoke(cli, args)
    assert res.exit_code == code
    assert message in res.output
    assert not (tmp_path / "i2").exists() and not (tmp_path / "i3").exists()


def test_search_errors(runner: CliRunner, small_folder: Path, tmp_path: Path) -> None:
    idx = str(tmp_path / "idx")
    assert runner.invoke(cli, ["index", str(small_folder), "--index", idx, "--model", "tiny-shapes"]).exit_code == 0
    res = runner.invoke(cli, ["search", "--image", str(tmp_path / "nope.jpg"), "--index", idx])
    assert res.exit_code == 2 and "image term file not found" in res.output
    (tmp_path / "text.jpg").write_text("hello")
    res = runner.invoke(cli, ["search", "--image", str(tmp_path / "text.jpg"), "--index", idx])
    assert res.exit_code == 2 and "not a recognised image format" in res.output
    res = runner.invoke(cli, ["search", "--index", idx])
    assert res.exit_code == 2 and "give a text QUERY, --image PATH, or --plus TERM" in res.output
    res = runner.invoke(cli, ["search", "x", "--json", "--paths", "--index", idx])
    assert res.exit_code == 2
    res = runner.invoke(cli, ["index", str(small_folder), "--index", idx, "--model", "ViT-B-32",
                              "--pretrained", "none"])
    assert res.exit_code == 1 and "was built with tiny-shapes" in res.output


def test_corrupt_file_is_reported_in_the_summary(runner: CliRunner, small_folder: Path, tmp_path: Path) -> None:
    (small_folder / "junk.jpg").write_bytes(b"\x00" * 100)
    res = runner.invoke(cli, ["index", str(small_folder), "--index", str(tmp_path / "idx"),
                              "--model", "tiny-shapes"])
    assert res.exit_code == 0
    assert "40 indexed, 0 unchanged, 1 failed" in res.output
    assert "junk.jpg: not a recognised image format" in res.output


def test_demo_runs_offline(runner: CliRunner, tmp_path: Path) -> None:
    res = runner.invoke(cli, ["demo", "--index", str(tmp_path / "demo"), "--count", "120"])
    assert res.exit_code == 0, res.output
    assert "120 indexed" in res.output
    assert res.output.count('searchindex search "') == 3
    again = runner.invoke(cli, ["demo", "--index", str(tmp_path / "demo"), "--count", "120"])
    assert again.exit_code == 0 and "0 indexed, 120 unchanged" in again.output


def test_version_and_help(runner: CliRunner, shapes: Shapes) -> None:
    assert runner.invoke(cli, ["--version"]).output.startswith("searchindex, version ")
    assert "Search your photos" in runner.invoke(cli, ["--help"]).output


def test_errors_command_and_strict(runner: CliRunner, small_folder: Path, tmp_path: Path) -> None:
    idx = str(tmp_path / "idx")
    res = runner.invoke(cli, ["index", str(small_folder), "--index", idx, "--model", "tiny-shapes", "--strict"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(cli, ["errors", "--index", idx])
    assert res.exit_code == 0 and "No failures recorded." in res.output
    (small_folder / "bad.png").write_text("not a png")
    res = runner.invoke(cli, ["index", str(small_folder), "--index", idx, "--strict"])
    assert res.exit_code == 3 and "0 indexed, 40 unchanged, 1 failed" in res.output
    res = runner.invoke(cli, ["errors", "--index", idx])
    assert res.exit_code == 0
    assert res.output.strip() == f"{(small_folder / 'bad.png').absolute()}: not a recognised image format"
    rows = [json.loads(line) for line in runner.invoke(cli, ["errors", "--index", idx, "--json"]).output.splitlines()]
    assert [(Path(r["path"]).name, r["reason"]) for r in rows] == [("bad.png", "not a recognised image format")]
    # Without --strict a failure does not change the exit code.
    (small_folder / "bad2.png").write_text("nope")
    res = runner.invoke(cli, ["index", str(small_folder), "--index", idx])
    # The run's count is this run's; the index's count (as `info` gives it) includes bad.png from before.
    assert res.exit_code == 0 and "1 failed this run" in res.output
    assert "(1 unreadable)" in res.output and "no changes" not in res.output  # a new broken file is a change
    assert "2 files on record as failed, this run's and earlier ones (searchindex errors)" in res.output
    res = runner.invoke(cli, ["info", "--index", idx])
    assert "images:     40 (2 files on record as failed: searchindex errors)" in res.output


def test_null_separated_paths(runner: CliRunner, small_folder: Path, tmp_path: Path) -> None:
    idx = str(tmp_path / "idx")
    odd = small_folder / "a name\nwith newline.png"
    next(iter(sorted(small_folder.glob("*.png")))).rename(odd)
    assert runner.invoke(cli, ["index", str(small_folder), "--index", idx, "--model", "tiny-shapes"]).exit_code == 0
    res = runner.invoke(cli, ["search", "--image", str(odd), "--index", idx, "-k", "2", "-0"])
    assert res.exit_code == 0
    paths = res.output.split("\0")
    assert paths[0] == str(odd.absolute()) and paths[2] == "" and len(paths) == 3
