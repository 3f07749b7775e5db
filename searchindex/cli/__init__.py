"""The ``searchindex`` command: a thin shell over :class:`searchindex.Index`.

Each command parses options, calls the library, and formats what comes back;
library errors become one-line messages with a non-zero exit code.  One module
per command group: :mod:`.indexing` (index, reindex, caption), :mod:`.searching`
(search), :mod:`.tagging` (tag, tags), :mod:`.inspect` (info, errors,
duplicates), :mod:`.demo`; :mod:`.common` holds what they share.
"""

from __future__ import annotations

import logging
import sys

import click

from .. import __version__
from . import demo, indexing, inspect, searching, tagging

__all__ = ["cli", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="searchindex")
@click.option("-v", "--verbose", count=True, help="More log output on stderr (-vv for debug).")
def cli(verbose: int) -> None:
    """Search your photos by what is in them, offline.

    Index a folder once (searchindex index ~/Pictures), then ask in words
    (searchindex search "kids building a sandcastle") or by example image.
    """
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    ours = logging.getLogger("searchindex")
    if verbose == 0:
        # open_clip logs on the root logger at every model load (and its failures
        # reach the user through our own error message anyway).
        logging.getLogger().setLevel(logging.CRITICAL)
        ours.setLevel(logging.WARNING)
    else:
        logging.getLogger().setLevel(logging.WARNING if verbose == 1 else logging.DEBUG)
        ours.setLevel(logging.INFO if verbose == 1 else logging.DEBUG)


for _command in (indexing.index, indexing.reindex, indexing.caption, searching.search, tagging.tag, tagging.tags,
                 inspect.info, inspect.errors, inspect.duplicates, demo.demo):
    cli.add_command(_command)


def main() -> None:
    cli(prog_name="searchindex")


if __name__ == "__main__":
    main()
