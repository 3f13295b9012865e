"""The reference endpoint of the HTTP benchmarks: a bare Flask app whose one endpoint makes a single durable
insert and nothing else — no auth, no ORM, no policy, no crypto. It is the physical floor of a disclosure, which
is at least one durable commit (DESIGN.md invariant 2: the audit entry commits with the disclosure).

Two databases, chosen by the environment:

- `BENCH_BARE_DB=path`: SQLite — WAL, `synchronous=FULL`, `BEGIN IMMEDIATE`, writers serialised by a file lock
  beside the database as the broker does (broker/adapters/database.py);
- `BENCH_BARE_POSTGRES=url`: PostgreSQL — one INSERT committed on its own (autocommit) with
  `synchronous_commit` on, PostgreSQL's default, so the commit waits for its WAL flush as the broker's do. The
  table lives in a schema of its own (`bench_bare`) of the benchmark's scratch database. The app refuses to start
  when the server's `synchronous_commit` is not `on`: the reference would then not be durable.

Served by the benchmarks under the same gunicorn settings as the broker:

    BENCH_BARE_DB=bare.db gunicorn --workers 2 --worker-class sync 'bench.bare_insert:create_app()'
    BENCH_BARE_POSTGRES=postgresql://… gunicorn --workers 2 --worker-class sync 'bench.bare_insert:create_app()'

Not part of the broker.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import sqlite3
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from flask import Flask, Response, request

SQLITE_SCHEMA = "CREATE TABLE IF NOT EXISTS events (id TEXT PRIMARY KEY, created_at TEXT NOT NULL, body TEXT NOT NULL)"
POSTGRES_SCHEMA = (
    "CREATE SCHEMA IF NOT EXISTS bench_bare",
    "CREATE TABLE IF NOT EXISTS bench_bare.events "
    "(id text PRIMARY KEY, created_at timestamptz NOT NULL, body text NOT NULL)",
)


def connect(path: str) -> sqlite3.Connection:
    connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=FULL")
    connection.execute("PRAGMA busy_timeout=10000")
    return connection


def libpq_url(url: str) -> str:
    """A SQLAlchemy URL (`postgresql+psycopg://…`) as libpq takes it (`postgresql://…`)."""
    scheme, sep, rest = url.partition("://")
    if not sep or not scheme.startswith(("postgresql", "postgres")):
        raise ValueError(f"not a PostgreSQL URL: {scheme}://…")
    return f"postgresql://{rest}"


def sqlite_insert(path: str) -> Callable[[str, str], None]:
    with connect(path) as setup:
        setup.execute(SQLITE_SCHEMA)
    lock_path = path + ".writelock"
    local = threading.local()

    def insert(row_id: str, body: str) -> None:
        # Opened lazily in each worker after the fork; the sync worker serves one request at a time.
        conn: sqlite3.Connection | None = getattr(local, "conn", None)
        if conn is None:
            conn = local.conn = connect(path)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute(
                    "INSERT INTO events (id, created_at, body) VALUES (?, ?, ?)",
                    (row_id, datetime.now(UTC).isoformat(), body),
                )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        finally:
            os.close(fd)

    return insert


def prepare_postgres(url: str) -> str:
    """Create the reference's table (once, before the workers start: two workers creating the schema at once could
    collide) and return the server's `synchronous_commit`, which must be `on`."""
    import psycopg

    with psycopg.connect(libpq_url(url), autocommit=True) as setup:
        for statement in POSTGRES_SCHEMA:
            setup.execute(statement)
        row = setup.execute("SHOW synchronous_commit").fetchone()
    return str(row[0]) if row else "unknown"


def postgres_insert(url: str) -> Callable[[str, str], None]:
    import psycopg

    conninfo = libpq_url(url)
    with psycopg.connect(conninfo, autocommit=True) as setup:
        row = setup.execute("SHOW synchronous_commit").fetchone()
        if row is None or row[0] != "on":
            raise RuntimeError(f"synchronous_commit is {row[0] if row else None!r}: the reference must be durable")
    local = threading.local()

    def insert(row_id: str, body: str) -> None:
        conn: Any = getattr(local, "conn", None)
        if conn is None or conn.closed:
            # One connection per worker, opened after the fork, as the broker's pool keeps one per worker.
            conn = local.conn = psycopg.connect(conninfo, autocommit=True)
        # Autocommit: the INSERT is its own transaction, and its commit waits for the WAL flush.
        conn.execute(
            "INSERT INTO bench_bare.events (id, created_at, body) VALUES (%s, %s, %s)",
            (row_id, datetime.now(UTC), body),
        )

    return insert


def create_app(path: str | None = None, postgres_url: str | None = None) -> Flask:
    postgres_url = postgres_url or os.environ.get("BENCH_BARE_POSTGRES")
    path = path or os.environ.get("BENCH_BARE_DB")
    if bool(postgres_url) == bool(path):
        raise RuntimeError("set exactly one of BENCH_BARE_DB (SQLite file) and BENCH_BARE_POSTGRES (URL)")
    insert = postgres_insert(postgres_url) if postgres_url else sqlite_insert(str(path))
    app = Flask(__name__)

    @app.post("/insert")
    def insert_view() -> Response:
        row_id = secrets.token_hex(16)
        body = json.dumps(request.get_json(silent=True) or {}, separators=(",", ":"))
        insert(row_id, body)
        return Response(json.dumps({"id": row_id}), mimetype="application/json")

    @app.get("/healthz")
    def healthz() -> Response:
        return Response('{"status":"ok"}', mimetype="application/json")

    return app
