"""The whole path over real HTTP against a served broker, with a partner client built on Authlib exactly as
docs/api.md shows it (private_key_jwt, DPoP-bound tokens with a fresh proof on every request):

resolve → relationship → in-person consent → deposit a work assessment → the health centre gets exactly the
allowed fields → withdrawal → the health centre is refused with `no_legal_basis` → `broker audit verify`
passes → an edited, a deleted and a reordered audit row are each detected.
"""

from __future__ import annotations

import importlib.util
import shutil
import sqlite3
import subprocess
import sys
from datetime import date
from pathlib import Path

import requests
from authlib.integrations.requests_client import OAuth2Session

from broker.domain.hetu import make_hetu
from schemas.records.examples import EXAMPLES
from tests.e2e.conftest import ROOT, Served

_spec = importlib.util.spec_from_file_location("disclose_example", ROOT / "docs" / "examples" / "disclose.py")
assert _spec and _spec.loader
example = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(example)


def partner(served: Served, client_id: str) -> OAuth2Session:
    session: OAuth2Session
    session, base_url = example.broker_session(client_id, served.instance)
    assert base_url == served.base_url and session.token["token_type"] == "DPoP"
    return session


def test_a_bound_token_is_refused_without_its_proof_and_as_a_bearer_token(served: Served) -> None:
    # The same requests a stolen token allows: without the DPoP key they get nothing.
    session = partner(served, "kisalli")
    token = session.token["access_token"]
    url = f"{served.base_url}/api/v1/inbox"
    assert session.get(url).status_code == 200
    for headers in ({"Authorization": f"DPoP {token}"}, {"Authorization": f"Bearer {token}"}):
        refused = requests.get(url, headers=headers, timeout=10)
        assert refused.status_code == 401, headers
        assert refused.headers["WWW-Authenticate"].startswith("DPoP error=")
    proof = session.proof("GET", url, token)
    assert requests.get(url, headers={"Authorization": f"DPoP {token}", "DPoP": proof}, timeout=10).status_code == 200
    replayed = requests.get(url, headers={"Authorization": f"DPoP {token}", "DPoP": proof}, timeout=10)
    assert replayed.status_code == 401 and replayed.json()["code"] == "invalid_dpop_proof"


def test_the_whole_path_from_consent_to_refusal_with_a_verifiable_log(served: Served) -> None:
    api = f"{served.base_url}/api/v1"
    kisalli, health = partner(served, "kisalli"), partner(served, "varha-health")

    person_id = kisalli.post(f"{api}/persons/resolve", json={"hetu": make_hetu(date(1991, 2, 3), 990)}).json()[
        "person_id"
    ]
    for session in (kisalli, health):
        assert session.post(f"{api}/persons/{person_id}/relationships").status_code == 200
    consent = kisalli.post(
        f"{api}/consents",
        json={
            "person_id": person_id,
            "recipients": ["varha-health"],
            "categories": ["work_assessment"],
            "purposes": ["work_capacity_assessment"],
            "method": "in_person",
            "witness": "Pekka Salo",
        },
    )
    assert consent.status_code == 201, consent.text
    record = kisalli.post(
        f"{api}/records",
        json={"person_id": person_id, "category": "work_assessment", "content": EXAMPLES["work_assessment"]},
    )
    assert record.status_code == 201, record.text

    granted = health.post(
        f"{api}/disclosures",
        json={"person_id": person_id, "category": "work_assessment", "purpose": "work_capacity_assessment"},
    )
    assert granted.status_code == 200, granted.text
    body = granted.json()
    [disclosed] = body["records"]
    rule = body["basis"]["rule"]
    from policies import load_policy

    allowed = set(load_policy().rule(rule).fields["work_assessment"])
    assert set(disclosed["content"]) == allowed & set(EXAMPLES["work_assessment"])
    assert {k: EXAMPLES["work_assessment"][k] for k in disclosed["content"]} == disclosed["content"]

    withdrawn = kisalli.post(f"{api}/consents/{consent.json()['consent_id']}/withdraw", json={})
    assert withdrawn.status_code == 200 and withdrawn.json()["status"] == "withdrawn"
    refused = health.post(
        f"{api}/disclosures",
        json={"person_id": person_id, "category": "work_assessment", "purpose": "work_capacity_assessment"},
    )
    assert refused.status_code == 403
    assert refused.headers["Content-Type"].startswith("application/problem+json")
    assert refused.json()["code"] == "no_legal_basis"

    verified = served.broker("audit", "verify")
    assert verified.returncode == 0, verified.stderr
    assert "audit log verified" in verified.stdout


