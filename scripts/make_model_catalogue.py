#!/usr/bin/env python3
"""Write the torch-free catalogue of open_clip's architectures from the installed open_clip.

For every architecture open_clip lists: its model config; per pretrained tag: the
Hugging Face hub repository and file (as open_clip records them), QuickGELU where the
tag was trained with it, and the preprocessing where it differs from open_clip's
defaults.  A torch-free install reads it (``searchindex.models.architectures``) to
name, fetch and build a model without open_clip.  ``tests/test_graphs.py`` checks that
the shipped file equals what this script makes from the installed open_clip.

    python scripts/make_model_catalogue.py [--out searchindex/models/open_clip_catalogue.json] [--check]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from searchindex.models.architectures import CATALOGUE_PATH  # noqa: E402

_PREPROCESS_KEYS = ("mean", "std", "interpolation", "resize_mode")
_DEFAULTS = {"mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711],
             "interpolation": "bicubic", "resize_mode": "shortest"}


def _plain(value: Any) -> Any:
    """Tuples as lists, recursively (what JSON gives back)."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _tag_entry(cfg: dict[str, Any]) -> dict[str, Any]:
    hub = str(cfg.get("hf_hub") or "")
    parts = hub.split("/")
    # open_clip's form is "org/name/" (its default file) or "org/name/file.ext"
    repo, filename = ("/".join(parts[:2]), "/".join(parts[2:])) if len(parts) >= 2 else ("", "")
    entry: dict[str, Any] = {"hf_hub": repo}
    if filename:
        entry["file"] = filename
    if cfg.get("quick_gelu"):
        entry["quick_gelu"] = True
    pre = {k: _plain(cfg[k]) for k in _PREPROCESS_KEYS if k in cfg and _plain(cfg[k]) != _DEFAULTS[k]}
    if pre:
        entry["preprocess"] = pre
    return entry


def build_catalogue() -> dict[str, Any]:
    """The catalogue of the installed open_clip (as the shipped file holds it)."""
    import open_clip

    models: dict[str, Any] = {}
    for name in open_clip.list_models():
        tags = open_clip.list_pretrained_tags_by_model(name)
        models[name] = {
            "config": _plain(open_clip.get_model_config(name)),
            "pretrained": {tag: _tag_entry(open_clip.get_pretrained_cfg(name, tag)) for tag in tags},
        }
    return {"open_clip": open_clip.__version__, "models": models}


def dumps(data: dict[str, Any]) -> str:
    """The file's text: one architecture a line, so a new open_clip shows as a readable diff."""
    lines = [f"  {json.dumps(name)}: {json.dumps(entry, separators=(',', ':'))}"
             for name, entry in data["models"].items()]
    return (f'{{"open_clip": {json.dumps(data["open_clip"])},\n "models": {{\n'
            + ",\n".join(lines) + "\n }\n}\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=CATALOGUE_PATH, help="where to write (default: the shipped file)")
    ap.add_argument("--check", action="store_true", help="only say whether the file is up to date (exit 1 if not)")
    args = ap.parse_args(argv)
    text = dumps(build_catalogue())
    if args.check:
        current = args.out.read_text(encoding="utf-8") if args.out.exists() else ""
        print("up to date" if current == text else f"{args.out} is stale: run {Path(__file__).name}")
        return 0 if current == text else 1
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(args.out)
    data = json.loads(text)
    print(f"wrote {args.out}: {len(data['models'])} architectures, "
          f"{sum(len(m['pretrained']) for m in data['models'].values())} pretrained tags, "
          f"open_clip {data['open_clip']}, {len(text.encode()) / 1024:.0f} KiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
