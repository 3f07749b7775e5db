"""Command-line options shared by the evaluation scripts that score a model on held-out synthetic images."""

from __future__ import annotations

import argparse


def held_out_parser(doc: str | None, count: int = 1000, count_help: str = "held-out images") -> argparse.ArgumentParser:
    """A parser with ``--model``, ``--pretrained``, ``--count`` and ``--seed``; the script adds the rest."""
    ap = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0])
    ap.add_argument("--model", default="tiny-shapes")
    ap.add_argument("--pretrained", default=None)
    ap.add_argument("--count", type=int, default=count, help=count_help)
    ap.add_argument("--seed", type=int, default=2026, help="image seed (training uses 1000, its own check 7, tests 99)")
    return ap
