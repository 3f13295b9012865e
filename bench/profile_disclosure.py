"""Profile the disclosure path in one process (no HTTP server): a fresh demo instance in a temporary folder,
the broker's WSGI app driven by Flask's test client, N disclosures of Mikko's work assessment to
`varha-health`, under pyinstrument (`pip install pyinstrument`; not a dependency of the broker).

    python -m bench.profile_disclosure [-n 2000] [--html out.html] [--no-profile] [--rounds 5]

Shows where the Python time of one request goes (auth, ORM, policy, crypto, audit, serialisation, commit).
Without `--no-profile` pyinstrument's tree is printed; with it, `--rounds` timed rounds of `-n` requests each.
Either way, per request: the wall time, the process's CPU time, and how long the SQLite write lock was held —
wall (including the commit's fsync) and CPU (the Python and SQLite work that serialises every writer: the
disclosure rate over HTTP is bounded by 1 / the time the lock is held). With `--no-profile` the figures are the
median round's, and the fastest round's too; under pyinstrument they include the profiler's overhead.
What it does not show: gunicorn's request parsing and the wait for the lock held by the other worker —
profile a served worker with py-spy for those (docs/benchmarks.md).

Each request carries its own DPoP proof (RFC 9449), as over HTTP; the proofs are signed before each round (and
before the profiler starts), so that the partner's signing is not counted as the broker's time.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.http_disclosure import ASK, PARTNER, PERSON, DpopKey


@dataclass
class LockTimes:
    """Time the write lock was held, summed over every hold (one per write unit of work)."""

    holds: int = 0
    wall_ns: int = 0
    cpu_ns: int = 0


def measure_lock(write_lock: Any) -> LockTimes:
    """Wrap `write_lock.hold` (the instance's) to add up the wall and CPU time between acquiring and releasing."""
    times = LockTimes()
    hold: Callable[[], contextlib.AbstractContextManager[None]] = write_lock.hold

    @contextlib.contextmanager
    def timed() -> Iterator[None]:
        with hold():
            wall, cpu = time.perf_counter_ns(), time.thread_time_ns()
            try:
                yield
            finally:
                times.wall_ns += time.perf_counter_ns() - wall
                times.cpu_ns += time.thread_time_ns() - cpu
                times.holds += 1

    write_lock.hold = timed
    return times


def server_cpu_ns() -> int:
    """CPU time of every PostgreSQL server process on this machine so far (backends, WAL writer, …): what a
    disclosure costs the database server when it runs beside the broker."""
    from bench.harness import cpu_sample

    return cpu_sample()["postgres"]


@dataclass
class Round:
    n: int
    wall_ns: int
    cpu_ns: int
    lock: LockTimes
    server_ns: int = 0

    def per_request_us(self) -> dict[str, float]:
        return {
            "wall": self.wall_ns / self.n / 1000,
            "cpu": self.cpu_ns / self.n / 1000,
            "lock_wall": self.lock.wall_ns / self.n / 1000,
            "lock_cpu": self.lock.cpu_ns / self.n / 1000,
            "lock_holds": self.lock.holds / self.n,
            "server_cpu": self.server_ns / self.n / 1000,
        }


def report(label: str, figures: dict[str, float]) -> str:
    if figures.get("server_cpu"):
        return (
            f"{label}: {figures['wall']:.0f} µs wall, {figures['cpu']:.0f} µs CPU per request; PostgreSQL's "
            f"processes {figures['server_cpu']:.0f} µs CPU"
        )
    return (
        f"{label}: {figures['wall']:.0f} µs wall, {figures['cpu']:.0f} µs CPU per request; write lock held "
        f"{figures['lock_wall']:.0f} µs wall, {figures['lock_cpu']:.0f} µs CPU ({figures['lock_holds']:.2f} holds)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile_disclosure")
    parser.add_argument("-n", type=int, default=2000, help="disclosures to profile (default 2000)")
    parser.add_argument("--html", type=Path, help="also write pyinstrument's HTML report here")
    parser.add_argument("--no-profile", action="store_true", help="only time the requests")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds of -n requests with --no-profile")
    parser.add_argument(
        "--cprofile",
        type=int,
        metavar="N",
        help="profile with cProfile instead (deterministic, every call) and print the N costliest functions by "
        "own time, then by cumulative time",
    )
    parser.add_argument(
        "--stats", type=Path, metavar="FILE", help="with --cprofile, also write the raw statistics here (pstats)"
    )
    parser.add_argument(
        "--postgres",
        metavar="URL",
        help="run on a fresh PostgreSQL database on this server (created and dropped) instead of SQLite",
    )
    parser.add_argument(
        "--trace",
        action="store_true",
        help="print the statements one disclosure sends to the database driver (and the connection checkouts), "
        "then stop",
    )
    args = parser.parse_args(argv)

    workdir = Path(tempfile.mkdtemp(prefix="broker-profile-"))
    with contextlib.ExitStack() as stack:
        database_url = None
        if args.postgres:
            from bench.harness import scratch_database

            database_url = stack.enter_context(scratch_database(args.postgres, "profile"))
        try:
            return _profile(args, workdir, database_url)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)


