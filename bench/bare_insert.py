"""The reference endpoint for `make bench`: a bare Flask app whose one endpoint does a single durable SQLite
insert — WAL, `synchronous=FULL`, `BEGIN IMMEDIATE`, writers serialised by a file lock beside the database as
the broker does (broker/adapters/database.py) — and nothing else: no auth, no ORM, no policy, no crypto.

Served by bench/http_disclosure.py under the same gunicorn settings as the broker:

    BENCH_BARE_DB=bare.db gunicorn --workers 2 --worker-class sync 'bench.bare_insert:create_app()'

Not part of the broker.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import sqlite3
import threading
from datetime import UTC, datetime

from flask import Flask, Response, request

SCHEMA = "CREATE TABLE IF NOT EXISTS events (id TEXT PRIMARY KEY, created_at TEXT NOT NULL, body TEXT NOT NULL)"


def connect(path: str) -> sqlite3.Connection:
    connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=FULL")
    connection.execute("PRAGMA busy_timeout=10000")
    return connection


def create_app(path: str | None = None) -> Flask:
    path = path or os.environ["BENCH_BARE_DB"]
    with connect(path) as setup:
        setup.execute(SCHEMA)
    lock_path = path + ".writelock"
    local = threading.local()
    app = Flask(__name__)

    def connection() -> sqlite3.Connection:
        # Opened lazily in each worker after the fork; the sync worker serves one request at a time.
        conn: sqlite3.Connection | None = getattr(local, "conn", None)
        if conn is None:
            conn = local.conn = connect(path)
        return conn

    @app.post("/insert")
    def insert() -> Response:
        row_id = secrets.token_hex(16)
        body = json.dumps(request.get_json(silent=True) or {}, separators=(",", ":"))
        conn = connection()
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
        return Response(json.dumps({"id": row_id}), mimetype="application/json")

    @app.get("/healthz")
    def healthz() -> Response:
        return Response('{"status":"ok"}', mimetype="application/json")

    return app