def test_the_docs_example_runs_verbatim_against_the_demo(served: Served) -> None:
    mikko = served.demo["persons"][0]["person_id"]
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "docs" / "examples" / "disclose.py"),
            "varha-health",
            mikko,
            "work_assessment",
            "work_capacity_assessment",
        ],
        cwd=served.instance.parent,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("200")


def _tampered(served: Served, tmp_path: Path, statements: list[tuple[str, tuple]]) -> subprocess.CompletedProcess[str]:
    """Apply raw SQL to a copy of the database and run `broker audit verify` on the copy."""
    copy = tmp_path / f"tampered-{len(list(tmp_path.iterdir()))}.db"
    source = sqlite3.connect(served.instance / "broker.db")
    target = sqlite3.connect(copy)
    source.backup(target)
    source.close()
    for sql, params in statements:
        target.execute(sql, params)
    target.commit()
    target.close()
    env = {**served.env, "BROKER_DATABASE_URL": f"sqlite:///{copy}"}
    return subprocess.run(
        # --no-sink: the sink belongs to the live instance, whose sequencer keeps exporting newer checkpoints than
        # the copy holds; here the copy's own rows and signed checkpoints are what is checked.
        [sys.executable, "-m", "broker.cli", "audit", "verify", "--no-sink"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_an_edited_a_deleted_and_a_reordered_audit_row_are_each_detected(served: Served, tmp_path: Path) -> None:
    # An entry's row holds its bytes as appended (without "index"); its position and leaf hash are in audit_leaves.
    db = sqlite3.connect(served.instance / "broker.db")
    entry = db.execute("SELECT entry FROM audit_entries WHERE id = (SELECT entry_id FROM audit_leaves WHERE idx = 5)")
    entry = entry.fetchone()[0]
    row2, row3 = db.execute("SELECT entry_id, leaf_hash FROM audit_leaves WHERE idx IN (2, 3) ORDER BY idx").fetchall()
    db.close()
    at = "(SELECT entry_id FROM audit_leaves WHERE idx = {})".format
    last = "(SELECT entry_id FROM audit_leaves WHERE idx = (SELECT MAX(idx) FROM audit_leaves))"

    edited = _tampered(
        served,
        tmp_path,
        [(f"UPDATE audit_entries SET entry = ? WHERE id = {at(5)}", (entry.replace(b'"v":1', b'"v":2'),))],
    )
    deleted = _tampered(
        served,
        tmp_path,
        [
            (f"DELETE FROM audit_actors WHERE entry_id = {at(3)}", ()),
            (f"DELETE FROM audit_entries WHERE id = {at(3)}", ()),
            ("DELETE FROM audit_leaves WHERE idx = 3", ()),
        ],
    )
    # Entries 2 and 3 change places, each with its leaf hash: the index in an entry's bytes is its position, so
    # the moved entry no longer hashes to the leaf it brought along.
    reordered = _tampered(
        served,
        tmp_path,
        [
            ("UPDATE audit_leaves SET entry_id = -1 WHERE idx = 3", ()),
            ("UPDATE audit_leaves SET entry_id = ?, leaf_hash = ? WHERE idx = 2", row3),
            ("UPDATE audit_leaves SET entry_id = ?, leaf_hash = ? WHERE idx = 3", row2),
        ],
    )
    truncated = _tampered(
        served,
        tmp_path,
        [
            (f"DELETE FROM audit_actors WHERE entry_id = {last}", ()),
            (f"DELETE FROM audit_entries WHERE id = {last}", ()),
            ("DELETE FROM audit_leaves WHERE idx = (SELECT MAX(idx) FROM audit_leaves)", ()),
        ],
    )

    assert edited.returncode == 1 and "entry 5" in edited.stderr and "leaf_hash_mismatch" in edited.stderr
    assert deleted.returncode == 1 and "entry 3" in deleted.stderr and "index_gap" in deleted.stderr
    assert reordered.returncode == 1 and "entry 2" in reordered.stderr and "leaf_hash_mismatch" in reordered.stderr
    assert truncated.returncode == 1 and "size_mismatch" in truncated.stderr
    shutil.rmtree(tmp_path, ignore_errors=True)


def test_the_example_in_the_api_guide_is_the_example_file() -> None:
    import re

    guide = (ROOT / "docs" / "api.md").read_text()
    # The by-hand example of the appendix (the partner client's examples come first; tests/e2e/test_client.py).
    block = next((b for b in re.findall(r"```python\n(.*?)```", guide, re.S) if "class BrokerAssertion" in b), None)
    assert block is not None
    assert block in (ROOT / "docs" / "examples" / "disclose.py").read_text()
