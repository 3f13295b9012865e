"""Writing a chunk of seeded persons: every row of the chunk in one transaction, as fast as the database takes them.

PostgreSQL: `COPY … FROM STDIN (FORMAT BINARY)` through psycopg 3 (`cursor.copy`), reached under SQLAlchemy's
connection, each value sent in its column's own binary form (the types are read from the ORM's tables: a tenth of
the client's time of the text form, half the server's). SQLite: the driver's `executemany` under the broker's
write lock (broker/adapters/database.py), so that a broker serving the same file queues behind the load instead
of failing, with the values put through the column types' own bind processors (JSON as the broker stores it,
times as SQLAlchemy writes them, the processors `broker.adapters.database.Prepared` uses). Either way a seeded row
reads back exactly as one the ORM wrote.

The chunk's audit entries get their append ids here, in the transaction that inserts them: from the table's own
sequence on PostgreSQL; on SQLite after the largest id, read while the write lock is held.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, Column, Connection, Date, DateTime, Integer, LargeBinary, String

from broker.adapters.database import Database
from broker.adapters.orm import Base
from broker.seed.people import COLUMNS, ENTRY_REFERENCES, ChunkRows

# Parents before children (foreign keys are checked row by row).
ORDER = (
    "consent_texts",
    "persons",
    "relationships",
    "consent_requests",
    "consents",
    "consent_events",
    "records",
    "audit_entries",
    "audit_actors",
    "disclosures",
    "notices",
)

Processor = Callable[[Any], Any]


class ChunkWriter:
    """A worker's connection to the database, writing one chunk per transaction."""

    def __init__(self, database_url: str) -> None:
        self.db = Database(database_url)
        self.postgres = not self.db.sqlite
        self._connection: Connection = self.db.engine.connect()
        driver = self._connection.connection.driver_connection
        assert driver is not None
        self._driver: Any = driver
        if self.db.sqlite:
            # This connection is the seeder's own and is closed when the seed ends. On it, and only on it, a commit
            # waits for the write-ahead log but not for its fsync (synchronous=NORMAL, which WAL mode keeps free of
            # corruption; a power cut may lose the last chunks, which a rerun replaces), and the page cache is
            # larger. Every other connection keeps the broker's synchronous=FULL.
            self._driver.execute("PRAGMA synchronous=NORMAL")
            self._driver.execute("PRAGMA cache_size=-131072")  # KiB: 128 MiB
        self._processors: dict[tuple[str, tuple[str, ...]], list[tuple[int, Processor]]] = {}
        self._types: dict[tuple[str, tuple[str, ...]], list[str]] = {}
        # Consent texts this writer has committed: later chunks need not send them again (the texts are few, the
        # consents citing them many). Added to only after a commit, so that a text is never assumed stored when
        # its chunk was rolled back.
        self._texts: set[str] = set()

    def close(self) -> None:
        try:
            if self.db.sqlite:
                self._driver.execute("PRAGMA synchronous=FULL")
            self._connection.close()
        finally:
            self.db.dispose()

    def write(self, rows: ChunkRows) -> None:
        """Insert every row of the chunk in one transaction and commit it."""
        texts = rows.tables["consent_texts"]
        rows.tables["consent_texts"] = [text for text in texts if text[0] not in self._texts]
        self._write(rows)
        self._texts.update(text[0] for text in texts)

    def _write(self, rows: ChunkRows) -> None:
        if self.postgres:
            with self._connection.begin():
                cursor = self._driver.cursor()
                try:
                    # A chunk whose commit is lost in a crash is absent as a whole, and the run stops there; the
                    # seed's last transaction (the sequencer's) is a durable commit, which makes every earlier one
                    # durable too (PostgreSQL writes its log in order).
                    cursor.execute("SET LOCAL synchronous_commit TO OFF")
                    cursor.execute(
                        "SELECT nextval(pg_get_serial_sequence('audit_entries', 'id')) "
                        "FROM generate_series(1, %s) ORDER BY 1",
                        (len(rows.entries),),
                    )
                    ids = [row[0] for row in cursor.fetchall()]
                    for table, columns, values in self._tables(rows, ids):
                        if table == "consent_texts":  # a text may be there already: COPY cannot skip it
                            self._insert(cursor, table, columns, values, mark="%s")
                        else:
                            self._copy(cursor, table, columns, values)
                finally:
                    cursor.close()
            return
        with self.db.write_lock.hold(), self._connection.execution_options(sqlite_begin="IMMEDIATE").begin():
            cursor = self._driver.cursor()
            try:
                cursor.execute("SELECT coalesce(max(id), 0) FROM audit_entries")
                last = int(cursor.fetchone()[0])
                ids = list(range(last + 1, last + 1 + len(rows.entries)))
                for table, columns, values in self._tables(rows, ids):
                    self._insert(cursor, table, columns, values, mark="?")
            finally:
                cursor.close()

    def _tables(self, rows: ChunkRows, ids: Sequence[int]) -> list[tuple[str, tuple[str, ...], list[tuple[Any, ...]]]]:
        if len(ids) != len(rows.entries):
            raise RuntimeError("the database gave fewer append ids than the chunk has entries")
        out = []
        for table in ORDER:
            if table == "audit_entries":
                columns = rows.entry_columns
                values = [(ids[entry[0]], *entry[1:]) for entry in rows.entries]
            else:
                columns = COLUMNS[table]
                values = rows.tables[table]
                reference = ENTRY_REFERENCES.get(table)
                if reference is not None:
                    at = columns.index(reference)
                    values = [(*row[:at], ids[row[at]], *row[at + 1 :]) for row in values]
            if values:
                found = Base.metadata.tables[table].c
                missing = [name for name in columns if name not in found]
                if missing:
                    raise RuntimeError(f"{table} has no column {', '.join(missing)}: the seeder is out of date")
                # psycopg adapts PostgreSQL's values itself (JSON with json.dumps, as SQLAlchemy does); SQLite's go
                # through the column types' processors.
                out.append((table, columns, values if self.postgres else self._processed(table, columns, values)))
        return out

    def _processed(self, table: str, columns: tuple[str, ...], values: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        processors = self._processors.get((table, columns))
        if processors is None:
            dialect = self._connection.dialect
            found = Base.metadata.tables[table].c
            processors = []
            for i, name in enumerate(columns):
                processor = found[name].type.dialect_impl(dialect).bind_processor(dialect)
                if processor is not None:
                    processors.append((i, processor))
            self._processors[(table, columns)] = processors
        if not processors:
            return values
        out = []
        for row in values:
            converted = list(row)
            for i, process in processors:
                if converted[i] is not None:
                    converted[i] = process(converted[i])
            out.append(tuple(converted))
        return out

    def _copy(self, cursor: Any, table: str, columns: tuple[str, ...], values: list[tuple[Any, ...]]) -> None:
        types = self._types.get((table, columns))
        if types is None:
            found = Base.metadata.tables[table].c
            dialect = self._connection.dialect
            types = self._types[(table, columns)] = [_binary_type(found[name], dialect) for name in columns]
        # Names come from COLUMNS and the audit code's row, checked against the ORM's tables above; values never
        # enter the statement.
        with cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(types)
            write_row = copy.write_row
            for row in values:
                write_row(row)

    @staticmethod
    def _insert(cursor: Any, table: str, columns: tuple[str, ...], values: list[tuple[Any, ...]], *, mark: str) -> None:
        marks = ", ".join([mark] * len(columns))
        conflict = " ON CONFLICT (sha256) DO NOTHING" if table == "consent_texts" else ""
        # Names only (COLUMNS, checked against the ORM's tables above); every value is bound.
        statement = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks}){conflict}"  # noqa: S608  # nosec B608
        cursor.executemany(statement, values)


def _binary_type(column: Column[Any], dialect: Any) -> str:
    """The PostgreSQL type whose binary form psycopg must send for `column`: exactly the column's own, since the
    server reads binary COPY data with the column type's receive function (an int4 where an int8 is stored fails)."""
    kind = column.type.dialect_impl(dialect)
    if isinstance(kind, BigInteger):
        return "int8"
    if isinstance(kind, Integer):
        return "int4"
    if isinstance(kind, Boolean):
        return "bool"
    if isinstance(kind, DateTime):
        return "timestamptz" if kind.timezone else "timestamp"
    if isinstance(kind, Date):
        return "date"
    if isinstance(kind, LargeBinary):
        return "bytea"
    if isinstance(kind, JSON):
        return "json"
    if isinstance(kind, String):  # VARCHAR and TEXT are received alike
        return "text"
    raise RuntimeError(f"{column.table.name}.{column.name}: no binary COPY form known for {kind!r}")