def _profile(args: argparse.Namespace, workdir: Path, database_url: str | None) -> int:
    if True:
        os.environ.update(
            BROKER_MODE="demo",
            BROKER_INSTANCE_PATH=str(workdir / "instance"),
            BROKER_ISSUER="http://127.0.0.1:8000",
            # A round's proofs are all signed before it starts: the longest proof window, so that a long round
            # (a large -n, or under the profiler) does not outlive them. The window costs nothing per request.
            BROKER_DPOP_MAX_AGE="600",
        )
        os.environ["BROKER_RATE_LIMITS"] = "off"  # thousands of disclosures by one partner, by design
        if database_url:
            os.environ["BROKER_DATABASE_URL"] = database_url
        else:
            os.environ.pop("BROKER_DATABASE_URL", None)

        from broker.app import create_app
        from broker.config import Settings
        from broker.demo import create_demo
        from broker.oauth.dpop import DpopRequest
        from broker.oauth.tokens import ClientCredentials, issue_access_token

        settings = Settings.from_env()
        create_demo(settings)
        demo = json.loads((settings.instance_path / "demo.json").read_text())
        person_id = next(p["person_id"] for p in demo["persons"] if p["name"] == PERSON)
        app = create_app(settings)
        broker = app.extensions["broker"]

        from bench.http_disclosure import build_assertion

        partner = next(p for p in demo["partners"] if p["client_id"] == PARTNER)
        assertion = build_assertion(settings.instance_path, partner, settings.issuer)
        from broker.oauth.tokens import ASSERTION_TYPE

        dpop = DpopKey()
        token_url = f"{settings.issuer}/oauth/token"
        issued = issue_access_token(
            broker,
            ClientCredentials(client_assertion_type=ASSERTION_TYPE, client_assertion=assertion, client_id=None),
            grant_type="client_credentials",
            scope="disclosures",
            dpop=DpopRequest(proofs=tuple(dpop.proofs("POST", token_url, 1)), method="POST", url=token_url),
        )
        client = app.test_client()
        token = issued.access_token
        url = f"{settings.issuer}/api/v1/disclosures"
        body = {"person_id": person_id, **ASK}
        proofs: list[str] = []

        def sign(n: int) -> None:
            """Sign the next `n` requests' proofs (outside the measured time)."""
            proofs[:] = dpop.proofs("POST", url, n, token)

        def run(n: int) -> None:
            for proof in proofs[:n]:
                headers = {"Authorization": f"DPoP {token}", "DPoP": proof}
                response = client.post("/api/v1/disclosures", json=body, headers=headers)
                if response.status_code != 200:
                    raise SystemExit(f"{response.status_code} {response.get_data(as_text=True)}")

        lock = measure_lock(broker.db.write_lock)

        def timed_round(n: int, *, signed: bool = False) -> Round:
            if not signed:
                sign(n)
            lock.holds = lock.wall_ns = lock.cpu_ns = 0
            server = server_cpu_ns() if database_url else 0
            wall, cpu = time.perf_counter_ns(), time.process_time_ns()
            run(n)
            wall, cpu = time.perf_counter_ns() - wall, time.process_time_ns() - cpu
            server = server_cpu_ns() - server if database_url else 0
            return Round(n, wall, cpu, LockTimes(**vars(lock)), server)

        sign(50)
        run(50)  # warm-up
        if args.trace:
            wal = WalFrames(broker.db.engine) if not database_url else None
            sign(1)
            with trace_driver(broker.db.engine) as statements:
                if wal is not None:
                    wal.__enter__()
                run(1)
            for line in statements:
                print(line)
            print(f"{sum(not s.startswith('--') for s in statements)} statements")
            if wal is not None:
                print(f"{wal.frames()} pages written to the WAL by the disclosure's commit")
            return 0
        if args.no_profile:
            rounds = [timed_round(args.n).per_request_us() for _ in range(args.rounds)]
            for i, figures in enumerate(rounds, 1):
                print(report(f"round {i}", figures))
            print(report("median", {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}))
            print(report("fastest", {key: min(r[key] for r in rounds) for key in rounds[0]}))
            return 0
        if args.cprofile:
            import cProfile
            import pstats

            sign(args.n)
            deterministic = cProfile.Profile()
            deterministic.enable()
            measured = timed_round(args.n, signed=True)
            deterministic.disable()
            if args.stats:
                deterministic.dump_stats(args.stats)
            print_by_package(pstats.Stats(deterministic), args.cprofile)
            stats = pstats.Stats(deterministic).strip_dirs()
            stats.sort_stats("tottime").print_stats(args.cprofile)
            stats.sort_stats("cumtime").print_stats(args.cprofile)
            print(report(f"{args.n} disclosures, under cProfile", measured.per_request_us()))
            return 0
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.0005)
        sign(args.n)
        profiler.start()
        measured = timed_round(args.n, signed=True)
        profiler.stop()
        print(profiler.output_text(unicode=True, color=False, show_all=False))
        if args.html:
            args.html.write_text(profiler.output_html())
        print(report(f"{args.n} disclosures, under the profiler", measured.per_request_us()))
        return 0


