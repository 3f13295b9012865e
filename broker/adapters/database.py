"""Engines and transactions for SQLite (the embedded default) and PostgreSQL (production).

SQLite: WAL with `synchronous=FULL` (durable per commit). Write transactions are serialised by one lock — a
file lock beside the database, held across processes — and start with `BEGIN IMMEDIATE`, so that concurrent
writers queue on the lock instead of sleeping in SQLite's busy handler (see PITFALLS.md: p99 near a second
otherwise).

PostgreSQL: READ COMMITTED; the services lock the rows a decision depends on (`FOR SHARE` / `FOR UPDATE`).

An unusable database — unreachable, shut down, out of resources, too slow for a request's time limits — is told
apart from every other database error by `unavailability()`: the HTTP layer answers it 503 with `Retry-After`
(docs/security.md, "Database unavailable"), while a constraint violation or a bad statement stays the bug it is.
The time limits themselves (`Timeouts`) keep a request from waiting on its database longer than it may run.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import time
from collections import namedtuple
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.exc import (
    DBAPIError,
    DisconnectionError,
    InterfaceError,
    InvalidatePoolError,
    OperationalError,
    ResourceClosedError,
    StatementError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import PoolProxiedConnection
from sqlalchemy.sql import Executable, Insert, Select

from broker.domain.errors import DatabaseUnavailableError


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


@dataclass(frozen=True, slots=True)
class Timeouts:
    """How long the broker waits on its database, in seconds; None leaves the driver's or server's default.

    `connect`: opening a PostgreSQL connection (libpq `connect_timeout`, whole seconds, 2 at least — libpq
    treats less as 2). `pool`: waiting for a free pooled connection (SQLAlchemy `pool_timeout`). `statement`:
    one statement on PostgreSQL (`statement_timeout`). `lock`: waiting for a lock (PostgreSQL `lock_timeout`;
    SQLite's busy timeout). Served processes set all four from Settings (broker/app.py); command-line jobs —
    migrations, verifying or exporting the whole log — leave `statement` and `lock` unset, as they may rightly
    run long."""

    connect: int | None = None
    pool: float | None = None
    statement: float | None = None
    lock: float | None = None


# TCP settings of PostgreSQL connections (libpq parameters) for a server that vanished without closing the
# connection (a network partition, a host that lost power) — a statement timeout cannot help there, since it is the
# server that enforces it. Keepalive probes notice it after about 5 + 2 × 3 = 11 seconds of silence instead of the
# kernel's default of more than two hours (a server busy with a long statement still answers the probes); and
# `tcp_user_timeout` gives up on data sent but not acknowledged for 10 s instead of retransmitting for 15 minutes.
_TCP = {
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
    "tcp_user_timeout": 10_000,  # milliseconds
}
_SQLITE_BUSY_TIMEOUT = 10.0  # seconds, when no lock timeout is given


def make_engine(url: str, *, timeouts: Timeouts | None = None, **kwargs: Any) -> Engine:
    parsed = make_url(url)
    timeouts = timeouts or Timeouts()
    if timeouts.pool is not None:
        kwargs.setdefault("pool_timeout", timeouts.pool)
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(url, **kwargs)
        _configure_sqlite(engine, busy_timeout=timeouts.lock if timeouts.lock is not None else _SQLITE_BUSY_TIMEOUT)
        return engine
    kwargs.setdefault("pool_size", 10)
    connect_args = dict(kwargs.pop("connect_args", {}))
    for name, value in _TCP.items():
        if name not in parsed.query:
            connect_args.setdefault(name, value)
    if timeouts.connect is not None:
        connect_args.setdefault("connect_timeout", max(2, int(timeouts.connect)))
    server_options = [
        f"-c {name}={int(seconds * 1000)}"  # milliseconds
        for name, seconds in (("statement_timeout", timeouts.statement), ("lock_timeout", timeouts.lock))
        if seconds is not None
    ]
    if server_options:
        # Sent in the connection's start-up packet (libpq `options`), after any options the URL or the caller
        # already give (a test schema's search_path), so every pooled connection has them without a round trip.
        given = connect_args.get("options", parsed.query.get("options", ""))
        given = " ".join(given) if isinstance(given, tuple) else given
        connect_args["options"] = " ".join(filter(None, [given, *server_options]))
    engine = create_engine(url, connect_args=connect_args, **kwargs)
    _ping_idle_connections(engine)
    return engine


# A pooled connection that has lain idle this long is pinged before it is handed out (`_ping_idle_connections`).
PING_AFTER_IDLE_SECONDS = 1.0


def _ping_idle_connections(engine: Engine) -> None:
    """Replace a broken pooled PostgreSQL connection before a request gets it — one that has been idle for more than
    `PING_AFTER_IDLE_SECONDS` is pinged at checkout, and a failed ping replaces it (SQLAlchemy's "pessimistic"
    disconnect handling, with a custom checkout event) — so that the broker recovers by itself after the database
    was away, without a restart.

    Not every checkout, as `pool_pre_ping` would: under load the ping was a round trip to the server on each of a
    disclosure's two checkouts, about a fifth of the broker's and the server's CPU per disclosure
    (docs/benchmarks.md). A connection in use within the last second is as good as pinged; one that broke since is
    found by its next statement, whose error invalidates it (`_driver_error`) and answers 503 with Retry-After; the
    next request gets a new connection, or another pooled one, which is pinged if it lay idle or else found out by
    its own next statement. A failed ping invalidates every connection of the pool older than the one pinged."""

    @event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_connection: Any, record: Any) -> None:
        record.info["checked_in_at"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        checked_in = record.info.get("checked_in_at")
        if checked_in is None or time.monotonic() - checked_in < PING_AFTER_IDLE_SECONDS:
            return  # new, or in use a moment ago
        try:
            engine.dialect.do_ping(dbapi_connection)
        except engine.dialect.loaded_dbapi.Error as error:
            # The pool replaces this connection and every one older (after a server restart they are all broken),
            # and checks out a new one instead.
            raise InvalidatePoolError(f"a pooled connection failed its ping: {type(error).__name__}") from error


_BEGIN = {mode: f"BEGIN {mode}" for mode in ("DEFERRED", "IMMEDIATE", "EXCLUSIVE")}


def _configure_sqlite(engine: Engine, *, busy_timeout: float) -> None:
    busy_pragma = f"PRAGMA busy_timeout={int(busy_timeout * 1000)}"

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the sqlite3 module, decide when transactions begin (SQLAlchemy's documented
        # pysqlite recipe), so that BEGIN IMMEDIATE can be issued for write transactions.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(busy_pragma)
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
    the parameters it is given.

    `session` is an ORM `Session`, a Core `Connection` or a `PooledConnection` (the disclosure path's units of work
    and the access-token read); the statement runs in its transaction."""

    __slots__ = ("_cache", "statement")

    def __init__(self, statement: Executable) -> None:
        self.statement = statement
        self._cache: dict[tuple[str, frozenset[str] | None], _Compiled] = {}

    def execute(self, session: Session | Connection | PooledConnection, params: Mapping[str, Any] | None = None) -> Any:
        """Run the statement in `session`'s transaction; return the driver cursor (for `rowcount`)."""
        return self._run(session, params or {})[0]

    def execute_many(
        self, session: Session | Connection | PooledConnection, params: Sequence[Mapping[str, Any]]
    ) -> None:
        """Run the statement once per parameter set with the driver's `executemany`: the sequencer's batch of
        UPDATEs and INSERTs, written while the SQLite write lock is held. Every set must have the same keys."""
        if not params:
            return
        connection, driver = _connection_of(session)
        dialect = connection.dialect
        keys = frozenset(params[0]) if isinstance(self.statement, Insert) else None
        compiled = self._cache.get((dialect.name, keys)) or self._compile(dialect, keys)
        rows = []
        for one in params:
            values = {**compiled.defaults, **one}
            for name, process in compiled.binds.items():
                values[name] = process(values[name])
            rows.append(values if compiled.positional is None else tuple(values[n] for n in compiled.positional))
        cursor = None
        try:
            # The cursor too: a driver refuses one on a connection it knows to be broken (closed), and that error
            # must invalidate the connection as a statement's would.
            cursor = driver.cursor()
            cursor.executemany(compiled.sql, rows)
        except dialect.loaded_dbapi.Error as error:
            raise _driver_error(connection, driver, cursor, compiled.sql, rows[0], error) from error
        finally:
            if cursor is not None:
                cursor.close()

    def rows(
        self, session: Session | Connection | PooledConnection, params: Mapping[str, Any] | None = None
    ) -> list[Any]:
        """Run a SELECT in `session`'s transaction; every row as a named tuple of converted values."""
        cursor, compiled = self._run(session, params or {})
        processors = compiled.results
        make = compiled.row._make
        return [
            make([value if proc is None else proc(value) for proc, value in zip(processors, raw, strict=True)])
            for raw in cursor.fetchall()
        ]

    def first(
        self, session: Session | Connection | PooledConnection, params: Mapping[str, Any] | None = None
    ) -> Any | None:
        found = self.rows(session, params)
        return found[0] if found else None

    def _run(
        self, session: Session | Connection | PooledConnection, params: Mapping[str, Any]
    ) -> tuple[Any, _Compiled]:
        connection, driver = _connection_of(session)
        dialect = connection.dialect
        keys = frozenset(params) if isinstance(self.statement, Insert) else None
        compiled = self._cache.get((dialect.name, keys)) or self._compile(dialect, keys)
        values = {**compiled.defaults, **params}
        for name, process in compiled.binds.items():
            values[name] = process(values[name])
        args: Any = values if compiled.positional is None else tuple(values[name] for name in compiled.positional)
        cursor = None
        try:
            cursor = driver.cursor()  # inside: see execute_many
            cursor.execute(compiled.sql, args)
        except dialect.loaded_dbapi.Error as error:
            raise _driver_error(connection, driver, cursor, compiled.sql, args, error) from error
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


def _connection_of(session: Session | Connection | PooledConnection) -> tuple[Connection | PooledConnection, Any]:
    """The connection whose transaction `session` is, and its driver's connection."""
    if isinstance(session, PooledConnection):  # the disclosure path's, checked first
        return session, session.driver
    connection = session.connection() if isinstance(session, Session) else session
    return connection, connection.connection.driver_connection


def _driver_error(
    connection: Connection | PooledConnection, driver: Any, cursor: Any, sql: str | None, params: Any, error: Any
) -> StatementError:
    """The driver's error as SQLAlchemy's exception, as `Connection.execute` would raise it: a connection the
    error shows to be broken is invalidated first, so that the pool replaces it instead of handing it out again.
    Callers catch SQLAlchemy's classes (`IntegrityError` on a unique key, `unavailability()` for an outage)."""
    dialect = connection.dialect
    broken = dialect.is_disconnect(error, driver, cursor)
    if broken and not connection.invalidated:
        connection.invalidate(error)
    wrapped: StatementError = DBAPIError.instance(
        sql, params, error, dialect.loaded_dbapi.Error, connection_invalidated=broken, dialect=dialect
    )
    return wrapped


class _NoDriver:
    """Stands in for the driver's connection of a `PooledConnection` that must run no more statements: one that
    has committed its transaction — on SQLite the next statement would run outside any transaction and commit by
    itself — or gone back to the pool, where another request may hold it by now. A statement then fails at once,
    as on a closed SQLAlchemy `Connection`."""

    __slots__ = ("_why",)

    def __init__(self, why: str) -> None:
        self._why = why

    def cursor(self) -> NoReturn:
        raise ResourceClosedError(self._why)


_COMMITTED = _NoDriver("this unit of work has committed its transaction; a new statement needs a new unit of work")
_RETURNED = _NoDriver("this connection has gone back to the pool")


class PooledConnection:
    """A connection checked out from the engine's pool and used on its driver, for work whose every statement is a
    `Prepared` one — which runs on the driver's cursor anyway: the disclosure path's units of work (`CoreUnitOfWork`,
    broker/adapters/uow.py) and the access-token read of every request (`Database.one_prepared`).

    SQLAlchemy's `Connection` and its transaction objects around the same driver calls cost about as much CPU again
    as the calls themselves: a SQLite read transaction's checkout, BEGIN, SELECT, ROLLBACK and return took 27 µs
    through them against 12 µs this way. The pool stays SQLAlchemy's, with its events — the idle ping at checkout
    (`_ping_idle_connections`), the pool timeout, the replacement of an invalidated connection — and its own
    rollback at the return as a safety net.

    Transactions are the driver's. SQLite: the connection is in the driver's autocommit mode (`_configure_sqlite`),
    so a transaction is what `begin` starts — `BEGIN IMMEDIATE` for a write — until `commit` or `rollback`;
    without `begin` each statement is a transaction of its own. PostgreSQL: psycopg begins a transaction with the
    first statement, at the server's default isolation level (READ COMMITTED), as it does under SQLAlchemy, whose
    psycopg dialect begins no differently; with `autocommit` each statement is a transaction of its own instead.

    Every driver error is raised as SQLAlchemy's exception (`_driver_error`), and one that shows the connection to
    be broken invalidates it: it is closed — which ends its transaction — and the pool opens a new one in its
    place at a later checkout. After `commit`, and once returned, the connection refuses statements (`_NoDriver`)."""

    __slots__ = ("_autocommit", "_driver", "_pooled", "dialect", "driver", "invalidated")

    def __init__(self, engine: Engine, *, autocommit: bool = False) -> None:
        self.dialect = dialect = engine.dialect
        self.invalidated = False
        self._autocommit = False
        try:
            pooled = engine.raw_connection()  # the pool's checkout, with its events (the idle ping)
        except dialect.loaded_dbapi.Error as error:
            # A connection that could not be opened: SQLAlchemy's exception, as `Engine.connect()` raises it, so that
            # `unavailability()` knows it for an outage.
            raise DBAPIError.instance(
                None,
                None,
                error,
                dialect.loaded_dbapi.Error,
                connection_invalidated=dialect.is_disconnect(error, None, None),
                dialect=dialect,
            ) from error
        self._pooled: PoolProxiedConnection | None = pooled  # None once back in the pool
        self._driver: Any = pooled.driver_connection
        self.driver: Any = self._driver  # what `Prepared` runs statements on
        if autocommit and dialect.name != "sqlite":  # SQLite's driver is in autocommit mode already
            self._set_autocommit(True)

    def __enter__(self) -> PooledConnection:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def begin(self, mode: str = "DEFERRED") -> None:
        """SQLite only: start a transaction — DEFERRED (a read, whose snapshot its first statement takes) or
        IMMEDIATE (a write, with the database's write lock from the start; hold `Database.write_lock` around it)."""
        self._call(self._driver.execute, _BEGIN[mode])

    def commit(self) -> None:
        """Commit the transaction; the connection then refuses statements."""
        self._call(self._driver.commit)
        self.driver = _COMMITTED

    def rollback(self) -> None:
        """Roll back the transaction if there is one (the driver's rollback does nothing otherwise)."""
        if self._pooled is not None:
            self._call(self._driver.rollback)

    def invalidate(self, error: BaseException | None = None) -> None:
        """Close the driver's connection — which ends its transaction — and give the pool's entry back, to be
        reconnected at its next checkout: for a connection an error has shown to be broken, or in a state unknown."""
        pooled, self._pooled = self._pooled, None
        if pooled is None:
            return
        self.invalidated = True
        self.driver = _RETURNED
        pooled.invalidate(error)

    def close(self) -> None:
        """Return the connection to the pool. The caller ends the transaction first — the pool's own rollback at
        the return is a safety net, and on SQLite the write lock is released between the two."""
        if self._pooled is None:
            return
        if self._autocommit:
            # As it was checked out: the next user of the connection expects psycopg to begin transactions.
            self._set_autocommit(False)
        pooled, self._pooled = self._pooled, None
        self.driver = _RETURNED
        pooled.close()

    def _set_autocommit(self, on: bool) -> None:
        try:
            self._call(setattr, self._driver, "autocommit", on)
        except BaseException as error:
            # A connection that may be left in the wrong mode is not handed out again.
            self.invalidate(error)
            raise
        self._autocommit = on

    def _call(self, method: Any, *args: Any) -> None:
        try:
            method(*args)
        except self.dialect.loaded_dbapi.Error as error:
            raise _driver_error(self, self._driver, None, None, None, error) from error


class WriteLock:
    """Serialises write transactions on one SQLite database across threads and processes.

    A lock file that cannot be opened or locked (its folder gone, a read-only or full disk) means the database
    cannot be written: DatabaseUnavailableError. There is no timeout on the wait itself: the holders are write
    transactions on a local file, each a few milliseconds, and a `flock` wait cannot be bounded without signals.
    """

    def __init__(self, path: Path | None) -> None:
        self._path = path
        self._thread_lock = threading.Lock()

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        with self._thread_lock:
            if self._path is None:
                yield
                return
            try:
                fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
            except OSError as error:
                raise DatabaseUnavailableError("the database's write lock cannot be opened") from error
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX)
                except OSError as error:
                    raise DatabaseUnavailableError("the database's write lock cannot be taken") from error
                yield
            finally:
                os.close(fd)  # closing the descriptor releases the flock


