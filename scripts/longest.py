"""Print the N longest functions and classes of the given Python files or directories.

Usage: python scripts/longest.py [-n N] PATH [PATH ...]

Lengths are line counts from the ``def``/``class`` line (decorators included) to
the last line of the body. Classes also show how many fields they assign
(``self.x = ...`` in methods, plus annotated class-level names).
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Iterator
from pathlib import Path


def _files(paths: list[str]) -> Iterator[Path]:
    for p in map(Path, paths):
        if p.is_dir():
            yield from sorted(q for q in p.rglob("*.py") if "__pycache__" not in q.parts)
        elif p.suffix == ".py":
            yield p


def _length(node: ast.AST) -> int:
    first = min([node.lineno, *(d.lineno for d in getattr(node, "decorator_list", []))])  # type: ignore[attr-defined]
    return int(node.end_lineno) - first + 1  # type: ignore[attr-defined]


def _fields(cls: ast.ClassDef) -> int:
    names: set[str] = set()
    for stmt in cls.body:
        if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
            names.add(stmt.target.id)
    for node in ast.walk(cls):
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = list(node.targets)
        elif isinstance(node, ast.AnnAssign | ast.AugAssign):
            targets = [node.target]
        for t in targets:
            elts = t.elts if isinstance(t, ast.Tuple) else [t]
            for e in elts:
                if (
                    isinstance(e, ast.Attribute)
                    and isinstance(e.value, ast.Name)
                    and e.value.id == "self"
                ):
                    names.add(e.attr)
    return len(names)


def _walk(tree: ast.AST, prefix: str = "") -> Iterator[tuple[str, ast.AST]]:
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            name = f"{prefix}{node.name}"
            yield name, node
            yield from _walk(node, name + ".")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=10, help="how many of each (default 10)")
    ap.add_argument("paths", nargs="+")
    args = ap.parse_args(argv)
    funcs: list[tuple[int, str]] = []
    classes: list[tuple[int, str, int, int]] = []
    for path in _files(args.paths):
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for name, node in _walk(tree):
            where = f"{path}:{node.lineno} {name}"  # type: ignore[attr-defined]
            if isinstance(node, ast.ClassDef):
                methods = sum(
                    isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) for n in node.body
                )
                classes.append((_length(node), where, methods, _fields(node)))
            else:
                funcs.append((_length(node), where))
    print(f"longest functions ({len(funcs)} in all):")
    for n, where in sorted(funcs, reverse=True)[: args.n]:
        print(f"  {n:5d}  {where}")
    print(f"longest classes ({len(classes)} in all):")
    for n, where, methods, fields in sorted(classes, reverse=True)[: args.n]:
        print(f"  {n:5d}  {where}  ({methods} methods, {fields} fields)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
