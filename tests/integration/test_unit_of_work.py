"""The units of work (broker/adapters/uow.py), the ORM one and the Core one the disclosure path uses, keep the same
promises on both databases: what is not committed is rolled back, on SQLite the write lock is held exactly from the
transaction's start to its end (and is free after a failure too), and a request's first write is done first and
counted as done only once committed.

The Core one runs on the pool's driver connection (`PooledConnection`, broker/adapters/database.py), as does the
single read of every request (`Database.one_prepared`), so what SQLAlchemy's `Connection` did for them is checked
here too: the transaction ended before the connection goes back to the pool (on SQLite after the lock is released),
driver errors raised as SQLAlchemy's, a broken connection invalidated by its error and replaced, PostgreSQL's
autocommit mode and isolation level left as they were."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy
from sqlalchemy import Column, Integer, MetaData, String, Table, event, insert, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError, ResourceClosedError
from sqlalchemy.orm import Session

from broker.adapters.database import Database, PooledConnection, Prepared, Timeouts, unavailability
from broker.adapters.uow import CoreUnitOfWork, UnitOfWork, first_write

_META = MetaData()
_PROBE = Table("uow_probe", _META, Column("id", Integer, primary_key=True), Column("name", String(40)))
_INSERT = Prepared(insert(_PROBE))
_ALL = Prepared(select(_PROBE.c.name).order_by(_PROBE.c.id))
UNITS = [UnitOfWork, CoreUnitOfWork]


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    _META.create_all(database.engine)
    try:
        yield database
    finally:
        _META.drop_all(database.engine)
        database.dispose()


def names(db: Database) -> list[str]:
    with db.engine.connect() as connection:
        return [row.name for row in _ALL.rows(connection)]


def lock_is_free(db: Database) -> bool:
    """Whether another thread gets the SQLite write lock within a moment (always true on PostgreSQL)."""
    got = threading.Event()

    def take() -> None:
        with db.write_lock.hold():
            got.set()

    thread = threading.Thread(target=take, daemon=True)
    thread.start()
    return got.wait(2)


@pytest.mark.parametrize("unit", UNITS)
def test_committed_work_stays_and_the_rest_is_rolled_back(db: Database, unit: type[UnitOfWork]) -> None:
    with unit(db) as uow:
        _INSERT.execute(uow.session, {"name": "kept"})
        uow.commit()
    with unit(db) as uow:
        _INSERT.execute(uow.session, {"name": "not committed"})
    with pytest.raises(RuntimeError), unit(db) as uow:
        _INSERT.execute(uow.session, {"name": "failed"})
        raise RuntimeError("the use case fails")
    assert names(db) == ["kept"]
    assert lock_is_free(db)


@pytest.mark.parametrize("unit", UNITS)
def test_on_sqlite_a_write_holds_the_lock_for_its_whole_transaction(db: Database, unit: type[UnitOfWork]) -> None:
    if not db.sqlite:
        pytest.skip("PostgreSQL writers take row locks, not a database lock")
    with unit(db) as uow:
        assert not lock_is_free(db)
        uow.commit()
    assert lock_is_free(db)
    with unit(db, write=False) as uow:
        assert lock_is_free(db)  # a read takes no lock
        assert _ALL.rows(uow.session) == []


@pytest.mark.parametrize("unit", UNITS)
def test_the_first_write_is_done_first_and_is_done_only_once_committed(db: Database, unit: type[UnitOfWork]) -> None:
    def first(session: Session) -> None:
        _INSERT.execute(session, {"name": "first"})

    with first_write(first) as pending:
        with unit(db) as uow:  # rolled back: the first write with it
            _INSERT.execute(uow.session, {"name": "lost"})
        assert not pending.done
        with unit(db, write=False) as uow:  # a read does not do it
            pass
        assert not pending.done
        with unit(db) as uow:
            _INSERT.execute(uow.session, {"name": "second"})
            uow.commit()
        assert pending.done
        with unit(db) as uow:  # done: not again
            uow.commit()
    assert names(db) == ["first", "second"]


@pytest.mark.parametrize("unit", UNITS)
def test_a_failing_first_write_leaves_no_transaction_and_no_lock(db: Database, unit: type[UnitOfWork]) -> None:
    def failing(session: Session) -> None:
        _INSERT.execute(session, {"name": "first"})
        raise ValueError("replayed")

    with first_write(failing) as pending, pytest.raises(ValueError, match="replayed"), unit(db):
        pytest.fail("the unit of work must not be entered")
    assert not pending.done
    assert names(db) == []
    assert lock_is_free(db)


# -- the connection: how it is begun, ended and given back ----------------------------------------------------------


def in_transaction(dbapi_connection: Any) -> bool:
    """Whether a driver connection (sqlite3 or psycopg) is inside a transaction."""
    if isinstance(dbapi_connection, sqlite3.Connection):
        return dbapi_connection.in_transaction
    return bool(dbapi_connection.info.transaction_status != psycopg.pq.TransactionStatus.IDLE)


def driver_of(uow: UnitOfWork) -> Any:
    """The driver connection a unit of work runs on (before its commit)."""
    session: Any = uow.session
    if isinstance(session, PooledConnection):
        return session.driver
    return session.connection().connection.driver_connection


class Watch:
    """What units of work do with their connections, seen from outside: on SQLite every statement the driver runs,
    each with whether the write lock was held as it ran; and at every return of a connection to the pool — before
    the pool's own rollback — whether its driver was still in a transaction, whether it was in autocommit mode
    (psycopg) and whether the lock was held."""

    def __init__(self, db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
        self.held = False
        self.statements: list[tuple[str, bool]] = []
        self.returns: list[tuple[bool, bool, bool]] = []
        hold = db.write_lock.hold

        @contextlib.contextmanager
        def watched() -> Iterator[None]:
            with hold():
                self.held = True
                try:
                    yield
                finally:
                    self.held = False

        monkeypatch.setattr(db.write_lock, "hold", watched)
        event.listen(db.engine, "checkout", self._on_checkout)
        event.listen(db.engine, "reset", self._on_reset)

    def _on_checkout(self, dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        if isinstance(dbapi_connection, sqlite3.Connection):
            dbapi_connection.set_trace_callback(self._on_statement)

    def _on_statement(self, sql: str) -> None:
        self.statements.append((" ".join(sql.split()[:2]).upper(), self.held))

    def _on_reset(self, dbapi_connection: Any, _record: Any, _state: Any) -> None:
        autocommit = not isinstance(dbapi_connection, sqlite3.Connection) and bool(dbapi_connection.autocommit)
        self.returns.append((in_transaction(dbapi_connection), autocommit, self.held))

    def clear(self) -> None:
        self.statements.clear()
        self.returns.clear()


OUTCOMES = ["commit", "no commit", "exception"]


def run(db: Database, unit: type[UnitOfWork], outcome: str, *, write: bool = True) -> None:
    """A unit of work that writes (or, with write=False, reads) and then commits, leaves without committing, or
    fails."""
    with contextlib.suppress(RuntimeError), unit(db, write=write) as uow:
        if write:
            _INSERT.execute(uow.session, {"name": "x"})
        else:
            _ALL.rows(uow.session)
        if outcome == "commit":
            uow.commit()
        elif outcome == "exception":
            raise RuntimeError("the use case fails")


@pytest.mark.parametrize("outcome", OUTCOMES)
@pytest.mark.parametrize("write", [True, False], ids=["write", "read"])
@pytest.mark.parametrize("unit", UNITS)
def test_the_connection_goes_back_to_the_pool_with_its_transaction_ended(
    db: Database, unit: type[UnitOfWork], write: bool, outcome: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The unit of work ends its transaction itself — the pool's rollback at the return is only a safety net — and
    on SQLite gives the connection back only after the write lock is released (the ORM unit of work closes its
    session under the lock when it did not commit, by design)."""
    watch = Watch(db, monkeypatch)
    run(db, unit, outcome, write=write)
    assert len(watch.returns) == 1
    still_in_transaction, autocommit, held = watch.returns[0]
    assert not still_in_transaction
    assert not autocommit
    if unit is CoreUnitOfWork or outcome == "commit":
        assert not held
    assert names(db) == (["x"] if write and outcome == "commit" else [])


