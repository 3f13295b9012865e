"""Imports point inward (DESIGN.md, "Architecture"): `http → services → (domain, policies, audit)`;
`adapters → domain`; nothing imports `broker.http`; `policies` and `audit` import neither Flask nor SQLAlchemy.

Two checks: what importing the pure packages actually loads (in a fresh interpreter, so that nothing imported by
another test hides a violation), and what every module's source says it imports (parsed with `ast`, so that an
import inside a function counts too).
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FRAMEWORKS = ("flask", "sqlalchemy", "authlib", "werkzeug")
PURE = ("policies", "audit", "broker.domain")

_LOADED = """
import importlib, json, pkgutil, sys
loaded = {}
for name in sys.argv[1:]:
    package = importlib.import_module(name)
    names = [name] + [
        m.name for m in pkgutil.walk_packages(package.__path__, name + ".") if not m.name.endswith("__main__")
    ]
    for module in names:
        importlib.import_module(module)
    loaded[name] = names
frameworks = sorted({m.split(".")[0] for m in sys.modules} & set(json.loads(sys.stdin.read())))
print(json.dumps({"imported": loaded, "frameworks": frameworks}))
"""


def test_importing_the_pure_packages_loads_no_web_or_database_framework() -> None:
    result = subprocess.run(
        [sys.executable, "-c", _LOADED, *PURE],
        input=json.dumps(FRAMEWORKS),
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    # The walk found the modules, so the check covers them all (not just the packages' __init__).
    imported = {name: set(found) for name, found in report["imported"].items()}
    assert {"policies.engine", "policies.loader", "policies.cases", "policies.cli"} <= imported["policies"]
    assert {"audit.canonical", "audit.merkle", "audit.verify"} <= imported["audit"]
    assert {"broker.domain.hetu", "broker.domain.clock", "broker.domain.model"} <= imported["broker.domain"]
    assert report["frameworks"] == []


def modules(package: str) -> Iterator[tuple[str, Path]]:
    base = ROOT.joinpath(*package.split("."))
    for path in sorted(base.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        yield name, path


def imports_of(name: str, path: Path) -> set[str]:
    """Every module named by an import statement anywhere in the file, relative imports resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            found.add(module)
            # `from broker import http` imports broker.http.
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def violations(packages: tuple[str, ...], forbidden: tuple[str, ...]) -> list[str]:
    found = []
    for package in packages:
        for name, path in modules(package):
            for imported in sorted(imports_of(name, path)):
                if any(imported == f or imported.startswith(f + ".") for f in forbidden):
                    found.append(f"{path.relative_to(ROOT)} imports {imported}")
    return found


def test_the_import_parser_sees_imports_in_functions_and_relative_ones(tmp_path: Path) -> None:
    source = tmp_path / "views.py"
    source.write_text("def f():\n    from broker import http\n    from ..http.api import views\n")
    assert {"broker.http", "broker.http.api", "broker.http.api.views"} <= imports_of("broker.services.views", source)


@pytest.mark.parametrize(
    "package", ["policies", "audit", "schemas", "broker.domain", "broker.services", "broker.adapters", "broker.oauth"]
)
def test_nothing_outside_the_http_layer_imports_it(package: str) -> None:
    assert violations((package,), ("broker.http",)) == []


def test_the_pure_packages_name_no_framework_in_their_source() -> None:
    assert violations(PURE, FRAMEWORKS) == []


def test_policies_and_audit_know_nothing_of_the_application() -> None:
    assert violations(("policies", "audit"), ("broker",)) == []


def test_the_domain_depends_on_nothing_outside_itself() -> None:
    outward = ("broker.services", "broker.adapters", "broker.oauth", "broker.app", "broker.config", "broker.cli")
    assert violations(("broker.domain",), outward) == []


def test_adapters_point_inward_to_the_domain_only() -> None:
    assert violations(("broker.adapters",), ("broker.services", "broker.oauth", "broker.app", "broker.cli")) == []


def test_use_cases_use_no_web_framework() -> None:
    assert violations(("broker.services",), ("flask", "werkzeug", "authlib", "broker.oauth", "broker.app")) == []
