"""docs/security.md is held to what it claims: every threat of its model names a test that holds the mitigation,
and every test the document names exists. A renamed or deleted test fails here, not silently in the document."""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "security.md"
# A test named in the document: `tests/…/test_x.py::test_name` (a class-qualified name is `File::Class::test`).
REFERENCE = re.compile(r"`(tests/[\w/]+\.py)::([\w:]+)`")
# A row of the threat table: | S1 | Spoofing | … |
THREAT_ROW = re.compile(r"^\| *([STRIDE]\d+) *\|")
STRIDE = {
    "S": "Spoofing",
    "T": "Tampering",
    "R": "Repudiation",
    "I": "Information disclosure",
    "D": "Denial of service",
    "E": "Elevation of privilege",
}


@cache
def _test_names(path: Path) -> frozenset[str]:
    """Every function and class-qualified method name defined in a test module."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            names.add(node.name)
        elif isinstance(node, ast.ClassDef):
            names.update(
                f"{node.name}::{item.name}"
                for item in node.body
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef)
            )
    return frozenset(names)


def _threat_rows() -> dict[str, str]:
    rows = {}
    for line in DOC.read_text(encoding="utf-8").splitlines():
        found = THREAT_ROW.match(line)
        if found:
            assert found.group(1) not in rows, f"threat {found.group(1)} appears twice"
            rows[found.group(1)] = line
    return rows


def test_every_test_the_document_names_exists() -> None:
    references = REFERENCE.findall(DOC.read_text(encoding="utf-8"))
    assert references, "docs/security.md names no test"
    missing = [
        f"{file}::{name}"
        for file, name in references
        if not (ROOT / file).is_file() or name not in _test_names(ROOT / file)
    ]
    assert not missing, f"docs/security.md names tests that do not exist: {missing}"


def test_the_threat_model_has_at_least_fifteen_threats_each_held_by_a_test() -> None:
    rows = _threat_rows()
    assert len(rows) >= 15, f"the threat model lists {len(rows)} threats"
    assert {threat[0] for threat in rows} == set(STRIDE), "every STRIDE category has a threat"
    untested = [threat for threat, line in rows.items() if not REFERENCE.search(line)]
    assert not untested, f"threats without a test: {untested}"