@pytest.mark.parametrize("outcome", OUTCOMES)
@pytest.mark.parametrize("unit", UNITS)
def test_on_sqlite_a_write_runs_from_begin_immediate_to_its_end_with_the_lock_held(
    db: Database, unit: type[UnitOfWork], outcome: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not db.sqlite:
        pytest.skip("SQLite's write lock")
    watch = Watch(db, monkeypatch)
    run(db, unit, outcome)
    end = "COMMIT" if outcome == "commit" else "ROLLBACK"
    assert watch.statements == [("BEGIN IMMEDIATE", True), ("INSERT INTO", True), (end, True)]
    watch.clear()
    run(db, unit, outcome, write=False)
    assert watch.statements[:2] == [("BEGIN DEFERRED", False), ("SELECT UOW_PROBE.NAME", False)]
    assert all(not held for _, held in watch.statements)  # a read takes no lock


@pytest.mark.parametrize("unit", UNITS)
def test_an_integrity_error_surfaces_as_sqlalchemys_and_the_connection_is_reusable_after(
    database_url: str, unit: type[UnitOfWork]
) -> None:
    """The driver's error is raised as SQLAlchemy's (callers catch IntegrityError: the DPoP proof's replay), the
    transaction is rolled back — on PostgreSQL an aborted one — and the same connection serves the next unit of work
    (a pool of one)."""
    db = Database(database_url, pool_size=1, max_overflow=0)
    _META.create_all(db.engine)
    try:
        with pytest.raises(IntegrityError), unit(db) as uow:
            _INSERT.execute(uow.session, {"id": 1, "name": "one"})
            _INSERT.execute(uow.session, {"id": 1, "name": "again"})
        assert lock_is_free(db)
        with unit(db) as uow:
            _INSERT.execute(uow.session, {"id": 1, "name": "kept"})
            uow.commit()

        def replayed(session: Session) -> None:
            _INSERT.execute(session, {"id": 1, "name": "replayed"})

        with first_write(replayed) as pending:
            with pytest.raises(IntegrityError), unit(db):
                pytest.fail("the unit of work must not be entered")
            assert not pending.done
        assert lock_is_free(db)
        assert names(db) == ["kept"]
    finally:
        _META.drop_all(db.engine)
        db.dispose()


def break_connection(db: Database, database_url: str, driver: Any) -> None:
    """Break a connection in use, as a server restart or a lost network does (PostgreSQL: its server process is
    terminated; SQLite: the driver's connection is closed under the unit of work)."""
    if db.sqlite:
        driver.close()
    else:
        terminate(database_url, driver.execute("SELECT pg_backend_pid()").fetchone()[0])


def terminate(database_url: str, pid: int) -> None:
    """End a PostgreSQL server process, from a connection of its own."""
    other = sqlalchemy.create_engine(database_url)
    try:
        with other.connect() as admin:
            # The second argument waits until the process has gone (PostgreSQL 14).
            assert admin.execute(text("SELECT pg_terminate_backend(:pid, 5000)"), {"pid": pid}).scalar()
    finally:
        other.dispose()


@pytest.mark.parametrize("where", ["statement", "commit"])
@pytest.mark.parametrize("unit", UNITS)
def test_a_connection_broken_in_a_unit_of_work_is_an_outage_and_is_not_handed_out_again(
    database_url: str, unit: type[UnitOfWork], where: str
) -> None:
    """A connection that breaks mid-transaction fails the statement (or the commit) as `connection_lost` and is
    invalidated by that error — not left for the pool's rollback at its return to fail on —, the unit of work ends
    without a second error and releases the lock, the request's first write is not counted as done, and the pool —
    of one connection — replaces the broken connection for the next unit of work."""
    db = Database(database_url, pool_size=1, max_overflow=0)
    _META.create_all(db.engine)
    invalidated_by: list[BaseException | None] = []
    event.listen(db.engine, "invalidate", lambda _dbapi, _record, error: invalidated_by.append(error))

    def first(session: Session) -> None:
        _INSERT.execute(session, {"name": "first"})

    try:
        with first_write(first) as pending:
            with pytest.raises(DBAPIError) as lost, unit(db) as uow:
                broken = driver_of(uow)
                _INSERT.execute(uow.session, {"name": "lost"})
                break_connection(db, database_url, broken)
                if where == "statement":
                    _INSERT.execute(uow.session, {"name": "after"})
                uow.commit()
            assert lost.value.connection_invalidated
            assert invalidated_by == [lost.value.orig]
            assert unavailability(lost.value) == "connection_lost"
            assert not pending.done
            assert lock_is_free(db)
            with unit(db) as uow:
                assert driver_of(uow) is not broken
                _INSERT.execute(uow.session, {"name": "second"})
                uow.commit()
            assert pending.done
        assert names(db) == ["first", "second"]
    finally:
        _META.drop_all(db.engine)
        db.dispose()


def test_a_core_unit_of_work_refuses_statements_after_its_commit_and_after_its_end(db: Database) -> None:
    """One transaction per unit of work: on SQLite a statement after the commit would run outside any transaction
    (and commit by itself); after the unit of work the connection may be another request's."""
    with CoreUnitOfWork(db) as uow:
        _INSERT.execute(uow.session, {"name": "committed"})
        uow.commit()
        with pytest.raises(ResourceClosedError):
            _INSERT.execute(uow.session, {"name": "after the commit"})
    with CoreUnitOfWork(db) as uow:
        pass
    with pytest.raises(ResourceClosedError):
        _ALL.rows(uow.session)
    assert names(db) == ["committed"]
    assert lock_is_free(db)


def test_a_database_that_cannot_be_opened_fails_the_checkout_as_an_outage(database_url: str, tmp_path: Path) -> None:
    """A connection the pool cannot open is SQLAlchemy's error, as from `Engine.connect()`, which the HTTP layer
    answers 503 (`unavailability`), for the units of work on the driver's connection and the single read alike."""
    if make_url(database_url).get_backend_name() == "sqlite":
        unreachable, expected = f"sqlite:///{tmp_path / 'gone' / 'broker.db'}", "sqlite_CANTOPEN"  # no such folder
    else:
        unreachable = make_url(database_url).set(port=1).render_as_string(hide_password=False)  # nothing listens there
        expected = "connection_failed"
    db = Database(unreachable, timeouts=Timeouts(connect=2))
    try:
        with pytest.raises(OperationalError) as failed, CoreUnitOfWork(db):
            pytest.fail("the unit of work must not be entered")
        assert unavailability(failed.value) == expected
        with pytest.raises(OperationalError) as failed, db.one_prepared():
            pytest.fail("no connection to read on")
        assert unavailability(failed.value) == expected
    finally:
        db.dispose()


# -- the single read of a request (the access token's) -------------------------------------------------------------


@pytest.fixture
def pool_of_one(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Database, Watch]]:
    """A database whose pool holds one connection, so that every unit of work reuses it, and its watch."""
    db = Database(database_url, pool_size=1, max_overflow=0)
    _META.create_all(db.engine)
    try:
        yield db, Watch(db, monkeypatch)
    finally:
        _META.drop_all(db.engine)
        db.dispose()


