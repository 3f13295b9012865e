"""`broker bench seed` (broker/seed/): persons at national scale on top of a demo instance, run as an operator runs
it — `python -m broker.cli` in a subprocess on a demo instance made by `broker demo --no-serve` — on SQLite and on
PostgreSQL. A small seed is checked for what the benchmarks rely on: the counts, a log that verifies, valid and
distinct identity codes, rows that say what their entries say, a manifest whose persons a partner can really ask
about over the API, and the same persons again from the same seed."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, text

from broker.adapters.database import Database
from broker.adapters.envelope import Sealed, open_hetu
from broker.adapters.keystore import KeyStore
from broker.adapters.orm import (
    AuditEntryRow,
    ConsentEventRow,
    ConsentRow,
    DisclosureRow,
    NoticeRow,
    PersonRow,
    RecordRow,
    RelationshipRow,
)
from broker.app import build_broker, create_app
from broker.cli import main
from broker.config import Settings
from broker.demo import create_demo
from broker.domain.clock import SystemClock
from broker.domain.hetu import birth_date, is_test_code, normalise_hetu
from broker.migrations import upgrade
from broker.seed.people import CODE_SPACE, identity_code
from broker.services import Broker
from broker.services.audit_check import verify_broker_log
from broker.services.records import open_record
from tests.support import BROKER_CLI, Env

ROOT = Path(__file__).resolve().parents[2]
POSTGRES_URL = os.environ.get("BROKER_TEST_POSTGRES_URL")
BACKENDS = [
    "sqlite",
    pytest.param(
        "postgres",
        marks=[
            pytest.mark.postgres,
            pytest.mark.skipif(not POSTGRES_URL, reason="BROKER_TEST_POSTGRES_URL not set"),
        ],
    ),
]
PERSONS = 50
ENTRIES = 10
DEMO_PERSONS = 4  # broker/demo.py PERSONS
SEED = ["--seed", "7"]


@dataclass
class Instance:
    path: Path
    env: dict[str, str]

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*BROKER_CLI, *args],
            env=self.env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )

    def settings(self) -> Settings:
        return Settings.from_env(self.env)

    def broker(self) -> Broker:
        return build_broker(self.settings())


def _environment(instance: Path, database_url: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BROKER_")}
    env.update(BROKER_MODE="demo", BROKER_INSTANCE_PATH=str(instance))
    if database_url:
        env["BROKER_DATABASE_URL"] = database_url
    return env


@pytest.fixture(scope="module")
def databases() -> Iterator[Any]:
    """Makes empty databases: a file in the instance on SQLite, a fresh schema on PostgreSQL (dropped after)."""
    schemas: list[str] = []

    def make(backend: str) -> str | None:
        if backend == "sqlite":
            return None
        assert POSTGRES_URL
        schema = f"seed_{secrets.token_hex(4)}"
        admin = Database(POSTGRES_URL)
        with admin.engine.begin() as connection:
            connection.execute(text(f'CREATE SCHEMA "{schema}"'))
        admin.dispose()
        schemas.append(schema)
        separator = "&" if "?" in POSTGRES_URL else "?"
        return f"{POSTGRES_URL}{separator}options=-csearch_path%3D{schema}"

    yield make
    if schemas:
        assert POSTGRES_URL
        admin = Database(POSTGRES_URL)
        with admin.engine.begin() as connection:
            for schema in schemas:
                connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def demo_instance(folder: Path, backend: str, databases: Any) -> Instance:
    instance = Instance(folder / "instance", _environment(folder / "instance", databases(backend)))
    created = instance.run("demo", "--no-serve")
    assert created.returncode == 0, created.stderr
    return instance


# The end of the seeded history: the same for every instance of this module, so that they can be compared, and a
# moment ago, so that the seeded consents are in force when the API is asked.
NOW = datetime.now(UTC).replace(second=0, microsecond=0).isoformat()


@pytest.fixture(scope="module", params=BACKENDS)
def seeded(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, databases: Any) -> Instance:
    instance = demo_instance(tmp_path_factory.mktemp("seed"), request.param, databases)
    manifest = instance.path.parent / "manifest.json"
    result = instance.run(
        "bench", "seed", "--persons", str(PERSONS), *SEED, "--now", NOW, "--manifest", str(manifest),
        "--chunk", "20", "--batch", "120",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert f"seeded {PERSONS} persons" in result.stdout
    assert "sequencing" in result.stderr  # the progress line names its phases
    return instance


def manifest_of(instance: Instance) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((instance.path.parent / "manifest.json").read_text(encoding="utf-8"))
    return document


def _code(broker: Broker, person: PersonRow) -> str:
    sealed = Sealed(person.hetu_ciphertext, person.hetu_nonce, person.hetu_wrapped_key, person.hetu_kek_id)
    return open_hetu(sealed, person.id, broker.keys)


def count(broker: Broker, row: Any) -> int:
    with broker.uow(write=False) as uow:
        return int(uow.session.scalar(select(func.count()).select_from(row)) or 0)


# -- what the seed made ------------------------------------------------------------------------------------------


def test_the_seed_adds_the_persons_and_their_entries_and_the_manifest_counts_them(seeded: Instance) -> None:
    manifest = manifest_of(seeded)
    counts = manifest["counts"]
    broker = seeded.broker()
    try:
        assert count(broker, PersonRow) == DEMO_PERSONS + PERSONS == DEMO_PERSONS + counts["persons"]
        assert counts["audit_entries"] == PERSONS * ENTRIES
        assert manifest["log_size"] == count(broker, AuditEntryRow)  # the demo's entries and the seed's, all placed
        for name, row in (
            ("relationships", RelationshipRow),
            ("consents", ConsentRow),
            ("consent_events", ConsentEventRow),
            ("records", RecordRow),
            ("disclosures", DisclosureRow),
            ("notices", NoticeRow),
        ):
            assert count(broker, row) >= counts[name] > 0, name
        # Several consents a person, some withdrawn, some expired; disclosures permitted and denied by the policy.
        assert counts["consents"] >= 1.5 * PERSONS
        assert counts["consents_withdrawn"] > 0 and counts["consents_expired"] > 0
        assert counts["disclosures_permitted"] > 0 and counts["disclosures_denied"] > 0
        assert sum(manifest["entries_by_event"].values()) == PERSONS * ENTRIES
    finally:
        broker.db.dispose()


def test_the_seeded_log_verifies(seeded: Instance) -> None:
    result = seeded.run("audit", "verify")
    assert result.returncode == 0, result.stderr
    size = manifest_of(seeded)["log_size"]
    assert f"audit log verified: {size} entries" in result.stdout
    assert f"extends the exported checkpoint of {size}" in result.stdout
    assert "0 entries awaiting sequencing" in result.stdout


def test_seeded_identity_codes_are_valid_distinct_test_codes_of_the_birth_date_stored(seeded: Instance) -> None:
    broker = seeded.broker()
    try:
        with broker.uow(write=False) as uow:
            rows = uow.session.scalars(select(PersonRow)).all()
        codes = []
        for row in rows:
            code = _code(broker, row)
            assert normalise_hetu(code) == code and is_test_code(code)
            assert birth_date(code) == row.birth_date
            codes.append(code)
        assert len(set(codes)) == len(codes) == DEMO_PERSONS + PERSONS
    finally:
        broker.db.dispose()


def test_every_seeded_disclosure_has_its_entry_saying_the_same(seeded: Instance) -> None:
    """DESIGN.md invariant 2: a disclosure and its entry together."""
    broker = seeded.broker()
    try:
        with broker.uow(write=False) as uow:
            linked = AuditEntryRow.id == DisclosureRow.audit_entry_id
            requests = DisclosureRow.kind == "request"  # the demo's notice is logged as notice:send
            query = select(DisclosureRow, AuditEntryRow).join(AuditEntryRow, linked).where(requests)
            pairs = uow.session.execute(query).all()
            disclosures = uow.session.scalar(select(func.count()).select_from(DisclosureRow).where(requests))
        assert len(pairs) == disclosures > 0
        for disclosure, entry in pairs:
            content = json.loads(entry.entry)
            assert entry.event == f"disclosure:{disclosure.effect}"
            assert content["detail"]["disclosure_id"] == disclosure.id
            assert (entry.person_id, entry.organisation, entry.category, entry.purpose) == (
                disclosure.person_id,
                disclosure.recipient_org,
                disclosure.category,
                disclosure.purpose,
            )
            assert content.get("record_ids", []) == disclosure.record_ids
            assert content.get("basis") == disclosure.basis
    finally:
        broker.db.dispose()


def test_seeded_records_open_with_the_instance_keys(seeded: Instance) -> None:
    broker = seeded.broker()
    try:
        with broker.uow(write=False) as uow:
            records = uow.session.scalars(select(RecordRow).limit(20)).all()
        assert records
        for record in records:
            assert open_record(broker, record)  # AES-256-GCM under the record's data key, bound to id and person
    finally:
        broker.db.dispose()


def test_a_manifest_person_is_disclosed_to_the_health_centre_over_the_api(seeded: Instance) -> None:
    manifest = manifest_of(seeded)
    assert manifest["disclosure"]["client_id"] == "varha-health"
    assert manifest["benchmark_ready"] >= len(manifest["persons"]) > 0
    person = manifest["persons"][0]
    settings = seeded.settings()
    broker = build_broker(settings)
    app = create_app(settings, broker=broker)
    app.testing = True
    env = Env(broker=broker, app=app, client=app.test_client(), clock=SystemClock())  # type: ignore[arg-type]
    try:
        body = {"person_id": person["person_id"], **manifest["disclosure"]["body"]}
        response = env.post("varha-health", "/disclosures", body)
        assert response.status_code == 200, response.get_json()
        answer = response.get_json()
        assert answer["basis"]["consent_id"] == person["consent_id"]
        assert [r["record_id"] for r in answer["records"]] == person["record_ids"]
        assert answer["records"][0]["content"]["assessment_date"]
    finally:
        broker.db.dispose()


# -- the same seed, more seeds, bad input -----------------------------------------------------------------------


def _snapshot(instance: Instance) -> dict[str, Any]:
    """What a seed determines: persons with their identity codes, consents, records' content and the entries,
    without what the instance's own keys and counters make (ciphertexts, index keys, append ids)."""
    broker = instance.broker()
    try:
        with broker.uow(write=False) as uow:
            persons = uow.session.scalars(select(PersonRow).order_by(PersonRow.id)).all()
            demo = json.loads((instance.path / "demo.json").read_text(encoding="utf-8"))
            seeded_ids = {p.id for p in persons} - {p["person_id"] for p in demo["persons"]}
            codes = {p.id: _code(broker, p) for p in persons if p.id in seeded_ids}
            consents = [
                (c.id, c.status, c.version, c.recipients, c.valid_from, c.valid_until, c.text_sha256)
                for c in uow.session.scalars(select(ConsentRow).order_by(ConsentRow.id))
                if c.person_id in seeded_ids
            ]
            records = [
                (r.id, r.category, open_record(broker, r))
                for r in uow.session.scalars(select(RecordRow).order_by(RecordRow.id))
                if r.person_id in seeded_ids
            ]
            # The seeded history ends before NOW; what the tests asked the API for since is logged after it.
            history = select(AuditEntryRow.entry, AuditEntryRow.person_id).where(
                AuditEntryRow.logged_at < datetime.fromisoformat(NOW)
            )
            entries = sorted(bytes(e) for e, person in uow.session.execute(history) if person in seeded_ids)
    finally:
        broker.db.dispose()
    return {"persons": codes, "consents": consents, "records": records, "entries": entries}