# SQLite's primary result codes (sqlite.org/rescode.html) that say the database cannot be used just now, whatever
# the statement: BUSY and LOCKED (locked beyond the busy timeout), NOMEM, READONLY (the file or its disk is
# read-only), IOERR, FULL (the disk), CANTOPEN (the file or its folder is gone or unreadable), PROTOCOL (a locking
# race). Not CORRUPT or NOTADB: a damaged file is not an outage to wait out but an alarm.
_SQLITE_UNAVAILABLE = {
    5: "BUSY",
    6: "LOCKED",
    7: "NOMEM",
    8: "READONLY",
    10: "IOERR",
    13: "FULL",
    14: "CANTOPEN",
    15: "PROTOCOL",
}
# PostgreSQL's SQLSTATE classes (PostgreSQL manual, Appendix A) that say the same: 08 connection exception,
# 53 insufficient resources (disk full, out of memory, too many connections), 57 operator intervention (a
# statement cancelled by statement_timeout, 57014; the server shutting down or starting up, 57P01–57P03),
# 58 system error (I/O); and the one code of class 55 that is a wait given up, 55P03 lock_not_available
# (lock_timeout). Serialization failures and deadlocks (class 40) are not outages, nor are constraint
# violations (23) or bad statements (42): those stay errors.
_POSTGRES_CLASSES = ("08", "53", "57", "58")
_POSTGRES_STATES = frozenset({"55P03"})


