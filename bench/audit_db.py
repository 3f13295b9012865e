"""`make bench-audit` (database side): the sequencer's throughput, the cost of a checkpoint and of a proof, up to
national scale.

1. fills a fresh database (SQLite in a temporary folder, or PostgreSQL with `--postgres URL` or
   BROKER_BENCH_POSTGRES_URL: a scratch schema, dropped afterwards) with N pending entries (`--entries`, default
   1,000,000) in their stored form — what `broker.services.audit_log.append_entry` inserts, made with
   `audit.encode_pending` from realistic disclosure, decision, consent, token and deposit entries, each with its
   own time and person — in bulk (COPY on PostgreSQL, executemany on SQLite). The queueing trigger puts each in
   the sequencer's queue, as it does for every append;
2. integrates them with the sequencer's own code (`Sequencer.integrate_batch`, batches of `--batch`, default
   10,000, a signed checkpoint each): the tree, subtree hashes and head are exactly the ones a served broker's
   sequencer makes. Reports entries integrated per second;
3. times inclusion proofs (RFC 9162 §2.1.3) of random entries against the full tree and consistency proofs
   (§2.1.4) from random earlier checkpoints, through the service the API uses (broker/services/audit_read.py): p50,
   p95, p99 and max in milliseconds — the issue's target is an inclusion proof ≤ 2 ms at 10,000,000 entries — and
   checks a sample of them against the signed checkpoint with `audit.proofs`;
4. times a checkpoint on the full log, for batches of 256 (the served default) and 10,000: entries appended, then
   one `integrate_batch` (read the batch, hash it into the tree, sign the checkpoint, write leaves, subtree hashes,
   head and checkpoint, commit) and one `export` (the note to the sink) — with, on SQLite, how long the write
   lock was held, which is how long disclosures wait.

A benchmark, not a test. Results: bench/results/audit_db-<date>-<backend>.json (`-<N>` added for another size
than 1,000,000). Exits 0 once measured, whether or not the target is met (the results say); 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import random
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import text

from audit import commit_actor, encode_entry, encode_pending, place_index
from bench.machine import machine_info

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
TARGET_MS = 2.0  # inclusion proof, p99, at 10,000,000 entries (issue #7; issue #5 asked it at 1,000,000)
DEFAULT_ENTRIES = 1_000_000
POOL = 4096
CHUNK = 50_000  # entries per bulk insert transaction
T0 = datetime(2026, 1, 1, tzinfo=UTC)
# The columns of an audit_entries row, in the order of PendingEntries.row.
COLUMNS: tuple[str, ...] = (
    *("entry", "split", "logged_at", "event", "person_id", "organisation", "category", "purpose", "effect"),
    "basis_kind",
)


# --- the entries ---------------------------------------------------------------------------------------------------


def _templates(rng: random.Random) -> list[dict[str, Any]]:
    """`encode_pending` arguments of the common kinds of entry, without time and person."""

    def hex_id(bits: int = 128) -> str:
        return f"{rng.getrandbits(bits):0{bits // 4}x}"

    def digest() -> str:
        return hashlib.sha256(rng.randbytes(16)).hexdigest()

    def salted(actor: str) -> str:
        return commit_actor(actor, hex_id(256))

    kinds: list[tuple[int, Callable[[], dict[str, Any]]]] = [
        (
            45,
            lambda: {
                "event": "disclosure:permit",
                "request_id": hex_id(64),
                "partner": "varha-health",
                "organisation": "varha-health",
                "actor_role": "physician",
                "actor_commitment": salted(f"staff-{rng.randrange(500)}"),
                "category": "work_assessment",
                "purpose": "work_capacity_assessment",
                "effect": "permit",
                "basis": {"kind": "consent", "consent_id": f"con_{hex_id()}", "rule": "F12a"},
                "policy_version": digest(),
                "record_ids": [f"rec_{hex_id()}" for _ in range(rng.randrange(1, 3))],
                "fields": ["assessment_date", "capacity", "restrictions", "summary"],
                "payload_sha256": digest(),
                "detail": {"disclosure_id": f"dis_{hex_id()}"},
            },
        ),
        (
            10,
            lambda: {
                "event": "disclosure:deny",
                "request_id": hex_id(64),
                "partner": "ohjaamo-turku",
                "organisation": "ohjaamo-turku",
                "actor_role": "youth_worker",
                "actor_commitment": salted(f"staff-{rng.randrange(500)}"),
                "category": "health_check_summary",
                "purpose": "service_planning",
                "effect": "deny",
                "policy_version": digest(),
                "detail": {"disclosure_id": f"dis_{hex_id()}", "reason": "no_legal_basis"},
            },
        ),
        (
            10,
            lambda: {
                "event": "consent:grant",
                "actor_role": "person",
                "actor_commitment": salted(f"per_{hex_id()}"),
                "detail": {"consent_id": f"con_{hex_id()}", "method": "portal"},
            },
        ),
        (
            20,
            lambda: {
                "event": "token:issue",
                "request_id": hex_id(64),
                "partner": "kela",
                "organisation": "kela",
                "detail": {"scopes": ["decisions", "disclosures"], "jti": hex_id()},
            },
        ),
        (
            15,
            lambda: {
                "event": "record:deposit",
                "request_id": hex_id(64),
                "partner": "kisalli",
                "organisation": "kisalli",
                "actor_role": "individual_coach",
                "actor_commitment": salted(f"staff-{rng.randrange(500)}"),
                "category": "work_assessment",
                "record_ids": [f"rec_{hex_id()}"],
                "payload_sha256": digest(),
            },
        ),
    ]
    weights = [weight for weight, _ in kinds]
    makers = [make for _, make in kinds]
    return [rng.choices(makers, weights)[0]() for _ in range(POOL)]


def _person(index: int) -> str:
    return f"per_{(index * 0x9E3779B97F4A7C15) % 2**128:032x}"  # distinct per entry, fixed width


def _moment(index: int) -> datetime:
    return T0 + timedelta(milliseconds=100 * index)


def _spelled(moment: datetime) -> bytes:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ").encode()  # as in an entry (audit/entry.py, RFC 3339 in UTC)


class PendingEntries:
    """Entry i in its stored form: a template encoded once with `encode_pending`, with entry i's own time and person
    put in. Both are members after "index" and keep their width, so the offset of the index member is the
    template's; `check` confirms against `encode_pending` and `encode_entry` on a sample."""

    def __init__(self, seed: int) -> None:
        self.arguments = _templates(random.Random(seed))
        self.pool = [encode_pending(logged_at=T0, person_id=_person(0), **_filled(a)) for a in self.arguments]
        self.t0, self.p0 = _spelled(T0), _person(0).encode()

    def row(self, index: int) -> tuple[Any, ...]:
        arguments = self.arguments[index % POOL]
        data, split = self.pool[index % POOL]
        moment = _moment(index)
        person = _person(index)
        data = data.replace(self.t0, _spelled(moment), 1).replace(self.p0, person.encode(), 1)
        basis = arguments.get("basis")
        return (data, split, moment, arguments["event"], person, arguments.get("organisation"),
                arguments.get("category"), arguments.get("purpose"), arguments.get("effect"),
                basis["kind"] if basis else None)  # fmt: skip

    def check(self, indexes: list[int]) -> None:
        for index in indexes:
            arguments = _filled(self.arguments[index % POOL])
            data, split = self.row(index)[:2]
            assert (data, split) == encode_pending(logged_at=_moment(index), person_id=_person(index), **arguments)
            final = encode_entry(index=index, logged_at=_moment(index), person_id=_person(index), **arguments)
            assert place_index(data, split, index) == final, index


