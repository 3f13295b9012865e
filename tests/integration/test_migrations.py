"""The Alembic migrations build exactly the schema the ORM describes, on SQLite and on PostgreSQL, and applying
them again changes nothing. (The rest of the suite builds its tables with `create_all`; this is what keeps the
two from drifting apart.)"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, inspect, select, text

from audit import encode_entry, encode_pending, leaf_hash, place_index
from broker.adapters.orm import FACTS_TABLES, Base, OrganisationRow
from broker.app import build_broker, create_app
from broker.config import Settings
from broker.domain.clock import FixedClock
from broker.migrations import alembic_config, upgrade
from broker.services.audit_check import verify_broker_log
from broker.services.sequencer import Sequencer
from tests.support import Env, make_env

POSTGRES_URL = os.environ.get("BROKER_TEST_POSTGRES_URL")


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param(
            "postgres",
            marks=[
                pytest.mark.postgres,
                pytest.mark.skipif(not POSTGRES_URL, reason="BROKER_TEST_POSTGRES_URL not set"),
            ],
        ),
    ]
)
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of a database with no tables: a new SQLite file, or a new PostgreSQL schema dropped afterwards."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    assert POSTGRES_URL
    schema = f"mig_{secrets.token_hex(4)}"
    admin = create_engine(POSTGRES_URL)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    separator = "&" if "?" in POSTGRES_URL else "?"
    try:
        yield f"{POSTGRES_URL}{separator}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def engine(empty_database: str) -> Iterator[Engine]:
    engine = create_engine(empty_database)
    yield engine
    engine.dispose()


def schema_of(engine: Engine) -> dict[str, dict[str, Any]]:
    """Tables → their columns (name, nullability, primary key), indexes and foreign keys, as the database has them."""
    inspector = inspect(engine)
    return {
        table: {
            "columns": {c["name"]: c["nullable"] for c in inspector.get_columns(table)},
            "primary_key": sorted(inspector.get_pk_constraint(table)["constrained_columns"]),
            "indexes": sorted(
                (i["name"], tuple(i["column_names"]), bool(i["unique"])) for i in inspector.get_indexes(table)
            ),
            "foreign_keys": sorted(
                (tuple(f["constrained_columns"]), f["referred_table"], tuple(f["referred_columns"]))
                for f in inspector.get_foreign_keys(table)
            ),
        }
        for table in inspector.get_table_names()
        if table != "alembic_version"
    }


def test_there_is_one_line_of_migrations(empty_database: str) -> None:
    heads = ScriptDirectory.from_config(alembic_config(empty_database)).get_heads()
    assert len(heads) == 1


def test_upgrade_on_an_empty_database_creates_exactly_the_orm_tables_and_columns(
    empty_database: str, engine: Engine
) -> None:
    upgrade(empty_database)
    schema = schema_of(engine)
    assert set(schema) == set(Base.metadata.tables)
    for name, table in Base.metadata.tables.items():
        assert schema[name]["columns"] == {c.name: c.nullable for c in table.columns}, name
        assert schema[name]["primary_key"] == sorted(c.name for c in table.primary_key), name
        expected_indexes = sorted((i.name, tuple(c.name for c in i.columns), bool(i.unique)) for i in table.indexes)
        assert [i for i in schema[name]["indexes"] if i in expected_indexes] == expected_indexes, name
        assert schema[name]["foreign_keys"] == sorted(
            (tuple(c.name for c in fk.columns), fk.referred_table.name, tuple(e.column.name for e in fk.elements))
            for fk in table.foreign_key_constraints
        ), name


def test_autogenerate_finds_no_difference_between_the_migrated_database_and_the_orm(
    empty_database: str, engine: Engine
) -> None:
    upgrade(empty_database)
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []


_SQLITE_TRIGGERS = "SELECT name, sql FROM sqlite_master WHERE type = 'trigger'"
# PostgreSQL: each trigger of the schema with its definition, and each function with its definition.
_POSTGRES_TRIGGERS = (
    "SELECT t.tgname, pg_get_triggerdef(t.oid) FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
    "WHERE c.relnamespace = current_schema()::regnamespace AND NOT t.tgisinternal "
    "UNION ALL SELECT p.proname, pg_get_functiondef(p.oid) FROM pg_proc p "
    "WHERE p.pronamespace = current_schema()::regnamespace"
)


def _triggers(engine: Engine, schema: str) -> dict[str, str]:
    """Each trigger's (and on PostgreSQL each function's) definition by name, the schema's name taken out."""
    query = _SQLITE_TRIGGERS if engine.dialect.name == "sqlite" else _POSTGRES_TRIGGERS
    with engine.connect() as connection:
        found = connection.execute(text(query)).all()
    return {
        name: " ".join((definition.replace(schema, "<schema>") if schema else definition).split())
        for name, definition in found
    }


