"""The `broker` command line (DESIGN.md, "Command line"), run as an operator runs it: `python -m broker.cli` in
a subprocess, configured only through the environment. One demo instance is made per module and copied for the
tests that change it."""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import select

from audit import canonical_json
from broker.adapters.envelope import Sealed, open_hetu
from broker.adapters.keystore import KeyStore
from broker.adapters.orm import NoticeRow, PersonRow, RecordRow
from broker.app import build_broker
from broker.config import Settings
from broker.demo import DPO_PARTNER, ORGANISATIONS, caller
from broker.domain.hetu import is_test_code, normalise_hetu
from broker.domain.model import DPO_ROLE
from broker.services import notices
from broker.services.records import open_record
from policies import load_policy
from policies.cases import load_cases
from policies.loader import PACKAGE_DIR
from schemas.records import load_record
from schemas.records.examples import EXAMPLES

ROOT = Path(__file__).resolve().parents[2]
PARTNER_KEYS = {"client_id", "organisation", "org_type", "key_file", "alg", "scopes", "roles"}
PERSON_KEYS = {"person_id", "hetu", "name", "login"}


def run(
    *args: str, instance: Path, mode: str = "demo", stdin: str | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("BROKER_")}
    environment.update(BROKER_MODE=mode, BROKER_INSTANCE_PATH=str(instance), **env)
    return subprocess.run(
        [sys.executable, "-m", "broker.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=environment,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A demo instance made by `broker demo --no-serve`; tests that change it work on a copy."""
    instance = tmp_path_factory.mktemp("cli") / "instance"
    result = run("demo", "--no-serve", instance=instance)
    assert result.returncode == 0, result.stderr
    assert "created" in result.stdout
    return instance


@pytest.fixture
def demo_copy(demo: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "instance"
    shutil.copytree(demo, copy)
    return copy


def demo_json(instance: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((instance / "demo.json").read_text(encoding="utf-8"))
    return data


@pytest.fixture
def broker_on() -> Iterator[Any]:
    """Open an instance in-process, the way the server would (demo mode); closed after the test."""
    opened = []

    def open_instance(instance: Path) -> Any:
        broker = build_broker(Settings.from_env({"BROKER_MODE": "demo", "BROKER_INSTANCE_PATH": str(instance)}))
        opened.append(broker)
        return broker

    yield open_instance
    for broker in opened:
        broker.db.dispose()


# -- policy -----------------------------------------------------------------------------------------------------


def test_policy_check_validates_the_rules_and_prints_their_count(tmp_path: Path) -> None:
    result = run("policy", "check", instance=tmp_path, mode="test")
    assert result.returncode == 0, result.stderr
    assert re.search(rf"\b{len(load_policy().rules)} rules\b", result.stdout)


def test_policy_check_names_the_file_rule_and_field_of_a_broken_rule(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    shutil.copytree(PACKAGE_DIR / "rules", rules)
    path = rules / "activation.yaml"
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    [rule] = [r for r in document["rules"] if r["id"] == "F5"]
    rule["categories"] = [*rule["categories"], "horoscope"]
    path.write_text(yaml.safe_dump(document, allow_unicode=True), encoding="utf-8")

    result = run("policy", "check", "--rules", str(rules), instance=tmp_path, mode="test")
    assert result.returncode == 1
    assert "valid" not in result.stdout
    first = result.stderr.splitlines()[0]
    assert "activation.yaml" in first and "F5" in first and "categories" in first and "horoscope" in first


def test_policy_test_runs_every_decision_table_case(tmp_path: Path) -> None:
    result = run("policy", "test", instance=tmp_path, mode="test")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == f"{len(load_cases())} passed, 0 failed"


def evaluation(**facts: Any) -> str:
    return json.dumps(
        {
            "request": {
                "requester_org": "varha-social-work",
                "requester_org_type": "social_work",
                "requester_role": "social_worker",
                "category": "interruption_notice",
                "purpose": "follow_up",
                "source_org": "kisalli",
                "source_org_type": "employment_services",
            },
            "facts": facts or None,
            "now": "2026-01-15T09:00:00Z",
        }
    )


def test_policy_eval_answers_a_what_if_with_the_decision(tmp_path: Path) -> None:
    result = run(
        "policy", "eval", instance=tmp_path, mode="test", stdin=evaluation(relationships=["varha-social-work"])
    )
    assert result.returncode == 0, result.stderr
    decision = json.loads(result.stdout)
    assert set(decision) == {"effect", "basis", "fields", "obligations", "reasons", "policy_version", "extra"}
    assert decision["effect"] == "permit"
    assert decision["basis"]["kind"] == "statute" and decision["basis"]["rule"] == "F5"
    assert decision["fields"] == list(load_policy().rule("F5").fields["interruption_notice"])
    assert decision["policy_version"] == load_policy().version


def test_policy_eval_explains_a_denial(tmp_path: Path) -> None:
    result = run("policy", "eval", instance=tmp_path, mode="test", stdin=evaluation())
    assert result.returncode == 0, result.stderr
    decision = json.loads(result.stdout)
    assert decision["effect"] == "deny" and decision["basis"] is None and decision["fields"] == []
    assert any(r["rule"] == "F5" and r["code"] == "no_relationship" for r in decision["reasons"])


@pytest.mark.parametrize(
    ("stdin", "message"),
    [
        ("{not json", "not valid JSON"),
        ("", "not valid JSON"),
        ('{"request": {}}', "invalid input"),
        ("[1, 2]", "invalid input"),
    ],
    ids=["broken JSON", "empty", "missing fields", "not an object"],
)
def test_policy_eval_refuses_malformed_input_with_exit_code_2(tmp_path: Path, stdin: str, message: str) -> None:
    result = run("policy", "eval", instance=tmp_path, mode="test", stdin=stdin)
    assert result.returncode == 2
    assert message in result.stderr and result.stdout == ""
    assert "Traceback" not in result.stderr


# -- demo -------------------------------------------------------------------------------------------------------


def test_the_demo_describes_itself_in_demo_json(demo: Path) -> None:
    data = demo_json(demo)
    assert {"base_url", "issuer", "partners", "persons"} <= set(data)
    assert data["base_url"] == "http://127.0.0.1:8000" and data["issuer"] == "http://127.0.0.1:8000"
    assert [p["client_id"] for p in data["partners"]] == [org for org, *_ in ORGANISATIONS] + [DPO_PARTNER]
    for partner in data["partners"]:
        assert set(partner) >= PARTNER_KEYS, partner["client_id"]
        assert partner["alg"] in {"EdDSA", "Ed25519"}
        assert partner["scopes"] and partner["roles"]
        if partner["client_id"] == DPO_PARTNER:  # the DPO's system: the log only, for the DPO role only
            assert partner["scopes"] == ["audit:read"] and partner["roles"] == [DPO_ROLE]
            continue
        assert partner["organisation"] == partner["client_id"]
        assert sorted(partner["roles"]) == sorted(load_policy().roles_for(partner["org_type"]))
    assert data["persons"]
    for person in data["persons"]:
        assert set(person) >= PERSON_KEYS
        assert normalise_hetu(person["hetu"]) == person["hetu"] and is_test_code(person["hetu"])
    assert len({p["person_id"] for p in data["persons"]}) == len(data["persons"])


def test_every_demo_partner_key_file_exists_and_is_private(demo: Path) -> None:
    for partner in demo_json(demo)["partners"]:
        path = demo / partner["key_file"]
        assert not Path(partner["key_file"]).is_absolute()
        assert path.is_file(), partner["key_file"]
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, partner["key_file"]
        key = json.loads(path.read_text(encoding="utf-8"))
        assert key["kty"] == "OKP" and "d" in key
    assert stat.S_IMODE((demo / "demo.json").stat().st_mode) == 0o600


def test_the_demo_persons_are_the_ones_in_the_database(demo: Path, broker_on: Any) -> None:
    broker = broker_on(demo)
    with broker.uow(write=False) as uow:
        rows = {row.id: row for row in uow.session.scalars(select(PersonRow))}
    for person in demo_json(demo)["persons"]:
        row = rows[person["person_id"]]
        sealed = Sealed(row.hetu_ciphertext, row.hetu_nonce, row.hetu_wrapped_key, row.hetu_kek_id)
        assert open_hetu(sealed, row.id, broker.keys) == person["hetu"]


def test_running_the_demo_again_keeps_the_instance_and_its_person_ids(demo_copy: Path) -> None:
    before = demo_json(demo_copy)
    keys_before = sorted(p.name for p in (demo_copy / "keys").iterdir())
    result = run("demo", "--no-serve", instance=demo_copy)
    assert result.returncode == 0, result.stderr
    assert "existing instance kept" in result.stdout
    after = demo_json(demo_copy)
    assert [p["person_id"] for p in after["persons"]] == [p["person_id"] for p in before["persons"]]
    assert after == before
    assert sorted(p.name for p in (demo_copy / "keys").iterdir()) == keys_before


# -- audit ------------------------------------------------------------------------------------------------------


def test_audit_verify_passes_on_the_demo(demo: Path) -> None:
    result = run("audit", "verify", instance=demo)
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(
        r"audit log verified: (\d+) entries, root [0-9a-f]{64}, \d+ signed checkpoints, "
        r"extends the exported checkpoint of \1, 0 entries awaiting sequencing\n",
        result.stdout,
    ), result.stdout


def edit_entry(instance: Path, event: str, change: Any) -> int:
    """Change the first sequenced entry of `event` in place with sqlite3 — its stored bytes (without "index") and
    the offset of the index member among them, as audit.encode_pending makes them — leaving its leaf hash alone."""
    with sqlite3.connect(instance / "broker.db") as connection:
        idx, entry_id, raw = connection.execute(
            "SELECT l.idx, e.id, e.entry FROM audit_entries e JOIN audit_leaves l ON l.entry_id = e.id "
            "WHERE e.event = ? ORDER BY l.idx LIMIT 1",
            (event,),
        ).fetchone()
        entry = json.loads(raw)
        change(entry)
        split = len(canonical_json({name: value for name, value in entry.items() if name < "index"}))
        connection.execute(
            "UPDATE audit_entries SET entry = ?, split = ? WHERE id = ?", (canonical_json(entry), split, entry_id)
        )
    connection.close()
    return int(idx)


def test_audit_verify_names_an_edited_entry(demo_copy: Path) -> None:
    idx = edit_entry(demo_copy, "disclosure:permit", lambda entry: entry.update(fields=[]))
    result = run("audit", "verify", instance=demo_copy)
    assert result.returncode == 1
    assert f"entry {idx}:" in result.stderr and "leaf_hash_mismatch" in result.stderr
    assert "verified" not in result.stdout


def test_audit_verify_names_a_removed_entry(demo_copy: Path) -> None:
    with sqlite3.connect(demo_copy / "broker.db") as connection:
        fifth = "(SELECT entry_id FROM audit_leaves WHERE idx = 5)"
        connection.execute(f"DELETE FROM audit_actors WHERE entry_id = {fifth}")
        connection.execute(f"DELETE FROM audit_entries WHERE id = {fifth}")
        connection.execute("DELETE FROM audit_leaves WHERE idx = 5")
    connection.close()
    result = run("audit", "verify", instance=demo_copy)
    assert result.returncode == 1
    assert "entry 5:" in result.stderr and "index_gap" in result.stderr


# -- keys -------------------------------------------------------------------------------------------------------


def test_key_rotation_rewraps_every_data_key_and_everything_still_opens(demo_copy: Path, broker_on: Any) -> None:
    keys = demo_copy / "keys"
    old_keks = sorted(p.stem for p in keys.glob("kek-*.jwk"))
    result = run("keys", "rotate", instance=demo_copy)
    assert result.returncode == 0, result.stderr
    [new_kek] = sorted({p.stem for p in keys.glob("kek-*.jwk")} - set(old_keks))
    assert new_kek > old_keks[-1] and f"new key-encryption key {new_kek}" in result.stdout

    # Every sealed row now names the new key ...
    broker = broker_on(demo_copy)
    with broker.uow(write=False) as uow:
        records = uow.session.scalars(select(RecordRow)).all()
        persons = uow.session.scalars(select(PersonRow)).all()
        notice_keks = uow.session.scalars(select(NoticeRow.kek_id)).all()
    assert records and persons and notice_keks
    assert {r.kek_id for r in records} == {p.hetu_kek_id for p in persons} == set(notice_keks) == {new_kek}

    # ... and opens without the old ones: take them away and decrypt everything.
    for kid in old_keks:
        (keys / f"{kid}.jwk").unlink()
    broker.keys = KeyStore.open(keys)
    assert broker.keys.kek_ids() == [new_kek]
    for row in records:
        assert open_record(broker, row) == load_record(row.category, EXAMPLES[row.category])
    hetus = {p["person_id"]: p["hetu"] for p in demo_json(demo_copy)["persons"]}
    for person in persons:
        sealed = Sealed(person.hetu_ciphertext, person.hetu_nonce, person.hetu_wrapped_key, person.hetu_kek_id)
        assert open_hetu(sealed, person.id, broker.keys) == hetus[person.id]
    inbox = notices.read_inbox(broker, caller(broker, "varha-social-work"), include_acknowledged=True)
    assert [n["content"] for n in inbox] == [EXAMPLES["interruption_notice"]]

    # Rotation does not touch the log.
    verified = run("audit", "verify", instance=demo_copy)
    assert verified.returncode == 0, verified.stderr


# -- configuration and the database ---------------------------------------------------------------------------


def test_production_without_a_database_url_refuses_to_start(tmp_path: Path) -> None:
    result = run("audit", "verify", instance=tmp_path, mode="production")
    assert result.returncode == 2
    assert "configuration error" in result.stderr and "BROKER_DATABASE_URL" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_unknown_mode_is_a_configuration_error(tmp_path: Path) -> None:
    result = run("keys", "rotate", instance=tmp_path, mode="staging")
    assert result.returncode == 2 and "configuration error" in result.stderr
    assert not (tmp_path / "keys").exists()


def test_db_upgrade_creates_the_schema_of_a_new_instance(tmp_path: Path) -> None:
    instance = tmp_path / "instance"
    result = run("db", "upgrade", instance=instance, mode="test")
    assert result.returncode == 0, result.stderr
    assert "newest schema" in result.stdout
    with sqlite3.connect(instance / "broker.db") as connection:
        tables = {name for (name,) in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    connection.close()
    assert {"persons", "records", "audit_entries", "alembic_version"} <= tables


def test_jobs_run_forgets_only_expired_assertion_ids_and_tokens(demo_copy: Path) -> None:
    past, future = "2000-01-01 00:00:00.000000", "2999-01-01 00:00:00.000000"
    with sqlite3.connect(demo_copy / "broker.db") as connection:
        connection.executemany(
            "INSERT INTO assertion_jtis (client_id, jti, expires_at) VALUES ('kisalli', ?, ?)",
            [("old", past), ("live", future)],
        )
        connection.executemany(
            "INSERT INTO access_tokens (token_hash, client_id, scope, actor_id, actor_role, issued_at, expires_at)"
            " VALUES (?, 'kisalli', 'persons', 'staff-1', 'individual_coach', ?, ?)",
            [("0" * 64, past, past), ("1" * 64, past, future)],
        )
    connection.close()
    result = run("jobs", "run", instance=demo_copy)
    assert result.returncode == 0, result.stderr
    assert "forgot 1 used assertion and DPoP proof ids and 1 expired access tokens" in result.stdout
    with sqlite3.connect(demo_copy / "broker.db") as connection:
        assert connection.execute("SELECT jti FROM assertion_jtis").fetchall() == [("live",)]
        assert connection.execute("SELECT token_hash FROM access_tokens").fetchall() == [("1" * 64,)]
    connection.close()