def in_process(instance: Instance, monkeypatch: pytest.MonkeyPatch, capsys: Any, *args: str) -> tuple[int, str, str]:
    """`broker …` run in this process (its workers are processes of their own), configured like `Instance.run`:
    quicker than a fresh interpreter, for the checks after the first seed."""
    for name in [name for name in os.environ if name.startswith("BROKER_")]:
        monkeypatch.delenv(name)
    for name, value in instance.env.items():
        if name.startswith("BROKER_"):
            monkeypatch.setenv(name, value)
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_the_same_seed_makes_the_same_persons_and_a_second_seed_adds_more(
    seeded: Instance,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    databases: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: Any,
) -> None:
    backend = request.node.callspec.params["seeded"]
    other = Instance(tmp_path / "instance", _environment(tmp_path / "instance", databases(backend)))
    create_demo(other.settings())
    seed = ("bench", "seed", "--persons", str(PERSONS), *SEED, "--now", NOW, "--chunk", "30", "--workers", "1")
    code, _out, err = in_process(other, monkeypatch, capsys, *seed)
    assert code == 0, err
    first, second = _snapshot(seeded), _snapshot(other)
    assert len(first["persons"]) == PERSONS and len(first["entries"]) > PERSONS * ENTRIES // 2
    assert first == second  # chunked otherwise, made by one worker instead of two: the same

    again = ("bench", "seed", "--persons", "20", "--seed", "8", "--entries-per-person", "6", "--workers", "1")
    code, out, err = in_process(other, monkeypatch, capsys, *again)
    assert code == 0, err
    assert f"numbers {DEMO_PERSONS + PERSONS:,}–{DEMO_PERSONS + PERSONS + 19:,}" in out
    grown = _snapshot(other)
    assert len(grown["persons"]) == PERSONS + 20
    assert len(set(grown["persons"].values())) == PERSONS + 20  # no identity code twice
    broker = other.broker()
    try:
        check = verify_broker_log(broker)
    finally:
        broker.db.dispose()
    assert check.size == count_entries(other) and check.pending == 0