@contextlib.contextmanager
def _created_by_the_orm(empty_database: str, tmp_path: Path) -> Iterator[tuple[Engine, str]]:
    """An engine on another empty database (SQLite) or schema (PostgreSQL) whose tables `create_all` made, and the
    schema's name ("" on SQLite)."""
    if empty_database.startswith("sqlite"):
        fresh = create_engine(f"sqlite:///{tmp_path / 'fresh.db'}")
        schema = ""
    else:
        assert POSTGRES_URL
        schema = f"orm_{secrets.token_hex(4)}"
        separator = "&" if "?" in POSTGRES_URL else "?"
        fresh = create_engine(f"{POSTGRES_URL}{separator}options=-csearch_path%3D{schema}")
        with fresh.begin() as connection:
            connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        Base.metadata.create_all(fresh)
        yield fresh, schema
    finally:
        if schema:
            with fresh.begin() as connection:
                connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        fresh.dispose()


def test_the_migrations_make_the_same_triggers_and_functions_as_the_orm(
    empty_database: str, engine: Engine, tmp_path: Path
) -> None:
    """The triggers are the schema too: the audit queue's, and those that count changes to a person's facts (which
    a batch operation recreating a SQLite table would silently drop), with their functions on PostgreSQL."""
    upgrade(empty_database)
    with _created_by_the_orm(empty_database, tmp_path) as (fresh, schema):
        created = _triggers(fresh, schema)
    migrated = _triggers(engine, empty_database.rsplit("%3D", 1)[1] if schema else "")
    assert migrated == created
    assert {f"{t}_facts_{op}" for t in FACTS_TABLES for op in ("insert", "update", "delete")} < set(migrated)
    assert {"audit_entries_queue", "persons_facts_birth_date"} < set(migrated)


def test_the_database_records_the_head_revision(empty_database: str, engine: Engine) -> None:
    upgrade(empty_database)
    head = ScriptDirectory.from_config(alembic_config(empty_database)).get_current_head()
    with engine.connect() as connection:
        assert MigrationContext.configure(connection).get_current_revision() == head


def test_upgrading_twice_changes_nothing_and_keeps_the_data(empty_database: str, engine: Engine) -> None:
    upgrade(empty_database)
    before = schema_of(engine)
    with engine.begin() as connection:
        connection.execute(
            OrganisationRow.__table__.insert().values(
                id="kela", name="Kela", org_type="kela", created_at=datetime(2026, 1, 15, tzinfo=UTC)
            )
        )
    upgrade(empty_database)
    assert schema_of(engine) == before
    with engine.connect() as connection:
        assert connection.scalars(select(OrganisationRow.__table__.c.id)).all() == ["kela"]


def test_downgrading_to_base_removes_every_table(empty_database: str, engine: Engine) -> None:
    upgrade(empty_database)
    command.downgrade(alembic_config(empty_database), "base")
    assert schema_of(engine) == {}
    upgrade(empty_database)
    assert set(schema_of(engine)) == set(Base.metadata.tables)


# --- revision 0007: each audit entry's bytes stored once ----------------------------------------------------------


def _final_entries(engine: Engine) -> dict[int, bytes]:
    """Every sequenced entry's final bytes by index, as the database holds them at or after revision 0007."""
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT l.idx, e.entry, e.split FROM audit_leaves l JOIN audit_entries e ON e.id = l.entry_id "
                "ORDER BY l.idx"
            )
        ).all()
    return {idx: place_index(bytes(entry), split, idx) for idx, entry, split in rows}


