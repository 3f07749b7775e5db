"""The ``searchindex`` command: a thin shell over :class:`searchindex.Index`.

Each command parses options, calls the library, and formats what comes back;
library errors become one-line messages with the exit code of their kind (the
table in docs/cli.md, from :data:`.common.EXIT_CODES`).  One module
per command group: :mod:`.indexing` (index, reindex, caption), :mod:`.searching`
(search), :mod:`.tagging` (tag, tags), :mod:`.ocr` (ocr), :mod:`.inspect` (info, errors,
duplicates), :mod:`.serving` (serve), :mod:`.watching` (watch), :mod:`.exchange` (export, import-embeddings),
:mod:`.demo`; :mod:`.common` holds what they share.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from .. import __version__
from . import demo, exchange, indexing, inspect, ocr, people, searching, serving, tagging, watching
from .common import configure_logging, verbosity_options

__all__ = ["cli", "main"]


class _Commands(click.Group):
    """The command group; a reader that stops reading (``searchindex search x | head -1``) ends it quietly."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BrokenPipeError:
            # The reader has what it wanted: not an error (click would exit 1). Point stdout at
            # /dev/null so the interpreter's last flush at exit does not fail on the closed pipe.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
            ctx.exit(0)


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="searchindex")
@verbosity_options
def cli() -> None:
    """Search your photos by what is in them, offline.

    Index a folder once (searchindex index ~/Pictures), then ask in words
    (searchindex search "kids building a sandcastle") or by example image.
    """
    configure_logging()


for _command in (indexing.index, indexing.reindex, indexing.caption, searching.search, tagging.tag, tagging.tags,
                 inspect.info, inspect.errors, inspect.duplicates, inspect.check, inspect.repair,
                 serving.serve, watching.watch, exchange.export, exchange.import_embeddings, demo.demo, ocr.ocr,
                 people.faces, people.people):
    cli.add_command(verbosity_options(_command))


def main() -> None:
    cli(prog_name="searchindex")


if __name__ == "__main__":
    main()
