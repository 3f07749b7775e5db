"""The docs tell the truth: every command has help and a place in the README."""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest

from searchindex.cli import cli

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
COMMANDS = sorted(cli.commands)


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
def test_command_is_in_the_readme(name: str) -> None:
    assert re.search(rf"searchindex {name}\b", README), f"README never shows `searchindex {name}`"


def test_readme_starts_with_the_two_commands() -> None:
    blocks = re.findall(r"```(?:bash|sh)?\n(.*?)```", README, re.S)
    first = [line.split("#")[0].strip() for line in blocks[0].splitlines() if line.split("#")[0].strip()]
    assert first[:2] == ["make demo", "make test"]


def test_scripts_are_listed_with_help() -> None:
    listing = (ROOT / "scripts" / "README.md").read_text(encoding="utf-8")
    for script in sorted((ROOT / "scripts").glob("*.py")):
        assert script.name in listing, f"{script.name} missing from scripts/README.md"
        assert "argparse" in script.read_text() or "click" in script.read_text()
