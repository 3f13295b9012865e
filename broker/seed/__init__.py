"""`broker bench seed`: fill a broker's database with persons at national scale, for the benchmarks of issue #7.

On top of a demo instance (`broker demo --no-serve`: the reference deployment's organisations, partner systems and
keys), with the settings `broker serve` uses (BROKER_DATABASE_URL, BROKER_INSTANCE_PATH, BROKER_MODE), it adds N
persons with their service relationships, consents (some withdrawn, some expired) and their history, records,
disclosures and notices, and `--entries-per-person` audit entries each (broker/seed/people.py), then integrates
the entries into the log with the sequencer's own code and exports the newest checkpoint, so that `broker audit
verify` passes. `--manifest` lists persons ready for the benchmark's disclosure.

How it runs. Persons are made in chunks (`--chunk`, default 2,000) by worker processes (`--workers`): making them is
CPU work — sealing identity codes, records and notices, deciding disclosures, encoding entries — that runs in
parallel. Each chunk is written by its worker in one transaction (broker/seed/bulk.py: COPY on PostgreSQL), and the
chunks commit in order, one at a time. Meanwhile this process runs the sequencer over the committed entries, a
batch of `--batch` (default 50,000) and one signed checkpoint at a time.

A second run adds more persons. Persons are numbered across runs: a run starts at the number of persons in the
database, and a person's identity code is a bijection of that number (people.identity_code), so codes never
repeat; identifiers are 128-bit values drawn from (seed, number). A run that stops part-way has committed a
prefix of its chunks, each whole (every person with all their rows and entries, every disclosure with its entry);
their entries are sequenced by the next run or by a served broker's sequencer, and a rerun adds its persons after
them. Two runs at once on one database are not supported (the second fails on the unique identity-code index).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, SQLAlchemyError

from broker.config import Settings
from broker.seed.people import (
    BENCH_CATEGORY,
    BENCH_PARTNER,
    BENCH_PURPOSE,
    BENCH_SOURCE,
    CODE_SPACE,
    ORG_ROLE,
    ORG_TYPE,
    PersonFactory,
)
from broker.seed.progress import Progress

__all__ = ["MIN_ENTRIES", "SeedError", "SeedOptions", "SeedResult", "check_options", "seed_persons"]

# Resolve, two service relationships, a record and a consent: the least history a person of any path has.
MIN_ENTRIES = 5
MAX_ENTRIES = 1_000


class SeedError(Exception):
    """The seed cannot run or did not finish; the message says why and what to do."""


@dataclass(frozen=True)
class SeedOptions:
    persons: int
    entries_per_person: int = 10
    seed: int = 1
    sample: int = 10_000
    manifest: Path | None = None
    workers: int = 2
    chunk: int = 2_000
    batch: int = 50_000
    now: datetime | None = None  # the end of the seeded history; default: the time the seed starts


@dataclass
class SeedResult:
    first_ordinal: int
    counts: Counter[str]
    eligible: int
    sampled: int
    log_size: int
    seconds: dict[str, float] = field(default_factory=dict)  # wall-clock time of the phases
    worker_seconds: dict[str, float] = field(default_factory=dict)  # summed over the workers' chunks
    sequencer_seconds: float = 0.0  # wall-clock time this process spent integrating, during the load and after
    sequencer_cpu_seconds: float = 0.0  # … and this process's CPU time in it (the database's is not counted)
    manifest: Path | None = None


def check_options(options: SeedOptions) -> None:
    """Raise SeedError naming the first option that is out of range."""
    bounds = (
        ("--persons", options.persons, 1, CODE_SPACE),
        ("--entries-per-person", options.entries_per_person, MIN_ENTRIES, MAX_ENTRIES),
        ("--sample", options.sample, 0, 10_000_000),
        ("--workers", options.workers, 1, 64),
        ("--chunk", options.chunk, 1, 100_000),
        ("--batch", options.batch, 1, 1_000_000),
    )
    for name, value, low, high in bounds:
        if not low <= value <= high:
            raise SeedError(f"{name} must be from {low:,} to {high:,}, not {value:,}")
    if options.now is not None:
        if options.now.tzinfo is None:
            raise SeedError("--now must name its UTC offset")
        if options.now > datetime.now(UTC) + timedelta(minutes=5):
            raise SeedError("--now must not be in the future: the log would hold entries logged later than now")
    if options.manifest is not None:
        if options.manifest.is_dir():
            raise SeedError(f"--manifest {options.manifest} is a folder; give a file name")
        if not options.manifest.parent.is_dir():
            raise SeedError(f"--manifest {options.manifest}: the folder {options.manifest.parent} does not exist")


def check_instance(settings: Settings) -> None:
    """Refuse what is not a demo or test instance, before anything is opened (opening a missing SQLite file would
    create it, and a broker outside production creates missing keys)."""
    if settings.mode == "production":
        raise SeedError(
            "bench seed writes fictional persons for benchmarks: run it on a demo instance (BROKER_MODE=demo), "
            "never on a production database"
        )
    create = "create it first: BROKER_MODE=demo broker demo --no-serve"
    if not settings.keys_path.is_dir():
        raise SeedError(f"the instance folder {settings.instance_path} has no key store (keys/): {create}")
    try:
        url = make_url(settings.database_url)
    except ArgumentError:
        raise SeedError("BROKER_DATABASE_URL is not a database URL") from None
    backend = url.get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise SeedError(f"bench seed works on SQLite and PostgreSQL, not {backend}")
    if backend == "sqlite" and (not url.database or not Path(url.database).is_file()):
        raise SeedError(f"no SQLite database at {url.database or '(none)'}: {create}")


def seed_persons(settings: Settings, options: SeedOptions, progress: Progress | None = None) -> SeedResult:
    check_options(options)
    check_instance(settings)
    from broker.adapters.checkpoint_sink import SinkConflict, SinkError
    from broker.app import build_broker, record_policy_version
    from broker.services.sequencer import Sequencer, SequencerHalted

    progress = progress or Progress()
    broker = build_broker(replace(settings, audit_batch_size=options.batch))
    try:
        first, names = _check_database(broker, options)
        try:
            record_policy_version(broker)
            sequencer = Sequencer(broker)
            sequencer.check_against_sink()
        except (SequencerHalted, SinkError) as error:
            raise SeedError(f"the log cannot be extended: {error}; run `broker audit verify`") from None
        now = options.now or broker.clock.now()
        result = SeedResult(first_ordinal=first, counts=Counter(), eligible=0, sampled=0, log_size=0)
        sample = _Sample(options.sample, options.seed)
        started = time.monotonic()
        _run_workers(settings, options, names, now, first, broker.policy.version, sequencer, progress, result, sample)
        result.seconds["persons"] = round(time.monotonic() - started, 1)

        began = time.monotonic()
        try:
            _sequence(sequencer, progress, result, final=True)
            result.seconds["sequencing_after_load"] = round(time.monotonic() - began, 1)
            began = time.monotonic()
            sequencer.export(broker.clock.now())
        except (SQLAlchemyError, SinkError, SinkConflict, SequencerHalted) as error:
            raise SeedError(
                f"all {options.persons:,} persons were committed, but sequencing or exporting the log failed "
                f"({_first_line(error)}); `broker audit sequence --once` finishes it"
            ) from None
        result.seconds["export"] = round(time.monotonic() - began, 1)
        if not broker.db.sqlite:
            # The sequencer took every seeded entry off `audit_pending`; until a vacuum removes them, each read of
            # the queue walks millions of dead index entries (a batch of 256 took 84 ms instead of 6 at 10,000,000
            # entries, bench/audit_db.py). Done here as autovacuum would do it later; VACUUM needs autocommit.
            began = time.monotonic()
            with broker.db.engine.connect() as connection:
                connection.execution_options(isolation_level="AUTOCOMMIT")
                connection.exec_driver_sql("VACUUM (ANALYZE) audit_pending")
            result.seconds["vacuum"] = round(time.monotonic() - began, 1)
        result.seconds["total"] = round(time.monotonic() - started, 1)
        result.eligible = sample.seen
        result.sampled = len(sample.chosen)
        if options.manifest is not None:
            _write_manifest(options, settings, broker.policy.version, now, result, sample)
            result.manifest = options.manifest
        return result
    finally:
        progress.close()
        broker.db.dispose()


# -- checks --------------------------------------------------------------------------------------------------------


def _check_database(broker: Any, options: SeedOptions) -> tuple[int, dict[str, str]]:
    """The demo's organisations and partners must be there, and the benchmark partner's key. Returns the first
    person number of this run and the organisations' names."""
    from broker.adapters.orm import OrganisationRow, PartnerRow, PersonRow

    create = "run `BROKER_MODE=demo broker demo --no-serve` on this instance first"
    try:
        with broker.uow(write=False) as uow:
            names = dict(uow.session.execute(select(OrganisationRow.id, OrganisationRow.name)).all())
            partners = set(uow.session.scalars(select(PartnerRow.client_id).where(PartnerRow.active.is_(True))))
            persons = int(uow.session.scalar(select(func.count()).select_from(PersonRow)) or 0)
    except SQLAlchemyError as error:
        raise SeedError(
            f"cannot read the broker's tables in the configured database ({_first_line(error)}): "
            f"check BROKER_DATABASE_URL, or {create}"
        ) from None
    missing = [org for org in ORG_TYPE if org not in names]
    if missing:
        raise SeedError(f"the demo's organisations are missing ({', '.join(missing)}): {create}")
    missing = [org for org in ORG_TYPE if org not in partners]
    if missing:
        raise SeedError(f"the demo's partner systems are missing ({', '.join(missing)}): {create}")
    key = broker.settings.instance_path / "partners" / f"{BENCH_PARTNER}.jwk"
    if not key.is_file():
        raise SeedError(f"the benchmark partner's key partners/{BENCH_PARTNER}.jwk is not in the instance: {create}")
    if persons + options.persons > CODE_SPACE:
        raise SeedError(
            f"the database has {persons:,} persons; seeded identity codes run out at {CODE_SPACE:,} persons in all"
        )
    return persons, names


