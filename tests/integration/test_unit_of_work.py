"""The units of work (broker/adapters/uow.py), the ORM one and the Core one the disclosure path uses, keep the same
promises on both databases: what is not committed is rolled back, on SQLite the write lock is held exactly from the
transaction's start to its end (and is free after a failure too), and a request's first write is done first and
counted as done only once committed."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, insert, select
from sqlalchemy.orm import Session

from broker.adapters.database import Database, Prepared
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
