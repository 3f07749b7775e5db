#!/usr/bin/env python3
"""Render the measured tables of the docs from the benchmark records in docs/records/*.json.

A page asks for a table with a pair of markers::

    <!-- table: peers-core-install -->
    (generated from docs/records/peers-core-install.json: do not edit)
    <!-- /table -->

and this script writes between them the record's table and one line saying which commit and
date measured it and with which command. Each figure so lives once, in its record; a page
that shows it is rendered from there. ``--check`` changes nothing and exits 1 when a page
differs from what its records give (``tests/test_scripts.py`` runs it), or when a marker names
no record.

A record (one benchmark run) is a JSON object: ``columns`` and ``rows`` (the table, as the
script printed it), ``commit`` and ``date`` (what was measured, and when), ``command`` (one
string or a list), ``script``; and, for whoever reads the records rather than the pages,
``machine``, ``load_average``, ``recorded_in`` (the commit that first wrote the figures into
the docs) and ``notes``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MARKER = re.compile(r"(<!-- table: (?P<name>[\w.-]+) -->\n)(?P<body>.*?)(<!-- /table -->)", re.S)
REQUIRED = ("columns", "rows", "commit", "date", "command")


class RecordError(ValueError):
    """A record is missing a field, or a row does not fit its columns."""


def load_records(folder: Path) -> dict[str, dict]:
    """Every record in ``folder`` by its file name without ``.json``, checked for the fields a table needs."""
    records = {}
    for path in sorted(folder.glob("*.json")):
        record = json.loads(path.read_text(encoding="utf-8"))
        missing = [key for key in REQUIRED if key not in record]
        if missing:
            raise RecordError(f"{path.name}: missing {', '.join(missing)}")
        for row in record["rows"]:
            if len(row) != len(record["columns"]):
                raise RecordError(f"{path.name}: row {row!r} has {len(row)} cells for {len(record['columns'])} columns")
        records[path.stem] = record
    return records


def _cell(value: object) -> str:
    # A pipe inside a cell would end it; markdown tables take it escaped.
    return str(value).replace("|", "\\|")


def render(name: str, record: dict) -> str:
    """The markdown of one record: its table, then the line naming the commit, date and command."""
    lines = ["| " + " | ".join(_cell(c) for c in record["columns"]) + " |",
             "|" + " --- |" * len(record["columns"])]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in record["rows"]]
    commands = record["command"] if isinstance(record["command"], list) else [record["command"]]
    how = "; ".join(f"`{c}`" for c in commands)
    lines += ["", f"*Measured at commit `{record['commit']}`, {record['date']}: {how} "
                  f"([record](records/{name}.json)).*"]
    return "\n".join(lines) + "\n"


def update(text: str, records: dict[str, dict], page: str = "") -> str:
    """``text`` with every marked table rendered from ``records``."""
    def replace(match: re.Match[str]) -> str:
        name = match["name"]
        if name not in records:
            raise RecordError(f"{page}: the marker names no record docs/records/{name}.json")
        # Blank lines around the table: Markdown would read a table that touches the comment
        # as part of one raw HTML block.
        return match[1] + "\n" + render(name, records[name]) + "\n" + match[4]

    return MARKER.sub(replace, text)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--docs", type=Path, default=ROOT / "docs", help="the pages' folder (default: docs/)")
    ap.add_argument("--records", type=Path, default=None, help="the records' folder (default: DOCS/records)")
    ap.add_argument("--check", action="store_true", help="change nothing; exit 1 when a page is out of date")
    args = ap.parse_args(argv)
    try:
        records = load_records(args.records or args.docs / "records")
        stale, used = [], set()
        for page in sorted(args.docs.glob("*.md")):
            text = page.read_text(encoding="utf-8")
            used |= {m["name"] for m in MARKER.finditer(text)}
            new = update(text, records, page.name)
            if new != text:
                stale.append(page.name)
                if not args.check:
                    page.write_text(new, encoding="utf-8")
    except RecordError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    unused = sorted(set(records) - used)
    if unused:
        print(f"records no page shows: {', '.join(unused)}")
    if stale:
        print(("out of date: " if args.check else "rendered: ") + ", ".join(stale))
        if args.check:
            print("run: python scripts/docs_tables.py", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