def count_entries(instance: Instance) -> int:
    broker = instance.broker()
    try:
        return count(broker, AuditEntryRow)
    finally:
        broker.db.dispose()


def test_bad_input_is_refused_naming_what_is_wrong(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    instance = Instance(tmp_path / "instance", _environment(tmp_path / "instance", None))
    for args, message in (
        (["--persons", "0"], "--persons must be from 1"),
        (["--persons", "5", "--entries-per-person", "3"], "--entries-per-person must be from 5"),
        (["--persons", "5", "--manifest", str(tmp_path / "no" / "m.json")], "does not exist"),
        (["--persons", "5", "--now", "2999-01-01T00:00:00Z"], "--now must not be in the future"),
    ):
        code, _out, err = in_process(instance, monkeypatch, capsys, "bench", "seed", *args)
        assert code == 2, (args, err)
        assert message in err, err

    code, _out, err = in_process(instance, monkeypatch, capsys, "bench", "seed", "--persons", "5")
    assert code == 1
    assert "has no key store" in err and "broker demo --no-serve" in err
    assert not instance.path.exists()  # nothing was created on the way

    production = dict(
        instance.env,
        BROKER_MODE="production",
        BROKER_ISSUER="https://broker.example",
        BROKER_DATABASE_URL=f"sqlite:///{instance.path / 'broker.db'}",
    )
    code, _out, err = in_process(
        Instance(instance.path, production), monkeypatch, capsys, "bench", "seed", "--persons", "5"
    )
    assert code == 1 and "never on a production database" in err


def test_an_instance_without_the_demo_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    instance = Instance(tmp_path / "instance", _environment(tmp_path / "instance", None))
    instance.path.mkdir()
    upgrade(instance.settings().database_url)
    KeyStore.open(instance.settings().keys_path, create=True)
    code, _out, err = in_process(instance, monkeypatch, capsys, "bench", "seed", "--persons", "5")
    assert code == 1
    assert "the demo's organisations are missing" in err and "broker demo --no-serve" in err

    if POSTGRES_URL:  # a database that does not exist
        missing = Instance(instance.path, dict(instance.env, BROKER_DATABASE_URL=f"{POSTGRES_URL}_no_such_database"))
        code, _out, err = in_process(missing, monkeypatch, capsys, "bench", "seed", "--persons", "5")
        assert code == 1
        assert "cannot read the broker's tables" in err and "no_such_database" in err


def test_identity_codes_are_a_bijection_of_the_person_number() -> None:
    numbers = [*range(0, 20_000), *range(CODE_SPACE - 20_000, CODE_SPACE)]
    codes = [identity_code(n)[0] for n in numbers]
    assert len(set(codes)) == len(codes)
    assert all(code[6] in "YXWVUBCDEF" and is_test_code(code) for code in codes)
    with pytest.raises(ValueError, match="numbered below"):
        identity_code(CODE_SPACE)