def test_a_single_prepared_read_runs_outside_a_transaction_and_leaves_the_connection_as_it_found_it(
    pool_of_one: tuple[Database, Watch],
) -> None:
    """`Database.one_prepared`: the statement is a transaction of its own (PostgreSQL: psycopg's autocommit, no
    BEGIN and ROLLBACK round trips), and the connection goes back out of autocommit — the next unit of work on it
    (a pool of one) still rolls back what it does not commit."""
    db, watch = pool_of_one
    with CoreUnitOfWork(db) as uow:
        _INSERT.execute(uow.session, {"name": "kept"})
        uow.commit()
    with db.one_prepared() as connection:
        assert [row.name for row in _ALL.rows(connection)] == ["kept"]
        assert not in_transaction(connection.driver)
    with pytest.raises(ResourceClosedError):
        _ALL.rows(connection)
    with CoreUnitOfWork(db) as uow:
        _INSERT.execute(uow.session, {"name": "not committed"})
        assert in_transaction(driver_of(uow))
        if not db.sqlite:
            # As through SQLAlchemy: the server's default level, which the broker's row locks are made for.
            assert driver_of(uow).execute("SHOW transaction_isolation").fetchone()[0] == "read committed"
    assert watch.returns == [(False, False, False)] * 3  # in a transaction, autocommit, the lock held
    assert names(db) == ["kept"]


