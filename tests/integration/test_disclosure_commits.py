"""A disclosure makes one durable commit, counted at the driver — whichever layer asks for it: the ORM session,
a Core connection or the disclosure path's units of work on the pool's driver connection (broker/adapters/uow.py,
`CoreUnitOfWork`), which SQLAlchemy's own `commit` event does not see. The DPoP proof's `jti`, the audit entry
and the disclosure row are written by one transaction (`first_write`): on SQLite one turn of the write lock and one
fsync per request."""

from __future__ import annotations

import contextlib
import re
import sqlite3
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from sqlalchemy import Engine, event, func, select, text

from broker.adapters.orm import DisclosureRow, DpopProofJtiRow
from tests.integration.test_api_disclosures import ask, consent_to_health, deposit
from tests.support import Env

_WRITES = re.compile(r"\b(INSERT|UPDATE|DELETE)\b", re.IGNORECASE)


@contextlib.contextmanager
def driver_commits(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[object]]:
    """Every commit of a transaction on `engine`'s driver connections inside the block, one entry each: on SQLite
    every COMMIT statement the driver runs (its trace callback, set at each checkout); on PostgreSQL every psycopg
    `commit()` of a connection inside a transaction (one that is not does nothing), and every writing statement run
    in autocommit mode."""
    commits: list[object] = []
    counting = True
    if engine.dialect.name == "sqlite":

        def on_checkout(dbapi_connection: sqlite3.Connection, _record: Any, _proxy: Any) -> None:
            def traced(sql: str) -> None:
                if counting and sql.strip().upper() == "COMMIT":
                    commits.append(dbapi_connection)

            dbapi_connection.set_trace_callback(traced)

        event.listen(engine, "checkout", on_checkout)
        try:
            yield commits
        finally:
            counting = False
            event.remove(engine, "checkout", on_checkout)
        return
    commit, execute = psycopg.Connection.commit, psycopg.Cursor.execute

    def counted(connection: psycopg.Connection[Any]) -> None:
        if counting and connection.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            commits.append(connection)
        commit(connection)

    def executed(cursor: psycopg.Cursor[Any], query: Any, *args: Any, **kwargs: Any) -> Any:
        # A writing statement in autocommit mode is a transaction of its own, committed by the server.
        if counting and cursor.connection.autocommit and _WRITES.search(str(query)):
            commits.append(cursor.connection)
        return execute(cursor, query, *args, **kwargs)

    monkeypatch.setattr(psycopg.Connection, "commit", counted)
    monkeypatch.setattr(psycopg.Cursor, "execute", executed)
    try:
        yield commits
    finally:
        counting = False
        monkeypatch.undo()


def count(env: Env, row: type) -> int:
    with env.broker.uow(write=False) as uow:
        return int(uow.session.scalar(select(func.count()).select_from(row)) or 0)


def test_a_disclosure_commits_once_with_its_proof_its_audit_entry_and_its_record(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Mikko's case (F7): a person served by both, his consent to the health centre and a work assessment.
    person_id = env.person()
    env.serve(person_id, "kisalli", "varha-health")
    consent_to_health(env, person_id)
    deposit(env, "kisalli", person_id, "work_assessment")
    env.token("varha-health")
    proofs, disclosures = count(env, DpopProofJtiRow), count(env, DisclosureRow)
    with driver_commits(env.broker.db.engine, monkeypatch) as commits:
        response = ask(env, "varha-health", person_id, "work_assessment", "work_capacity_assessment")
    assert response.status_code == 200, response.get_json()
    assert len(commits) == 1
    assert (count(env, DpopProofJtiRow), count(env, DisclosureRow)) == (proofs + 1, disclosures + 1)
    if env.broker.db.engine.dialect.name == "postgresql":
        # Written by one transaction: the rows' xmin, the id of the transaction that inserted them, is one.
        with env.broker.db.engine.connect() as connection:
            writers = {
                connection.execute(text(f"SELECT xmin::text FROM {table} ORDER BY {order} DESC LIMIT 1")).scalar()
                for table, order in (
                    ("dpop_proof_jtis", "expires_at"),
                    ("audit_entries", "id"),
                    ("audit_actors", "entry_id"),
                    ("disclosures", "audit_entry_id"),
                )
            }
        assert len(writers) == 1, writers
