#!/usr/bin/env python3
"""Print size figures of the searchindex package: module count, longest modules and functions, Index length."""
import argparse
import ast
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("package", nargs="?", default="searchindex", help="package directory")
    ap.add_argument("--top", type=int, default=10)
    args = ap.parse_args()
    root = Path(args.package)
    modules = sorted(p for p in root.rglob("*.py"))
    sizes = []
    funcs = []
    index_lines = None
    parts: list[tuple[int, str]] = []  # the classes Index is assembled from (searchindex/index/)
    for path in modules:
        text = path.read_text()
        rel = path.relative_to(root.parent).as_posix()
        sizes.append((len(text.splitlines()), rel))
        tree = ast.parse(text)
        stack = [(tree, "")]
        while stack:
            node, prefix = stack.pop()
            for child in ast.iter_child_nodes(node):
                if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    name = f"{prefix}{child.name}"
                    funcs.append((child.end_lineno - child.lineno + 1, f"{rel}:{name}"))
                    stack.append((child, name + "."))
                elif isinstance(child, ast.ClassDef):
                    if child.name == "Index" and rel.endswith(("index.py", "index/facade.py")):
                        index_lines = child.end_lineno - child.lineno + 1
                    elif "/index/" in rel and not prefix:
                        parts.append((child.end_lineno - child.lineno + 1, f"{rel}:{child.name}"))
                    stack.append((child, f"{prefix}{child.name}."))
    print(f"modules: {len(modules)}  total lines: {sum(n for n, _ in sizes)}")
    print(f"Index class: {index_lines} lines")
    if parts:
        print(f"  assembled from {len(parts)} parts, {sum(n for n, _ in parts)} lines: "
              + ", ".join(f"{name.split(':')[1]} {n}" for n, name in sorted(parts, reverse=True)))
    print(f"longest {args.top} modules:")
    for n, rel in sorted(sizes, reverse=True)[: args.top]:
        print(f"  {n:5d}  {rel}")
    print(f"longest {args.top} functions:")
    for n, name in sorted(funcs, reverse=True)[: args.top]:
        print(f"  {n:5d}  {name}")


if __name__ == "__main__":
    main()