def _filled(arguments: dict[str, Any]) -> dict[str, Any]:
    names = (
        *("request_id", "partner", "organisation", "actor_role", "actor_commitment", "category", "purpose"),
        *("effect", "basis", "policy_version", "payload_sha256", "detail"),
    )
    return {**{name: None for name in names}, **arguments}


# --- loading ---------------------------------------------------------------------------------------------------------


def append_pending(broker: Any, entries: PendingEntries, first: int, count: int) -> None:
    """Insert entries first..first+count-1 in their stored form, one transaction per chunk: COPY on PostgreSQL,
    the driver's executemany on SQLite (under the broker's write lock, as every write). The queueing trigger
    queues them."""
    from broker.adapters.orm import AuditEntryRow

    table = AuditEntryRow.__table__
    for start in range(first, first + count, CHUNK):
        rows = [entries.row(i) for i in range(start, min(start + CHUNK, first + count))]
        with broker.uow() as uow:
            connection = uow.session.connection()
            if uow.postgres:
                driver: Any = connection.connection.driver_connection
                with (
                    driver.cursor() as cursor,
                    cursor.copy(f"COPY audit_entries ({', '.join(COLUMNS)}) FROM STDIN") as copy,
                ):
                    for row in rows:
                        copy.write_row(row)
            else:
                dialect = connection.dialect
                logged_at = table.c.logged_at.type.dialect_impl(dialect).bind_processor(dialect)
                assert logged_at is not None
                marks = ", ".join("?" * len(COLUMNS))
                connection.exec_driver_sql(
                    f"INSERT INTO audit_entries ({', '.join(COLUMNS)}) VALUES ({marks})",  # names only
                    [(*row[:2], logged_at(row[2]), *row[3:]) for row in rows],
                )
            uow.commit()