def _first_line(error: BaseException) -> str:
    """The driver's message, first line only (never the statement or its parameters)."""
    origin = error.orig if isinstance(error, DBAPIError) and error.orig is not None else error
    text = str(origin).strip().splitlines()
    return (text[0] if text else type(origin).__name__)[:300]


# -- the workers -----------------------------------------------------------------------------------------------------


@dataclass
class ChunkReport:
    index: int
    persons: int
    entries: int
    counts: Counter[str]
    eligible: list[dict[str, Any]]
    seconds: dict[str, float]  # the worker's time making the chunk, waiting for its turn, and writing it


class _Worker:
    def __init__(
        self,
        settings: Settings,
        options: SeedOptions,
        names: dict[str, str],
        now: datetime,
        policy_version: str,
        shared: Any,
    ) -> None:
        from broker.adapters.keystore import KeyStore
        from broker.seed.bulk import ChunkWriter
        from policies import load_policy

        policy = load_policy()
        if policy.version != policy_version:
            raise SeedError("the policy files changed while the seed started; run it again")
        self.factory = PersonFactory(
            keys=KeyStore.open(settings.keys_path),
            policy=policy,
            names=names,
            seed=options.seed,
            now=now,
            entries_per_person=options.entries_per_person,
        )
        self.writer = ChunkWriter(settings.database_url)
        self.turn, self.condition, self.abort = shared

    def run(self, index: int, first: int, count: int) -> ChunkReport:
        try:
            began, began_cpu = time.perf_counter(), time.process_time()
            rows = self.factory.chunk(first, count)
            made, made_cpu = time.perf_counter(), time.process_time()
            # Chunks commit in order, so that whatever happens the committed persons are a prefix of the run.
            with self.condition:
                while self.turn.value != index:
                    if self.abort.is_set():
                        raise SeedError("stopped: an earlier chunk failed")
                    self.condition.wait(0.5)
            turn, turn_cpu = time.perf_counter(), time.process_time()
            try:
                self.writer.write(rows)
            except SQLAlchemyError as error:
                persons = f"persons {first:,}–{first + count - 1:,}"
                raise SeedError(f"writing {persons} failed: {_first_line(error)}") from None
            with self.condition:
                self.turn.value = index + 1
                self.condition.notify_all()
        except BaseException:
            self.abort.set()
            with self.condition:
                self.condition.notify_all()
            raise
        written, written_cpu = time.perf_counter(), time.process_time()
        seconds = {
            "making": made - began,
            "making_cpu": made_cpu - began_cpu,
            "waiting": turn - made,
            "writing": written - turn,
            "writing_cpu": written_cpu - turn_cpu,
        }
        return ChunkReport(index, count, len(rows.entries), rows.counts, rows.eligible, seconds)


