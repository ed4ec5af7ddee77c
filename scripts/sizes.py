#!/usr/bin/env python3
"""The reviewer's size guide for the package (issue 17): modules over ~400 lines, classes over
~200 and functions over ~60, docstrings included, each with its length; none listed means the
guide holds. A guide, not a lint rule: a long room is a sign of a missing seam, not an error.

    python scripts/sizes.py [PACKAGE_DIR] [--module 400] [--cls 200] [--func 60]
"""

from __future__ import annotations

import argparse
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("package", nargs="?", type=Path, default=ROOT / "seeknetic_prep")
    p.add_argument("--module", type=int, default=400)
    p.add_argument("--cls", type=int, default=200)
    p.add_argument("--func", type=int, default=60)
    args = p.parse_args()
    over = []
    for path in sorted(args.package.rglob("*.py")):
        text = path.read_text()
        name = path.relative_to(args.package.parent)
        if (lines := text.count("\n")) > args.module:
            over.append(f"module   {lines:4d}  {name}")
        for node in ast.walk(ast.parse(text)):
            limit = (args.cls if isinstance(node, ast.ClassDef) else
                     args.func if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) else None)
            if limit is not None and node.end_lineno is not None:
                length = node.end_lineno - node.lineno + 1
                if length > limit:
                    kind = "class" if isinstance(node, ast.ClassDef) else "function"
                    over.append(f"{kind:8s} {length:4d}  {name}:{node.name}")  # type: ignore[attr-defined]
    print("\n".join(over) if over else
          f"none over the guide (modules {args.module}, classes {args.cls}, functions {args.func} lines)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