def test_an_autocommit_unit_of_work_runs_each_statement_as_its_own_transaction_and_writes_nothing_else(
    pool_of_one: tuple[Database, Watch],
) -> None:
    """`CoreUnitOfWork(autocommit=True)`, for a use case whose reads are each one statement and that writes, if at
    all, in one statement (the disclosure on a snapshot): no BEGIN, no transaction left open between statements, a
    write committed by its statement alone, the request's first write not done (the statement folds it in), no
    SQLite write lock taken, and the connection back in the pool as it was found. A write unit of work cannot be
    one."""
    db, watch = pool_of_one
    with pytest.raises(ValueError, match="write=False"):
        CoreUnitOfWork(db, write=True, autocommit=True)
    with first_write(lambda session: _INSERT.execute(session, {"name": "first"})) as pending:
        with CoreUnitOfWork(db, write=False, autocommit=True) as uow:
            assert _ALL.rows(uow.session) == []
            assert not in_transaction(driver_of(uow))
            _INSERT.execute(uow.session, {"name": "one statement"})
            assert not in_transaction(driver_of(uow))
            assert lock_is_free(db)
        assert not pending.done
    assert watch.returns == [(False, False, False)]  # returned out of any transaction and of autocommit
    assert names(db) == ["one statement"]
    watch.clear()
    with CoreUnitOfWork(db) as uow:  # the same pooled connection, transactions again
        _INSERT.execute(uow.session, {"name": "not committed"})
        assert in_transaction(driver_of(uow))
    assert watch.returns == [(False, False, False)]
    assert names(db) == ["one statement"]