_WORKER: _Worker | None = None


def _start_worker(
    settings: Settings, options: SeedOptions, names: dict[str, str], now: datetime, policy_version: str, *shared: Any
) -> None:
    global _WORKER
    # Ctrl-C reaches the whole process group: the main process handles it and ends the workers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _WORKER = _Worker(settings, options, names, now, policy_version, shared)


def _seed_chunk(index: int, first: int, count: int) -> ChunkReport:
    assert _WORKER is not None
    return _WORKER.run(index, first, count)


def _run_workers(
    settings: Settings,
    options: SeedOptions,
    names: dict[str, str],
    now: datetime,
    first: int,
    policy_version: str,
    sequencer: Any,
    progress: Progress,
    result: SeedResult,
    sample: _Sample,
) -> None:
    # Spawned, not forked: the workers open their own connections and inherit none of this process's.
    context = multiprocessing.get_context("spawn")
    turn = context.RawValue("q", 0)
    condition = context.Condition()
    abort = context.Event()
    starts = range(0, options.persons, options.chunk)
    chunks = [(i, first + start, min(options.chunk, options.persons - start)) for i, start in enumerate(starts)]
    persons = progress.start("persons", options.persons, "persons")
    result.counts["_committed_entries"] = 0
    pool = context.Pool(
        processes=min(options.workers, len(chunks)),
        initializer=_start_worker,
        initargs=(settings, options, names, now, policy_version, turn, condition, abort),
    )

    def stop(signum: int, _frame: Any) -> None:
        raise SeedError(f"stopped by signal {signal.Signals(signum).name}")

    # Stopped from outside (a service manager's SIGTERM), the seed ends its workers as on Ctrl-C: the chunk being
    # written rolls back and the committed ones stay.
    previous = signal.signal(signal.SIGTERM, stop)
    try:
        tasks = [pool.apply_async(_seed_chunk, chunk) for chunk in chunks]
        for task in tasks:
            while True:
                try:
                    report: ChunkReport = task.get(timeout=0.2)
                    break
                except multiprocessing.TimeoutError:
                    if result.counts["_committed_entries"] - result.counts["_integrated"] >= options.batch:
                        _sequence(sequencer, progress, result, final=False)
                    progress.show()
            result.counts.update(report.counts)
            for name, seconds in report.seconds.items():
                result.worker_seconds[name] = result.worker_seconds.get(name, 0.0) + seconds
            result.counts["_committed_entries"] += report.entries
            for person in report.eligible:
                sample.offer(person)
            progress.advance(persons, report.persons)
        pool.close()
    except BaseException as error:
        abort.set()
        pool.terminate()
        pool.join()
        committed = min(turn.value * options.chunk, options.persons)
        if isinstance(error, SeedError):
            message = str(error)
        elif isinstance(error, KeyboardInterrupt):
            message = "interrupted"
        else:
            message = f"{type(error).__name__}: {_first_line(error)}"
        raise SeedError(
            f"{message}. {committed:,} of the {options.persons:,} persons were committed (whole chunks, each person "
            "with all their rows and entries); entries not yet in the tree are sequenced by the next run or by the "
            "served broker (`broker audit sequence --once`); a rerun adds its persons after them"
        ) from None
    finally:
        signal.signal(signal.SIGTERM, previous)
    pool.join()
    progress.finish(persons)