def test_revision_0007_converts_a_real_log_both_ways_without_changing_a_byte_it_proves(
    empty_database: str, engine: Engine, tmp_path: Path
) -> None:
    upgrade(empty_database)
    settings = Settings(
        instance_path=tmp_path / "instance",
        database_url=empty_database,
        issuer="http://broker.test",
        mode="test",
        audit_anchor_window=None,
        audit_batch_size=3,
    )
    env = make_env(settings, FixedClock())
    try:
        for _ in range(4):
            env.serve(env.person(), "kisalli", "varha-social-work")
        Sequencer(env.broker).run_once()
        env.serve(env.person(), "kisalli")  # appended after the last round: still queued
        before = verify_broker_log(env.broker)
        assert before.pending > 0 and before.size > 8
    finally:
        env.broker.db.dispose()
    finals = _final_entries(engine)
    assert len(finals) == before.size

    command.downgrade(alembic_config(empty_database), "0006")
    with engine.connect() as connection:
        old = connection.execute(text("SELECT idx, entry, split, leaf_hash FROM audit_entries ORDER BY id")).all()
        with pytest.raises(Exception, match="audit_leaves"):
            connection.execute(text("SELECT count(*) FROM audit_leaves")).scalar()
    sequenced = {idx: (bytes(entry), split, bytes(leaf)) for idx, entry, split, leaf in old if idx is not None}
    # Revision 0006's layout: the final bytes in the row, no offset, the leaf hash beside them.
    assert {idx: data for idx, (data, _split, _leaf) in sequenced.items()} == finals
    assert all(split is None and leaf == leaf_hash(data) for data, split, leaf in sequenced.values())
    assert [split is not None for idx, _entry, split, _leaf in old if idx is None] == [True] * before.pending

    upgrade(empty_database)
    assert _final_entries(engine) == finals
    broker = build_broker(settings, clock=FixedClock())
    app = create_app(settings, broker=broker)
    app.testing = True
    env = Env(broker=broker, app=app, client=app.test_client(), clock=FixedClock())  # organisations are there
    try:
        after = verify_broker_log(env.broker)
        assert (after.size, after.root, after.pending) == (before.size, before.root, before.pending)
        env.serve(env.person(), "kela")  # the queueing trigger is there again after the batch operations
        assert verify_broker_log(env.broker).pending > before.pending
        Sequencer(env.broker).run_once()
        assert verify_broker_log(env.broker).pending == 0
    finally:
        env.broker.db.dispose()


def test_revision_0007_stops_on_an_entry_that_no_longer_holds_its_own_index(
    empty_database: str, engine: Engine
) -> None:
    upgrade(empty_database, "0006")
    final = encode_entry(
        index=4, logged_at=datetime(2026, 1, 15, tzinfo=UTC), event="consent:grant", request_id=None,
        partner=None, organisation=None, actor_role=None, actor_commitment=None, person_id="per_x", category=None,
        purpose=None, effect=None, basis=None, policy_version=None,
    )  # fmt: skip
    altered = final.replace(b'"index":4,', b'"index":5,')
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO audit_entries (id, idx, entry, leaf_hash, logged_at, event) "
                "VALUES (5, 4, :entry, :leaf, :at, 'consent:grant')"
            ),
            {"entry": altered, "leaf": leaf_hash(final), "at": datetime(2026, 1, 15, tzinfo=UTC)},
        )
    with pytest.raises(RuntimeError, match="the audit entry at index 4 does not hold its own index"):
        upgrade(empty_database)


def _revision_0007() -> Any:
    path = Path(__file__).resolve().parents[2] / "broker" / "migrations" / "versions" / "0007_audit_leaves.py"
    spec = importlib.util.spec_from_file_location("revision_0007", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    "detail",
    [
        None,
        {"filters": {"index": 7}, "returned": 1},  # an audit:query entry's own "index", with the same number
        {"filters": {"index": 7, "x": "y"}, "returned": 1},  # … followed by another member
        {"note": '"index":7,'},  # the member's text inside a string
        {"list": [{"index": 7, "a": [1, {"index": 7, "b": 2}]}]},
    ],
)
def test_revision_0007_cuts_out_exactly_the_top_level_index_member(detail: dict[str, Any] | None) -> None:
    revision = _revision_0007()
    arguments: dict[str, Any] = dict(
        logged_at=datetime(2026, 1, 15, tzinfo=UTC), event="audit:query", request_id=None, partner=None,
        organisation=None, actor_role=None, actor_commitment=None, person_id=None, category=None, purpose=None,
        effect=None, basis=None, policy_version=None, detail=detail,
    )  # fmt: skip
    final = encode_entry(index=7, **arguments)
    pending, split = revision.pending_form(final, 7)
    assert (pending, split) == encode_pending(**arguments)
    assert place_index(pending, split, 7) == revision.final_form(pending, split, 7) == final
    with pytest.raises(revision.ConversionError):
        revision.pending_form(final, 8)
