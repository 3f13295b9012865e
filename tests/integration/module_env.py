"""A broker built once for a whole test module, on SQLite or on PostgreSQL: for the modules that send hundreds of
requests against one world (tests/integration/test_access_matrix.py, test_api_fuzz.py), where building the world
for each test would cost more than the tests.

Not a conftest (pytest does not load it by itself): a module declares its own module-scoped fixture, parametrised
with `BACKENDS`, and opens the environment with `open_module_env`. The function-scoped `env` fixture of
tests/conftest.py empties the session's PostgreSQL schema after every test, so a module-scoped world lives in a
schema of its own, dropped when the module is done.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
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


@contextmanager
def _database(folder: Path, backend: str) -> Iterator[str]:
    if backend == "sqlite":
        url = f"sqlite:///{folder / 'broker.db'}"
        db = Database(url)
        Base.metadata.create_all(db.engine)
        db.dispose()
        yield url
        return
    assert POSTGRES_URL, "BROKER_TEST_POSTGRES_URL is not set"
    schema = f"module_{secrets.token_hex(4)}"
    admin = Database(POSTGRES_URL)
    with admin.engine.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    separator = "&" if "?" in POSTGRES_URL else "?"
    url = f"{POSTGRES_URL}{separator}options=-csearch_path%3D{schema}"
    scoped = Database(url)
    Base.metadata.create_all(scoped.engine)
    scoped.dispose()
    try:
        yield url
    finally:
        with admin.engine.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@contextmanager
def open_module_env(folder: Path, backend: str, clock: FixedClock | None = None) -> Iterator[Env]:
    """A broker with the reference organisations in `folder` on `backend` ("sqlite" or "postgres"), with the
    settings of the `settings` fixture in tests/conftest.py, less the rate limits."""
    with _database(folder, backend) as url:
        settings = Settings(
            instance_path=folder / "instance",
            database_url=url,
            issuer="http://broker.test",
            mode="test",
            audit_anchor_window=None,
            # The abuse limits (broker/http/limits.py) count requests on the wall clock and would answer 429 to a
            # module that sends hundreds of requests a minute on purpose; they have tests of their own.
            rate_limit_api=None,
            rate_limit_unauthenticated=None,
            rate_limit_oauth=None,
            rate_limit_login=None,
        )
        env = make_env(settings, clock or FixedClock())
        try:
            yield env
        finally:
            env.broker.db.dispose()