def _sequence(sequencer: Any, progress: Progress, result: SeedResult, *, final: bool) -> None:
    """Integrate committed entries into the tree with the sequencer's own code, a batch and one checkpoint at a
    time: while the workers load (`final` False) one batch, at the end everything pending."""
    phase = next((p for p in progress.phases if p.name == "sequencing"), None)
    if phase is None:
        phase = progress.start("sequencing", result.counts["_committed_entries"], "entries")
    phase.total = max(phase.total, result.counts["_committed_entries"])
    now = sequencer.broker.clock.now
    while True:
        for attempt in range(3):
            try:
                began, began_cpu = time.perf_counter(), time.process_time()
                batch = sequencer.integrate_batch(now())
                result.sequencer_seconds += time.perf_counter() - began
                result.sequencer_cpu_seconds += time.process_time() - began_cpu
                break
            except RuntimeError:  # a served broker's sequencer moved the head meanwhile: read it again
                if attempt == 2:
                    raise
                time.sleep(0.5)
        result.counts["_integrated"] += batch.integrated
        result.log_size = batch.size
        progress.advance(phase, batch.integrated)
        if not final or batch.integrated == 0:
            break
    if final:
        progress.finish(phase)


# -- the manifest ---------------------------------------------------------------------------------------------------


class _Sample:
    """A uniform sample of the benchmark-ready persons (reservoir sampling, Vitter's algorithm R), reproducible
    from the seed: chunks report in order."""

    def __init__(self, size: int, seed: int) -> None:
        import random

        self.size = size
        self.rng = random.Random(f"broker-seed/{seed}/sample")  # noqa: S311  # nosec B311  # a sample, no secret
        self.chosen: list[dict[str, Any]] = []
        self.seen = 0

    def offer(self, item: dict[str, Any]) -> None:
        self.seen += 1
        if len(self.chosen) < self.size:
            self.chosen.append(item)
        else:
            slot = self.rng.randrange(self.seen)
            if slot < self.size:
                self.chosen[slot] = item