def print_by_package(stats: Any, limit: int) -> None:
    """Own time summed by where the code lives: an installed distribution (flask, sqlalchemy, …), a folder of this
    project (broker/services, audit, …), the standard library, or a built-in — which layer a request's time goes to."""
    root = str(Path(__file__).resolve().parents[1]) + "/"
    own: dict[str, float] = {}
    for (file, _line, function), (_cc, _nc, tottime, _ct, _callers) in stats.stats.items():
        if "site-packages/" in file:
            key = file.split("site-packages/", 1)[1].split("/", 1)[0]
        elif file.startswith(root):
            key = "/".join(file.removeprefix(root).split("/")[:2])
        elif file == "~":
            key = f"built-in {function}"
        else:
            key = "standard library"
        own[key] = own.get(key, 0.0) + tottime
    total = sum(own.values()) or 1.0
    print("own time by package:")
    for key, seconds in sorted(own.items(), key=lambda item: -item[1])[:limit]:
        print(f"  {seconds / total * 100:5.1f} %  {key}")


class WalFrames:
    """SQLite: how many pages (WAL frames) a piece of work commits. Entering empties the WAL (a TRUNCATE
    checkpoint); `frames()` reads the WAL file's size afterwards (WAL format: a 32-byte header, then per frame a
    24-byte header and one page; sqlite.org/fileformat.html §4.1)."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.path = Path(engine.url.database + "-wal")

    def __enter__(self) -> None:
        with self.engine.connect() as connection:
            connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
            self.page = connection.exec_driver_sql("PRAGMA page_size").scalar()

    def frames(self) -> int:
        size = self.path.stat().st_size if self.path.exists() else 0
        return max(0, size - 32) // (self.page + 24)


@contextlib.contextmanager
def trace_driver(engine: Any) -> Iterator[list[str]]:
    """Every statement sent to the driver while inside (whether through SQLAlchemy or `Prepared`, which calls the
    driver's cursor itself), in order, with the pool's checkouts and SQLAlchemy's transaction events marked."""
    from sqlalchemy import event

    seen: list[str] = []
    patched: list[tuple[type, str, Any]] = []

    def wrap(cls: type, name: str) -> None:
        original = getattr(cls, name)

        def traced(self: Any, query: Any, *rest: Any, **kw: Any) -> Any:
            text = query.decode() if isinstance(query, bytes) else query
            text = text if isinstance(text, str) else getattr(text, "as_string", lambda _c=None: repr(text))()
            seen.append(" ".join(str(text).split())[:160])
            return original(self, query, *rest, **kw)

        patched.append((cls, name, original))
        setattr(cls, name, traced)

    if engine.dialect.name == "sqlite":
        import sqlite3

        # sqlite3's types cannot be patched: the connections are wrapped by a trace callback instead.
        def on_checkout(dbapi_connection: Any, *_: Any) -> None:
            seen.append("-- checkout")
            dbapi_connection.set_trace_callback(lambda sql: seen.append(" ".join(sql.split())[:160]))

        event.listen(engine, "checkout", on_checkout)
        del sqlite3
    else:
        import psycopg
        from psycopg._connection_base import BaseConnection

        wrap(psycopg.Cursor, "execute")
        wrap(psycopg.Connection, "execute")
        wrap(BaseConnection, "_exec_command")  # BEGIN, COMMIT, ROLLBACK: psycopg's own round trips
        event.listen(engine, "checkout", lambda *_: seen.append("-- checkout"))
    try:
        yield seen
    finally:
        for cls, name, original in patched:
            setattr(cls, name, original)
        if engine.dialect.name == "sqlite":
            event.remove(engine, "checkout", on_checkout)


if __name__ == "__main__":
    sys.exit(main())