def unavailability(error: BaseException) -> str | None:
    """Why `error` means that the database cannot be used just now — a short reason for the log, such as
    `connection_lost`, `postgres_57P01` or `sqlite_CANTOPEN` — or None when it is any other error.

    The exception and what it was raised from (`__cause__`, `__context__`) are looked at, so that an error
    re-raised by a library around the driver's is still recognised. Never reads the error's message, which may
    hold the statement and its parameters."""
    seen: set[int] = set()
    found: str | None = None  # a DatabaseUnavailableError's own reason, unless what it was raised from says more
    current: BaseException | None = error
    while current is not None and id(current) not in seen and len(seen) < 8:
        seen.add(id(current))
        if isinstance(current, DatabaseUnavailableError):
            found = found or ("write_lock" if isinstance(current.__cause__, OSError) else "unavailable")
        else:
            reason = _reason(current)
            if reason is not None:
                return reason
        current = current.__cause__ or current.__context__
    return found


def transaction_conflict(error: BaseException) -> str | None:
    """`postgres_40001` (serialization failure) or `postgres_40P01` (deadlock detected) when `error` is, or was raised
    from, a PostgreSQL transaction rollback of class 40: the transaction lost a race with a concurrent one and was
    rolled back whole, so sending the same request again is safe and will most likely succeed. None otherwise."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen and len(seen) < 8:
        seen.add(id(current))
        if isinstance(current, DBAPIError):
            state = getattr(current.orig, "sqlstate", None)
            if isinstance(state, str) and state.startswith("40"):
                return f"postgres_{state}"
        current = current.__cause__ or current.__context__
    return None


def _reason(error: BaseException) -> str | None:
    if isinstance(error, PoolTimeoutError):
        return "pool_timeout"
    if isinstance(error, DisconnectionError):
        return "connection_lost"
    if not isinstance(error, DBAPIError):
        return None
    if error.connection_invalidated:
        return "connection_lost"
    driver_error = error.orig
    sqlite_code = getattr(driver_error, "sqlite_errorcode", None)
    if sqlite_code is not None:
        name = _SQLITE_UNAVAILABLE.get(sqlite_code & 0xFF)  # the primary code is the low byte of an extended one
        return f"sqlite_{name}" if name else None
    if not hasattr(driver_error, "sqlstate"):  # neither sqlite3 nor psycopg: nothing to judge by
        return None
    state = driver_error.sqlstate
    if state is None:
        # psycopg raises these without a SQLSTATE when there is no server to give one: the connection could not
        # be opened, or was closed under it.
        return "connection_failed" if isinstance(error, OperationalError | InterfaceError) else None
    if state.startswith(_POSTGRES_CLASSES) or state in _POSTGRES_STATES:
        return f"postgres_{state}"
    return None


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

    @contextlib.contextmanager
    def one_statement(self) -> Iterator[Connection]:
        """A connection for a read that is a single statement. On PostgreSQL it runs outside a transaction
        (autocommit): a statement sees one snapshot of the database by itself, and the BEGIN and ROLLBACK of a
        transaction would be two more round trips to the server (docs/benchmarks.md: a third of an inclusion
        proof's time). On SQLite, a read transaction of its own, as any read."""
        with self.engine.connect() as connection:
            if not self.sqlite:
                connection.execution_options(isolation_level="AUTOCOMMIT")
            yield connection

    def one_prepared(self) -> PooledConnection:
        """`one_statement` for a read that is a single `Prepared` statement — the access-token check of every
        request (broker/oauth/protector.py) — on the pool's driver connection itself (`PooledConnection`), to be
        used as a context manager that returns it to the pool. PostgreSQL: in psycopg's autocommit mode for the
        statement, for the reason `one_statement` gives. SQLite: the statement is a read transaction of its own."""
        return PooledConnection(self.engine, autocommit=True)

    def session(self, *, write: bool) -> Session:
        session = self.sessions()
        if self.sqlite and write:
            session.connection(execution_options={"sqlite_begin": "IMMEDIATE"})
        return session

    def dispose(self) -> None:
        self.engine.dispose()