def _write_manifest(
    options: SeedOptions,
    settings: Settings,
    policy_version: str,
    now: datetime,
    result: SeedResult,
    sample: _Sample,
) -> None:
    assert options.manifest is not None
    counts = {k: v for k, v in sorted(result.counts.items()) if not k.startswith(("_", "entries:", "path:"))}
    document = {
        "version": 1,
        "seeded_at": now.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "seed": options.seed,
        "backend": make_url(settings.database_url).get_backend_name(),
        "issuer": settings.issuer,
        "policy_version": policy_version,
        "first_person_number": result.first_ordinal,
        "entries_per_person": options.entries_per_person,
        "counts": counts,
        "entries_by_event": _prefixed(result.counts, "entries:"),
        "persons_by_path": _prefixed(result.counts, "path:"),
        "log_size": result.log_size,
        "seconds": result.seconds,
        "worker_seconds": {name: round(value, 1) for name, value in result.worker_seconds.items()},
        "sequencer_seconds": round(result.sequencer_seconds, 1),
        "sequencer_cpu_seconds": round(result.sequencer_cpu_seconds, 1),
        # What a partner needs for POST /api/v1/disclosures (docs/api.md): the health centre asks for the work
        # assessment on the person's consent (flows.md F7), as in the demo for Mikko Laine.
        "disclosure": {
            "client_id": BENCH_PARTNER,
            "organisation": BENCH_PARTNER,
            "org_type": ORG_TYPE[BENCH_PARTNER],
            "key_file": f"partners/{BENCH_PARTNER}.jwk",
            "alg": "Ed25519",
            "actor": {"sub": f"{BENCH_PARTNER}-staff-001", "role": ORG_ROLE[BENCH_PARTNER]},
            "scope": "disclosures",
            "method": "POST",
            "path": "/api/v1/disclosures",
            "body": {"category": BENCH_CATEGORY, "purpose": BENCH_PURPOSE},
            "source_organisation": BENCH_SOURCE,
        },
        "benchmark_ready": sample.seen,
        "persons": sorted(sample.chosen, key=lambda p: p["person_id"]),
    }
    path = options.manifest
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(document, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    temporary.replace(path)


def _prefixed(counts: Counter[str], prefix: str) -> dict[str, int]:
    return {name[len(prefix) :]: value for name, value in sorted(counts.items()) if name.startswith(prefix)}