# --- timing ----------------------------------------------------------------------------------------------------------


def _percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)

    def at(share: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, int(len(ordered) * share + 0.5) - 1))]

    return {
        "n": len(ordered),
        "p50_ms": round(statistics.median(ordered) * 1000, 3),
        "p95_ms": round(at(0.95) * 1000, 3),
        "p99_ms": round(at(0.99) * 1000, 3),
        "max_ms": round(ordered[-1] * 1000, 3),
    }


@dataclass
class LockClock:
    """Wall time the SQLite write lock was held, summed (the broker's lock around every write transaction)."""

    seconds: float = 0.0


def clock_lock(broker: Any) -> LockClock:
    held = LockClock()
    hold = broker.db.write_lock.hold

    @contextlib.contextmanager
    def timed() -> Iterator[None]:
        with hold():
            began = time.perf_counter()
            try:
                yield
            finally:
                held.seconds += time.perf_counter() - began

    broker.db.write_lock.hold = timed
    return held


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def sequence(sequencer: Any, now: datetime, total: int) -> float:
    """Integrate everything queued, a batch at a time; return the seconds taken."""
    began = time.perf_counter()
    done, last_report = 0, began
    while True:
        result = sequencer.integrate_batch(now)
        done += result.integrated
        if time.perf_counter() - last_report > 30:
            last_report = time.perf_counter()
            rate = done / (last_report - began)
            _progress(f"  {done:,} of {total:,} sequenced ({rate:,.0f}/s)")
        if result.integrated < sequencer.batch_size:
            break
    seconds = time.perf_counter() - began
    sequencer.export(now)
    return seconds


