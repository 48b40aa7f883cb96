"""Outside archiver/providers/, no code names a provider type: what a type knows lives in its module.
(archiver/testing/, the fake provider APIs, is the one other place: each fake is one provider.)

Comments and docstrings may name a provider as an example; identifiers and string literals may not
(a `"kie"`, a `FalJwks`, a `KIE_APIS`), since that is knowledge the registry should hold.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import archiver
from archiver.providers import PROVIDERS

PACKAGE = Path(archiver.__file__).parent
WORD = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")  # the words of an identifier: FalJwks → Fal, Jwks


def docstrings(tree: ast.AST) -> set[int]:
    """The ids of the string constants that are docstrings."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def names(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """(line, identifier or string literal) for everything in the code that could name something."""
    skip = docstrings(tree)
    for node in ast.walk(tree):
        line = getattr(node, "lineno", 0)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
            yield line, node.value
        elif isinstance(node, ast.Name):
            yield line, node.id
        elif isinstance(node, ast.Attribute):
            yield line, node.attr
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            yield line, node.name
        elif isinstance(node, (ast.arg, ast.keyword)) and node.arg:
            yield line, node.arg
        elif isinstance(node, ast.alias):
            yield line, node.asname or node.name


def type_names_in(text: str, types: set[str]) -> set[str]:
    words = {w.lower() for w in WORD.findall(text)} | set(re.findall(r"[a-z0-9]+", text.lower()))
    return words & types


def offenders(root: Path, types: set[str]) -> list[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        # archiver/testing/ is the other side of the wire: fakes of each provider's API, by name.
        if path.relative_to(root).parts[0] in ("providers", "testing"):
            continue
        for line, text in sorted(names(ast.parse(path.read_text(encoding="utf-8")))):
            if hit := type_names_in(text, types):
                found.append(f"{path.relative_to(root.parent)}:{line}: {text!r} names {', '.join(sorted(hit))}")
    return found


def test_no_code_outside_providers_names_a_provider_type() -> None:
    assert not offenders(PACKAGE, set(PROVIDERS)), "\n".join(offenders(PACKAGE, set(PROVIDERS)))


def test_the_check_sees_a_type_name(tmp_path: Path) -> None:
    root = tmp_path / "archiver"
    (root / "providers").mkdir(parents=True)
    (root / "config.py").write_text('"""Kie and fal in a docstring are fine."""\n'
                                    'TYPES = ("kie",)  # fal in a comment is fine\n'
                                    'class FalJwks: ...\n'
                                    'default = False\n', encoding="utf-8")
    found = offenders(root, {"kie", "fal"})
    assert [f.split(": ", 1)[1] for f in found] == ["'kie' names kie", "'FalJwks' names fal"]
