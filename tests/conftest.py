"""Fixtures shared by the whole suite.

Integration tests run against SQLite always and against PostgreSQL when BROKER_TEST_POSTGRES_URL is set
(`.ci/run` sets it). On PostgreSQL each test session gets its own schema, and tables are emptied between tests.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from broker.adapters.database import Database
from broker.adapters.orm import Base
from broker.config import Settings
from broker.domain.clock import FixedClock
from tests.support import Env, make_env

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


@pytest.fixture(scope="session")
def postgres_schema() -> Iterator[str | None]:
    """A schema of its own for this test session, dropped at the end."""
    if not POSTGRES_URL:
        yield None
        return
    schema = f"test_{secrets.token_hex(4)}"
    db = Database(POSTGRES_URL)
    with db.engine.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    scoped = Database(_with_schema(POSTGRES_URL, schema))
    Base.metadata.create_all(scoped.engine)
    scoped.dispose()
    yield schema
    with db.engine.begin() as connection:
        connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    db.dispose()


def _with_schema(url: str, schema: str) -> str:
    separator = "&" if "?" in url else "?"
    return f"{url}{separator}options=-csearch_path%3D{schema}"


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path, postgres_schema: str | None) -> Iterator[str]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'broker.db'}"
        db = Database(url)
        Base.metadata.create_all(db.engine)
        db.dispose()
        yield url
        return
    assert POSTGRES_URL and postgres_schema
    url = _with_schema(POSTGRES_URL, postgres_schema)
    yield url
    db = Database(url)
    with db.engine.begin() as connection:
        tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
        connection.execute(text(f"TRUNCATE {tables} CASCADE"))
    db.dispose()


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock()


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return Settings(
        instance_path=tmp_path / "instance",
        database_url=database_url,
        issuer="http://broker.test",
        mode="test",
        # The fail-closed anchoring gate needs a running sequencer; tests of the gate turn it on.
        audit_anchor_window=None,
    )


@pytest.fixture
def env(settings: Settings, clock: FixedClock) -> Iterator[Env]:
    """A broker with the reference organisations and one partner system each, and a test client."""
    environment = make_env(settings, clock)
    yield environment
    environment.broker.db.dispose()