def time_proofs(broker: Any, size: int, count: int, checkpoints: list[int], rng: random.Random) -> dict[str, Any]:
    from broker.services import audit_read

    # Wall time, and this process's CPU time: on a busy machine a proof waits for a core now and then, which shows
    # in the wall time's tail but not in the CPU time (the database server's own time is only in the wall time).
    inclusion: list[float] = []
    inclusion_cpu: list[float] = []
    for _ in range(count):
        index = rng.randrange(size)
        began, cpu = time.perf_counter(), time.thread_time()
        audit_read.inclusion(broker, index, size)
        inclusion.append(time.perf_counter() - began)
        inclusion_cpu.append(time.thread_time() - cpu)
    consistency: list[float] = []
    earlier = [c for c in checkpoints if 0 < c < size] or [max(1, size // 2)]
    for _ in range(count):
        first = rng.choice(earlier)
        began = time.perf_counter()
        audit_read.consistency(broker, first, size)
        consistency.append(time.perf_counter() - began)
    return {
        "inclusion_proof": _percentiles(inclusion),
        "inclusion_proof_client_cpu": _percentiles(inclusion_cpu),
        "consistency_proof": _percentiles(consistency),
    }


def check_proofs(broker: Any, size: int, rng: random.Random, samples: int = 50) -> None:
    """A sample of the timed answers, checked against the signed checkpoints (RFC 9162 §2.1.3.2, §2.1.4.2): a
    benchmark of proofs that do not verify would measure nothing."""
    import base64

    from sqlalchemy import select

    from audit.proofs import verify_consistency, verify_inclusion
    from broker.adapters.orm import AuditCheckpointRow, AuditEntryRow, AuditLeafRow
    from broker.services import audit_read

    with broker.uow(write=False) as uow:
        roots = {
            int(s): bytes(r) for s, r in uow.session.execute(select(AuditCheckpointRow.size, AuditCheckpointRow.root))
        }
    root = roots[size]
    for _ in range(samples):
        index = rng.randrange(size)
        proof = audit_read.inclusion(broker, index, size)
        with broker.uow(write=False) as uow:
            found = uow.session.execute(audit_read.positioned().where(AuditLeafRow.idx == index)).one()
        final = place_index(bytes(found.AuditEntryRow.entry), found.AuditEntryRow.split, index)
        assert isinstance(found.AuditEntryRow, AuditEntryRow) and json.loads(final)["index"] == index
        path = [base64.b64decode(h) for h in proof["inclusion_path"]]
        verify_inclusion(hashlib.sha256(b"\x00" + final).digest(), index, size, path, root)
    earlier = [s for s in roots if 0 < s < size]
    for first in rng.sample(earlier, min(samples, len(earlier))):
        proof = audit_read.consistency(broker, first, size)
        path = [base64.b64decode(h) for h in proof["consistency_path"]]
        verify_consistency(first, size, roots[first], root, path)


class WalMeter:
    """Bytes of write-ahead log a transaction wrote. SQLite: the frames in the WAL after it, emptied before
    (frame = page + 24-byte header), exactly this process's writes. PostgreSQL: how far the server's WAL insert
    position moved, which counts every session of the server: a ceiling, exact only on an otherwise idle server."""

    def __init__(self, broker: Any) -> None:
        self.broker = broker
        self._mark: Any = None

    def _scalar(self, statement: str) -> Any:
        with self.broker.db.engine.connect() as connection:
            value = connection.exec_driver_sql(statement).first()
            connection.commit()
        return value

    def start(self) -> None:
        if self.broker.db.sqlite:
            self._scalar("PRAGMA wal_checkpoint(TRUNCATE)")
        else:
            self._mark = self._scalar("SELECT pg_current_wal_insert_lsn()")[0]

    def bytes(self) -> int:
        if self.broker.db.sqlite:
            frames = int(self._scalar("PRAGMA wal_checkpoint(PASSIVE)")[1])
            return frames * (int(self._scalar("PRAGMA page_size")[0]) + 24)
        return int(self._scalar(f"SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '{self._mark}')")[0])


def checkpoint_cost(
    broker: Any, sequencer: Any, entries: PendingEntries, first: int, batch: int, rounds: int, lock: LockClock | None
) -> tuple[dict[str, Any], int]:
    """Append `batch` entries, then time integrating them (one signed checkpoint) and exporting the checkpoint,
    `rounds` times. Returns the figures and the next entry number."""
    sequencer.batch_size = batch
    integrate: list[float] = []
    export: list[float] = []
    held: list[float] = []
    wal: list[int] = []
    meter = WalMeter(broker)
    now = datetime.now(UTC)
    for _ in range(rounds):
        append_pending(broker, entries, first, batch)
        first += batch
        if lock is not None:
            lock.seconds = 0.0
        meter.start()
        began = time.perf_counter()
        result = sequencer.integrate_batch(now)
        integrated = time.perf_counter()
        wal.append(meter.bytes())
        if lock is not None:
            held.append(lock.seconds)  # the batch's write transaction; the export's small write is not counted
        if not sequencer.export(now):
            raise RuntimeError("the new checkpoint was not exported")
        exported = time.perf_counter()
        assert result.integrated == batch, result
        integrate.append(integrated - began)
        export.append(exported - integrated)
        now += timedelta(seconds=1)
    figures: dict[str, Any] = {
        "batch": batch,
        "rounds": rounds,
        "integrate_and_sign": _percentiles(integrate),
        "export_to_sink": _percentiles(export),
        "entries_per_s": round(batch * rounds / sum(integrate)),
        # The batch's whole write transaction (leaves, queue, subtree hashes, head, checkpoint), per entry.
        "wal_bytes_per_entry_median": round(statistics.median(wal) / batch),
        "wal_measure": "sqlite: this transaction's WAL frames" if broker.db.sqlite else "postgres: server-wide WAL",
    }
    if held:
        figures["sqlite_write_lock_held"] = _percentiles(held)
    return figures, first


# --- the run ---------------------------------------------------------------------------------------------------------


def _size_of(broker: Any, workdir: Path) -> int:
    with broker.uow(write=False) as uow:
        if not uow.postgres:
            return sum(p.stat().st_size for p in workdir.glob("broker.db*"))
        total = uow.session.execute(
            text(
                "SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c "
                "WHERE c.relname LIKE 'audit%' AND c.relkind = 'r' AND c.relnamespace = current_schema()::regnamespace"
            )
        ).scalar()
    return int(total or 0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.audit_db", description=__doc__.split("\n")[0])
    parser.add_argument("--entries", type=int, default=DEFAULT_ENTRIES, help="entries in the log (default 1,000,000)")
    parser.add_argument("--batch", type=int, default=10_000, help="sequencer batch while loading (one checkpoint each)")
    parser.add_argument("--proofs", type=int, default=2_000, help="proofs of each kind to time")
    parser.add_argument("--checkpoint-rounds", type=int, default=20, help="timed checkpoints of each batch size")
    parser.add_argument(
        "--postgres",
        metavar="URL",
        help="PostgreSQL database to use, a scratch schema in it dropped afterwards (default: "
        "$BROKER_BENCH_POSTGRES_URL); without either, SQLite in a temporary folder",
    )
    parser.add_argument("--sqlite", action="store_true", help="SQLite even when BROKER_BENCH_POSTGRES_URL is set")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, help="the results file (default bench/results/audit_db-<date>-<backend>…)")
    parser.add_argument("--no-write", action="store_true", help="do not write a results file")
    args = parser.parse_args(argv)
    if args.entries < 2 or args.batch < 1 or args.proofs < 1 or args.checkpoint_rounds < 1:
        parser.error("--entries must be at least 2; --batch, --proofs and --checkpoint-rounds positive")
    postgres = None if args.sqlite else (args.postgres or os.environ.get("BROKER_BENCH_POSTGRES_URL") or None)
    if postgres is not None and not postgres.startswith(("postgresql://", "postgresql+psycopg://")):
        parser.error("--postgres wants a URL like postgresql+psycopg://user@host:5432/database")

    from broker.adapters.database import Database
    from broker.adapters.orm import Base
    from broker.app import build_broker
    from broker.config import Settings
    from broker.services.sequencer import Sequencer

    backend = "postgres" if postgres else "sqlite"
    started = datetime.now(UTC)
    load_before = os.getloadavg()
    workdir = Path(tempfile.mkdtemp(prefix="broker-bench-audit-"))
    schema = None
    broker = None
    try:
        if postgres:
            schema = f"bench_{secrets.token_hex(4)}"
            admin = Database(postgres)
            with admin.engine.begin() as connection:
                connection.execute(text(f'CREATE SCHEMA "{schema}"'))
            admin.dispose()
            separator = "&" if "?" in postgres else "?"
            url = f"{postgres}{separator}options=-csearch_path%3D{schema}"
        else:
            url = f"sqlite:///{workdir / 'broker.db'}"
        db = Database(url)
        Base.metadata.create_all(db.engine)
        db.dispose()
        settings = Settings(
            instance_path=workdir / "instance",
            database_url=url,
            issuer="http://bench.invalid",
            mode="test",
            audit_batch_size=args.batch,
            audit_anchor_window=None,
        )
        settings.instance_path.mkdir(parents=True)
        broker = build_broker(settings)
        entries = PendingEntries(args.seed)
        entries.check([0, 1, POOL - 1, POOL, args.entries - 1])
        figures: dict[str, Any] = {"entries": args.entries}

        _progress(f"appending {args.entries:,} entries in bulk ({backend})…")
        began = time.perf_counter()
        append_pending(broker, entries, 0, args.entries)
        figures["bulk_load_entries_per_s"] = round(args.entries / (time.perf_counter() - began))
        if postgres:
            with broker.uow() as uow:  # as autovacuum would, before the sequencer reads its queue
                uow.session.execute(text("ANALYZE audit_entries"))
                uow.session.execute(text("ANALYZE audit_pending"))
                uow.commit()

        _progress(f"sequencing in batches of {args.batch:,}…")
        sequencer = Sequencer(broker)
        seconds = sequence(sequencer, T0 + timedelta(days=1), args.entries)
        figures["sequencer"] = {"batch": args.batch, "seconds": round(seconds, 1)}
        figures["sequencer"]["entries_per_s"] = round(args.entries / seconds)
        _progress(f"  {args.entries:,} entries in {seconds:.1f} s: {args.entries / seconds:,.0f} entries/s")
        if postgres:
            # What autovacuum does soon after a bulk load: the queue's index still holds the millions of entries
            # the sequencer took off it, and every read of the queue walks them until a vacuum removes them.
            with broker.db.engine.connect() as connection:
                connection.execution_options(isolation_level="AUTOCOMMIT")
                connection.exec_driver_sql("VACUUM (ANALYZE) audit_pending")
                connection.exec_driver_sql("ANALYZE")

        size = args.entries
        rng = random.Random(args.seed)
        checkpoints = list(range(args.batch, size, args.batch))
        _progress(f"timing {args.proofs:,} inclusion and consistency proofs at {size:,}…")
        time_proofs(broker, size, min(200, args.proofs), checkpoints, rng)  # warm-up, not counted
        figures.update(time_proofs(broker, size, args.proofs, checkpoints, rng))
        check_proofs(broker, size, rng)
        inclusion, cpu = figures["inclusion_proof"], figures["inclusion_proof_client_cpu"]
        consistency = figures["consistency_proof"]
        _progress(
            f"  inclusion: p50 {inclusion['p50_ms']} ms, p95 {inclusion['p95_ms']} ms, p99 {inclusion['p99_ms']} ms, "
            f"max {inclusion['max_ms']} ms (target p99 ≤ {TARGET_MS} ms; this process's CPU: "
            f"p50 {cpu['p50_ms']} ms, p99 {cpu['p99_ms']} ms); "
            f"consistency: p50 {consistency['p50_ms']} ms, p99 {consistency['p99_ms']} ms"
        )

        _progress("timing checkpoints on the full log…")
        lock = None if postgres else clock_lock(broker)
        figures["checkpoint"] = []
        following = size
        for batch, rounds in ((256, args.checkpoint_rounds), (10_000, max(3, args.checkpoint_rounds // 4))):
            result, following = checkpoint_cost(broker, sequencer, entries, following, batch, rounds, lock)
            figures["checkpoint"].append(result)
            held = result.get("sqlite_write_lock_held")
            _progress(
                f"  batch {batch:,}: integrate and sign p50 {result['integrate_and_sign']['p50_ms']} ms "
                f"(max {result['integrate_and_sign']['max_ms']} ms), "
                f"export p50 {result['export_to_sink']['p50_ms']} ms, "
                f"WAL {result['wal_bytes_per_entry_median']} B/entry"
                + (f", write lock held p50 {held['p50_ms']} ms (max {held['max_ms']} ms)" if held else "")
            )
        figures["database_bytes"] = _size_of(broker, workdir)
        meets = inclusion["p99_ms"] <= TARGET_MS
        _progress(f"inclusion proof p99 {'meets' if meets else 'is ABOVE'} the target of {TARGET_MS} ms")

        document = {
            "benchmark": "audit_db",
            "date": started.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "command": "python -m bench.audit_db " + " ".join(argv if argv is not None else sys.argv[1:]),
            "machine": machine_info(),
            "load_average_1_5_15min": {
                "before": [round(x, 2) for x in load_before],
                "after": [round(x, 2) for x in os.getloadavg()],
            },
            "backend": backend,
            "elapsed_s": round((datetime.now(UTC) - started).total_seconds()),
            "results": figures,
            "target_inclusion_p99_ms": TARGET_MS,
            "meets_target": meets,
        }
        if not args.no_write:
            suffix = "" if args.entries == DEFAULT_ENTRIES else f"-{args.entries}"
            out = args.out or RESULTS / f"audit_db-{started:%Y-%m-%d}-{backend}{suffix}.json"
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(document, indent=2) + "\n")
            _progress(f"results: {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
        return 0
    finally:
        if broker is not None:
            broker.db.dispose()
        if schema and postgres:
            admin = Database(postgres)
            with admin.engine.begin() as connection:
                connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
            admin.dispose()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
