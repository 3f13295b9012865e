"""The partner client (broker/client) is importable by a partner that has only `requests` and `joserfc`: importing it
loads neither Flask nor SQLAlchemy nor any server module of the broker — checked in a fresh interpreter, so that
nothing another test imported hides a violation, and in the source, so that an import inside a function counts."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.unit.test_layering import ROOT, imports_of, modules, violations

FRAMEWORKS = ("flask", "sqlalchemy", "werkzeug", "authlib", "marshmallow", "flask_smorest", "alembic", "psycopg")

_LOADED = """
import importlib, json, pkgutil, sys
import broker.client
names = ["broker.client"] + [m.name for m in pkgutil.walk_packages(broker.client.__path__, "broker.client.")]
for name in names:
    importlib.import_module(name)
from broker.client import BrokerClient, NoLegalBasisError, verify_security_event  # the lazily loaded names
print(json.dumps({"walked": names, "modules": sorted(sys.modules)}))
"""


def test_importing_the_client_loads_no_framework_and_no_server_module() -> None:
    result = subprocess.run(
        [sys.executable, "-c", _LOADED], capture_output=True, text=True, cwd=ROOT, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert {"broker.client.client", "broker.client.auth", "broker.client.events", "broker.client.cli"} <= set(
        report["walked"]
    )
    loaded = set(report["modules"])
    assert {"requests", "joserfc"} <= {name.split(".")[0] for name in loaded}  # the check saw the real imports
    assert sorted({name.split(".")[0] for name in loaded} & set(FRAMEWORKS)) == []
    server = sorted(name for name in loaded if name.startswith("broker.") and not name.startswith("broker.client"))
    assert server == []


def test_the_clients_source_imports_nothing_of_the_broker_outside_itself() -> None:
    outside = [
        f"{path.relative_to(ROOT)} imports {name}"
        for module, path in modules("broker.client")
        for name in imports_of(module, path)
        if (name == "broker" or name.startswith("broker.")) and not name.startswith("broker.client")
    ]
    assert outside == []
    assert violations(("broker.client",), FRAMEWORKS) == []


def test_the_broker_command_does_not_load_the_client_until_it_is_used() -> None:
    # `broker client …` is registered on every start of `broker`; requests and joserfc wait until a client command runs.
    probe = "import json, sys, broker.cli; broker.cli.build_parser(); print(json.dumps(sorted(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    loaded = set(json.loads(result.stdout))
    assert "broker.client.cli" in loaded and "broker.client.client" not in loaded and "requests" not in loaded
