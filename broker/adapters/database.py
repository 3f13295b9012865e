"""Engines and transactions for SQLite (the embedded default) and PostgreSQL (production).

SQLite: WAL with `synchronous=FULL` (durable per commit). Write transactions are serialised by one lock — a
file lock beside the database, held across processes — and start with `BEGIN IMMEDIATE`, so that concurrent
writers queue on the lock instead of sleeping in SQLite's busy handler (see PITFALLS.md: p99 near a second
otherwise).

PostgreSQL: READ COMMITTED; the services lock the rows a decision depends on (`FOR SHARE` / `FOR UPDATE`).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
from collections import namedtuple
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql import Executable, Insert, Select


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


def make_engine(url: str, **kwargs: Any) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(url, **kwargs)
        _configure_sqlite(engine)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    kwargs.setdefault("pool_size", 10)
    return create_engine(url, **kwargs)


_BEGIN = {mode: f"BEGIN {mode}" for mode in ("DEFERRED", "IMMEDIATE", "EXCLUSIVE")}


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the sqlite3 module, decide when transactions begin (SQLAlchemy's documented
        # pysqlite recipe), so that BEGIN IMMEDIATE can be issued for write transactions.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=10000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        mode = connection.get_execution_options().get("sqlite_begin", "DEFERRED")
        # Straight to the driver: a statement with no parameters and no result needs none of the execution
        # machinery, and this runs at the start of every transaction.
        connection.connection.driver_connection.execute(_BEGIN[mode])


@dataclass(frozen=True, slots=True)
class _Compiled:
    sql: str
    positional: tuple[str, ...] | None  # bind names in placeholder order (qmark), None for named paramstyles
    defaults: dict[str, Any]  # values bound in the statement itself (e.g. `id = 1`)
    binds: dict[str, Callable[[Any], Any]]  # bind name → the column type's bind processor for this dialect
    results: tuple[Callable[[Any], Any] | None, ...]  # one result processor (or None) per selected column
    row: Any  # namedtuple type for result rows


class Prepared:
    """A Core statement for the hot path, compiled once per dialect by SQLAlchemy and run on the driver's
    cursor inside the caller's transaction.

    SQLAlchemy's execution machinery (execution context, events, result objects) costs 20–40 µs a statement;
    on the disclosure path, where every microsecond spent while the SQLite write lock is held is taken from
    throughput, that was a third of the transaction (docs/benchmarks.md). The SQL text, the placeholder order
    and every value conversion still come from SQLAlchemy — the compiler and the column types' own bind and
    result processors for the dialect — so a value is stored and read exactly as through `Session.execute`.
    Driver errors are re-raised as SQLAlchemy's exceptions (`IntegrityError`, …).

    For statements with a fixed shape: no expanding `IN` parameters; an INSERT is compiled for the columns of
    the parameters it is given."""

    __slots__ = ("_cache", "statement")

    def __init__(self, statement: Executable) -> None:
        self.statement = statement
        self._cache: dict[tuple[str, frozenset[str] | None], _Compiled] = {}

    def execute(self, session: Session | Connection, params: Mapping[str, Any] | None = None) -> Any:
        """Run the statement in `session`'s transaction; return the driver cursor (for `rowcount`)."""
        return self._run(session, params or {})[0]

    def execute_many(self, session: Session | Connection, params: Sequence[Mapping[str, Any]]) -> None:
        """Run the statement once per parameter set with the driver's `executemany`: the sequencer's batch of
        UPDATEs and INSERTs, written while the SQLite write lock is held. Every set must have the same keys."""
        if not params:
            return
        connection = session.connection() if isinstance(session, Session) else session
        dialect = connection.dialect
        keys = frozenset(params[0]) if isinstance(self.statement, Insert) else None
        compiled = self._cache.get((dialect.name, keys)) or self._compile(dialect, keys)
        rows = []
        for one in params:
            values = {**compiled.defaults, **one}
            for name, process in compiled.binds.items():
                values[name] = process(values[name])
            rows.append(values if compiled.positional is None else tuple(values[n] for n in compiled.positional))
        driver = connection.connection.driver_connection
        assert driver is not None
        cursor = driver.cursor()
        try:
            cursor.executemany(compiled.sql, rows)
        except dialect.loaded_dbapi.Error as error:
            raise DBAPIError.instance(compiled.sql, rows[0], error, dialect.loaded_dbapi.Error) from error
        finally:
            cursor.close()

    def rows(self, session: Session | Connection, params: Mapping[str, Any] | None = None) -> list[Any]:
        """Run a SELECT in `session`'s transaction; every row as a named tuple of converted values."""
        cursor, compiled = self._run(session, params or {})
        processors = compiled.results
        make = compiled.row._make
        return [
            make([value if proc is None else proc(value) for proc, value in zip(processors, raw, strict=True)])
            for raw in cursor.fetchall()
        ]

    def first(self, session: Session | Connection, params: Mapping[str, Any] | None = None) -> Any | None:
        found = self.rows(session, params)
        return found[0] if found else None

    def _run(self, session: Session | Connection, params: Mapping[str, Any]) -> tuple[Any, _Compiled]:
        connection = session.connection() if isinstance(session, Session) else session
        dialect = connection.dialect
        keys = frozenset(params) if isinstance(self.statement, Insert) else None
        compiled = self._cache.get((dialect.name, keys)) or self._compile(dialect, keys)
        values = {**compiled.defaults, **params}
        for name, process in compiled.binds.items():
            values[name] = process(values[name])
        args: Any = values if compiled.positional is None else tuple(values[name] for name in compiled.positional)
        driver = connection.connection.driver_connection
        assert driver is not None
        cursor = driver.cursor()
        try:
            cursor.execute(compiled.sql, args)
        except dialect.loaded_dbapi.Error as error:
            raise DBAPIError.instance(compiled.sql, args, error, dialect.loaded_dbapi.Error) from error
        return cursor, compiled

    def _compile(self, dialect: Dialect, keys: frozenset[str] | None) -> _Compiled:
        compiled = self.statement.compile(dialect=dialect, column_keys=sorted(keys) if keys is not None else None)
        rendered = list(compiled.positiontup or ()) if compiled.positional else None
        by_name = {name: bind for bind, name in compiled.bind_names.items()}
        binds: dict[str, Callable[[Any], Any]] = {}
        defaults: dict[str, Any] = {}
        for name in rendered if rendered is not None else by_name:
            bind = by_name[name]
            if not bind.required:
                defaults[name] = bind.effective_value
            elif keys is not None and name not in keys:
                # A column default computed at execution time (or a missing value): not for this helper.
                raise ValueError(f"{self.statement}: a value for {name!r} must be given")
            process = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if process is not None:
                binds[name] = process
        results: tuple[Callable[[Any], Any] | None, ...] = ()
        fields: list[str] = []
        if isinstance(self.statement, Select):
            columns = list(self.statement.selected_columns)
            results = tuple(c.type.dialect_impl(dialect).result_processor(dialect, None) for c in columns)
            fields = [c.key for c in columns]
        entry = _Compiled(
            sql=compiled.string,
            positional=tuple(rendered) if rendered is not None else None,
            defaults=defaults,
            binds=binds,
            results=results,
            row=namedtuple("Row", fields, rename=True),  # type: ignore[misc]
        )
        self._cache[(dialect.name, keys)] = entry
        return entry


class WriteLock:
    """Serialises write transactions on one SQLite database across threads and processes."""

    def __init__(self, path: Path | None) -> None:
        self._path = path
        self._thread_lock = threading.Lock()

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        with self._thread_lock:
            if self._path is None:
                yield
                return
            fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)  # closing the descriptor releases the flock


class Database:
    """The engine, its session factory and, on SQLite, the write lock."""

    def __init__(self, url: str, **engine_kwargs: Any) -> None:
        self.url = url
        self.engine = make_engine(url, **engine_kwargs)
        self.sqlite = is_sqlite(self.engine)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False, autoflush=True)
        lock_path = None
        if self.sqlite:
            database = make_url(url).database
            if database and database != ":memory:":
                lock_path = Path(database + ".writelock")
        self.write_lock = WriteLock(lock_path)

    def session(self, *, write: bool) -> Session:
        session = self.sessions()
        if self.sqlite and write:
            session.connection(execution_options={"sqlite_begin": "IMMEDIATE"})
        return session

    def dispose(self) -> None:
        self.engine.dispose()
