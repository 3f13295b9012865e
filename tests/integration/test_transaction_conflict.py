"""A PostgreSQL transaction rolled back by a serialization failure or a deadlock (SQLSTATE class 40) is answered
503 `transaction_conflict` with Retry-After: nothing was written and the request may be sent again."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from broker.adapters.database import Database, transaction_conflict
from tests.conftest import POSTGRES_URL
from tests.support import Env

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(not POSTGRES_URL, reason="BROKER_TEST_POSTGRES_URL not set"),
]


def _real_deadlock(url: str) -> DBAPIError:
    """Two transactions that each lock a row the other then wants: PostgreSQL detects the deadlock and rolls one
    back with SQLSTATE 40P01 (PostgreSQL manual, "Deadlocks")."""
    db = Database(url)
    try:
        with db.engine.begin() as connection:
            connection.execute(text("CREATE TABLE IF NOT EXISTS deadlock_probe (id int primary key)"))
            connection.execute(text("DELETE FROM deadlock_probe"))
            connection.execute(text("INSERT INTO deadlock_probe VALUES (1), (2)"))
        both_locked = threading.Barrier(2)
        errors: list[BaseException] = []

        def lock(first: int, second: int) -> None:
            try:
                with db.engine.begin() as connection:
                    connection.execute(text("SET LOCAL deadlock_timeout = '50ms'"))
                    connection.execute(text("SELECT id FROM deadlock_probe WHERE id = :id FOR UPDATE"), {"id": first})
                    both_locked.wait(timeout=10)
                    connection.execute(text("SELECT id FROM deadlock_probe WHERE id = :id FOR UPDATE"), {"id": second})
            except DBAPIError as error:
                errors.append(error)

        threads = [threading.Thread(target=lock, args=pair) for pair in ((1, 2), (2, 1))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=20)
        with db.engine.begin() as connection:
            connection.execute(text("DROP TABLE deadlock_probe"))
    finally:
        db.dispose()
    assert len(errors) == 1, errors
    error = errors[0]
    assert isinstance(error, DBAPIError)
    return error


@pytest.fixture
def deadlock(database_url: str) -> DBAPIError:
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLSTATE class 40 is PostgreSQL's")
    return _real_deadlock(database_url)


def test_a_deadlock_is_recognised_as_a_transaction_conflict(deadlock: DBAPIError) -> None:
    assert transaction_conflict(deadlock) == "postgres_40P01"
    try:
        raise RuntimeError("wrapped") from deadlock
    except RuntimeError as wrapped:
        assert transaction_conflict(wrapped) == "postgres_40P01"
    assert transaction_conflict(ValueError("x")) is None


def test_a_request_that_lost_a_deadlock_is_answered_503_with_retry_after(env: Env, deadlock: DBAPIError) -> None:
    def lost_the_race() -> Any:
        raise deadlock

    env.app.add_url_rule("/test/deadlock", "test_deadlock", lost_the_race)
    response = env.client.get("/test/deadlock")
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"
    assert response.mimetype == "application/problem+json"
    assert response.get_json()["code"] == "transaction_conflict"