def test_on_postgresql_a_connection_broken_while_idle_is_replaced_at_checkout_without_an_error(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pool's idle ping (database.py `_ping_idle_connections`) guards the driver's connection as it guarded
    SQLAlchemy's `Connection`: after a server restart at night the first unit of work and the first token read of
    the morning get a new connection, not an error."""
    if make_url(database_url).get_backend_name() == "sqlite":
        pytest.skip("a PostgreSQL server's restart")
    from broker.adapters import database

    db = Database(database_url, pool_size=1, max_overflow=0)
    _META.create_all(db.engine)
    try:
        for use in ("unit of work", "single read"):
            with db.one_prepared() as connection:
                broken, pid = connection.driver, connection.driver.execute("SELECT pg_backend_pid()").fetchone()[0]
            terminate(database_url, pid)  # the connection idle in the pool
            monkeypatch.setattr(database, "PING_AFTER_IDLE_SECONDS", 0.0)  # as if it had lain idle for a while
            if use == "unit of work":
                with CoreUnitOfWork(db) as uow:
                    assert driver_of(uow) is not broken
                    _INSERT.execute(uow.session, {"name": "after the restart"})
                    uow.commit()
            else:
                with db.one_prepared() as connection:
                    assert connection.driver is not broken
                    assert [row.name for row in _ALL.rows(connection)] == ["after the restart"]
            monkeypatch.undo()
    finally:
        _META.drop_all(db.engine)
        db.dispose()
