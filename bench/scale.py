"""`make bench-scale`: the latency of a disclosure over HTTP at 10,000 and at 1,000,000 persons, on PostgreSQL.

Issue #7: disclosure p99 at 1,000,000 persons ≤ 1.3 × its p99 at 10,000. What it does (docs/scaling.md):

1. for each size (`--persons 10000,1000000`) takes a seeded database — a demo instance (`broker demo --no-serve`)
   on a PostgreSQL database of its own, filled by `broker bench seed --persons N --manifest FILE` — and its
   instance folder (keys, partner keys, checkpoint sink). Seeding a million persons takes long, so a seeded set
   is kept and reused: `--seeded-url URL --seeded-instance DIR [--manifest FILE]` names one made beforehand (one
   size), and otherwise each size's set lives in `--seeded-dir` (default bench/seeded/, not in git) as
   `persons-N/` — reused when it is there and its database answers, seeded when not (`--reseed` seeds again);
2. serves every size at once, each with `broker serve --workers 2` (gunicorn, sync workers) on its own port;
3. drives `POST /api/v1/disclosures` with wrk, DPoP-bound token and a fresh proof per request as in
   bench/http_disclosure.py, each request for a person drawn at random from the seed's manifest (persons for
   whom `varha-health` may receive `work_assessment` for `work_capacity_assessment`), so that the requests
   spread over the database instead of finding one person's rows in the cache. Each round measures every
   concurrency level (`--connections 2,8`: 2 is one request per worker, no queueing in the server; 8 as the
   HTTP benchmark) on every size back to back;
4. checks as the HTTP benchmark does (no non-2xx — a person of the manifest who is not permitted gives a 403 —,
   no socket error, no DPoP proof sent twice, every disclosure a committed permit) and verifies each log
   (`broker audit verify`) after its server has stopped;
5. prints p50/p95/p99 (the median over the rounds of each run's percentile) per size and level, the ratio of
   the largest size's p99 to the smallest's, and writes bench/results/scale-<date>[-label].json with the
   database's size and row counts.

`--demo` runs the same on a fresh demo instance (its one permitted person), for developing the harness without
a seeded database. A benchmark, not a test: traffic to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.harness import (
    ASK,
    BROKER,
    HERE,
    PARTNER,
    ROOT,
    BenchError,
    Load,
    Partner,
    audit_mark,
    broker_command,
    broker_env,
    create_database,
    create_demo,
    database_exists,
    database_name,
    demo_person,
    disclosure_checks,
    disclosure_run,
    disclosures_since,
    dpop_max_age,
    drop_database,
    failed_checks,
    find_wrk,
    free_port,
    loadavg,
    postgres_url,
    result_header,
    scratch_database,
    serve,
    started_at,
    summarise,
    verify_log,
    with_database,
    write_result,
)

TARGET = 1.3  # issue #7: p99 at 1,000,000 persons ≤ 1.3 × p99 at 10,000
SEEDED_DIR = HERE / "seeded"
SEEDED_FILE = "seeded.json"


@dataclass
class SeededSet:
    """A demo instance folder and its database, seeded with `persons` persons (None: the plain demo)."""

    label: str
    persons: int | None
    instance: Path
    database_url: str
    manifest: Path | None
    reused: bool
    seed_seconds: float | None = None
    facts: dict[str, Any] = field(default_factory=dict)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__.split("\n")[0])
    parser.add_argument("--postgres", metavar="URL", help="the PostgreSQL server (default $BROKER_BENCH_POSTGRES_URL)")
    parser.add_argument(
        "--persons", default="10000,1000000", help="sizes to measure, comma-separated (default 10000,1000000)"
    )
    parser.add_argument("--seeded-dir", type=Path, default=SEEDED_DIR, help="where seeded sets are kept and reused")
    parser.add_argument("--seeded-url", metavar="URL", help="a database seeded beforehand (with --seeded-instance)")
    parser.add_argument("--seeded-instance", type=Path, metavar="DIR", help="the instance folder of --seeded-url")
    parser.add_argument("--manifest", type=Path, help="the seed's manifest (default DIR/seed-manifest.json)")
    parser.add_argument("--reseed", action="store_true", help="seed again even when a seeded set is there")
    parser.add_argument("--seed", type=int, default=7, help="the seed generator's random seed (default 7)")
    parser.add_argument("--demo", action="store_true", help="a fresh demo instance only (develop the harness)")
    parser.add_argument(
        "--prepare-only", action="store_true", help="seed (or find) the seeded sets, analyse them, and stop"
    )
    parser.add_argument("--connections", default="2,8", help="wrk connection counts to measure (default 2,8)")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (default 1)")
    parser.add_argument("--duration", type=int, default=10, help="seconds per measured run (default 10)")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of warm-up before each run (default 2)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (default 3)")
    parser.add_argument(
        "--sample", type=int, default=0, help="spread over this many of the manifest's persons (default: all)"
    )
    parser.add_argument("--label", default="", help="appended to the results file name")
    parser.add_argument("--no-write", action="store_true", help="do not write bench/results/*.json")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder and the --demo database")
    args = parser.parse_args(argv)
    args.postgres = postgres_url(args.postgres)
    try:
        args.sizes = [int(x.replace("_", "")) for x in args.persons.split(",") if x.strip()]
        args.levels = [int(x) for x in args.connections.split(",") if x.strip()]
    except ValueError:
        parser.error("--persons and --connections take whole numbers separated by commas")
    if not args.sizes or min(args.sizes) < 1 or not args.levels or min(args.levels) < args.threads:
        parser.error("--persons needs sizes ≥ 1; --connections needs counts ≥ --threads")
    if (args.seeded_url is None) != (args.seeded_instance is None):
        parser.error("--seeded-url and --seeded-instance go together (the database and its instance folder)")
    if args.seeded_url and len(args.sizes) != 1:
        parser.error("--seeded-url names one seeded database: give its size alone with --persons N")
    if not args.postgres and not args.seeded_url:
        parser.error("needs a PostgreSQL server: --postgres URL or BROKER_BENCH_POSTGRES_URL")
    if min(args.rounds, args.duration, args.threads) < 1 or args.warmup < 0:
        parser.error("--rounds, --duration and --threads must be at least 1, --warmup at least 0")
    if args.duration + args.warmup >= 240:
        parser.error("keep warm-up + duration well under the access token's 300 s lifetime")
    return args


# --- seeded sets ---


def seed_command_available() -> bool:
    out = subprocess.run([*BROKER, "bench", "seed", "--help"], cwd=ROOT, capture_output=True, text=True, check=False)
    return out.returncode == 0


def seeded_set(args: argparse.Namespace, persons: int) -> SeededSet:
    """The seeded set of `persons` persons: the one given, the one kept in --seeded-dir, or a new one."""
    if args.seeded_url:
        instance = args.seeded_instance.resolve()
        manifest = (args.manifest or instance / "seed-manifest.json").resolve()
        for path in (instance / "demo.json", manifest):
            if not path.exists():
                raise BenchError(f"--seeded-instance {instance}: {path.name} is missing")
        return SeededSet(str(persons), persons, instance, args.seeded_url, manifest, reused=True)
    folder = (args.seeded_dir / f"persons-{persons}").resolve()
    if (folder / SEEDED_FILE).exists() and not args.reseed:
        found = kept_set(folder)
        if found is not None:
            return found
        print(f"the seeded set in {folder} has lost its database or manifest: seeding again")
    return seed(args, persons, folder)


def kept_set(folder: Path) -> SeededSet | None:
    """The seeded set kept in `folder` (persons-N/ with seeded.json, instance/ and seed-manifest.json), or None
    when its database or manifest is gone."""
    record = folder / SEEDED_FILE
    if not record.exists():
        raise BenchError(f"{folder}: not a seeded set ({SEEDED_FILE} is missing; bench/scale.py makes them)")
    kept = json.loads(record.read_text())
    url, persons = kept["database_url"], int(kept["persons"])
    manifest = folder / "seed-manifest.json"
    if not manifest.exists() or not database_exists(with_database(url, "postgres"), database_name(url)):
        return None
    print(f"reusing the seeded set of {persons:,} persons in {folder} (seeded {kept['seeded_at']})")
    found = SeededSet(str(persons), persons, folder / "instance", url, manifest, reused=True)
    found.seed_seconds = kept.get("seconds")
    return found


def seed(args: argparse.Namespace, persons: int, folder: Path) -> SeededSet:
    if not seed_command_available():
        raise BenchError(
            "`broker bench seed` is not available in this tree: seed a database with it first, or use --demo"
        )
    name = f"{database_name(args.postgres) or 'broker_bench'}_scale_{persons}"
    if database_exists(args.postgres, name):
        drop_database(args.postgres, name)  # what a failed or stale seeding left: ours by its name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    create_database(args.postgres, name)
    url = with_database(args.postgres, name)
    instance = folder / "instance"
    manifest = folder / "seed-manifest.json"
    port = free_port()
    env = broker_env(instance, f"http://127.0.0.1:{port}", url) | {"BROKER_AUDIT_ORIGIN": seeded_origin(persons)}
    print(f"seeding {persons:,} persons into database {name} (instance {instance}) …", flush=True)
    began = time.monotonic()
    create_demo(env, port)
    command = [
        *BROKER,
        "bench",
        "seed",
        "--persons",
        str(persons),
        "--manifest",
        str(manifest),
        "--seed",
        str(args.seed),
    ]
    if subprocess.run(command, env=env, cwd=ROOT, check=False).returncode != 0:
        raise BenchError(f"seeding failed: {' '.join(command[2:])}")
    seconds = round(time.monotonic() - began, 1)
    record = {
        "persons": persons,
        "database_url": url,
        "seed": args.seed,
        "seeded_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "seconds": seconds,
        "audit_origin": seeded_origin(persons),
        "command": " ".join(["broker", *command[3:]]),
    }
    (folder / SEEDED_FILE).write_text(json.dumps(record, indent=2) + "\n")
    print(f"seeded {persons:,} persons in {seconds:.0f} s")
    found = SeededSet(str(persons), persons, instance, url, manifest, reused=False)
    found.seed_seconds = seconds
    return found


def seeded_origin(persons: int) -> str:
    """The log's origin in a seeded set's checkpoints. By default a broker names its log after its issuer's host and
    port (broker/services/sequencer.py: origin_of); a seeded set is served on whatever port is free, so it gets a
    name of its own (C2SP tlog-checkpoint: a schema-less URL; .invalid is reserved, RFC 2606 §2)."""
    return f"consent-broker-bench.invalid/persons-{persons}/audit-log"


def sink_origin(instance: Path) -> str:
    """The origin of the newest checkpoint in the instance's sink (its first line): the name the log was signed
    under, which the broker serving it must keep (a set seeded beforehand may have been seeded under another)."""
    sink = instance / "checkpoints"
    notes = sorted(sink.glob("*.note"))
    newest = sink / "latest.note" if (sink / "latest.note").exists() else (notes[-1] if notes else None)
    if newest is None:
        raise BenchError(f"{sink}: no checkpoint in the sink: was the database seeded with this instance folder?")
    return newest.read_text().split("\n", 1)[0].strip()


def manifest_persons(path: Path) -> list[str]:
    """The person ids of a seed manifest: persons for whom the partner may receive the work assessment."""
    data = json.loads(path.read_text())
    entries = data.get("persons") if isinstance(data, dict) else data
    if not isinstance(entries, list) or not entries:
        raise BenchError(f"{path}: no persons in the manifest")
    ids = []
    for entry in entries:
        person_id = entry.get("person_id") if isinstance(entry, dict) else entry
        if not isinstance(person_id, str) or not person_id:
            raise BenchError(f"{path}: a person without a person_id: {entry!r}")
        ids.append(person_id)
    # `broker bench seed --manifest` (broker/seed/__init__.py) names the disclosure its persons are ready for.
    disclosure = data.get("disclosure", {}) if isinstance(data, dict) else {}
    asked = {"client_id": disclosure.get("client_id", PARTNER), **disclosure.get("body", ASK)}
    if asked != {"client_id": PARTNER, **ASK}:
        raise BenchError(
            f"{path}: the manifest's persons are ready for {asked}, the benchmark asks for {ASK} as {PARTNER}"
        )
    if len(set(ids)) != len(ids):
        raise BenchError(f"{path}: a person is listed twice")
    return ids


def manifest_summary(path: Path | None) -> dict[str, Any] | None:
    """What the seed reported in its manifest: how much it made and how long it took."""
    if path is None:
        return None
    data = json.loads(path.read_text())
    if not isinstance(data, dict):
        return None
    keys = ("seeded_at", "seed", "entries_per_person", "counts", "log_size", "seconds", "benchmark_ready")
    return {key: data[key] for key in keys if key in data}


def upgrade(env: dict[str, str], seeded: SeededSet) -> None:
    """`broker db upgrade` on a seeded set: one seeded by an earlier version of the broker gets its schema
    migrations, as a deployment would (nothing happens when it is current)."""
    began = time.monotonic()
    out = subprocess.run([*BROKER, "db", "upgrade"], env=env, cwd=ROOT, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise BenchError(f"broker db upgrade failed on the set of {seeded.label} persons:\n{out.stdout}\n{out.stderr}")
    seeded.facts["db_upgrade"] = {
        "output": (out.stdout or out.stderr).strip()[-300:],
        "seconds": round(time.monotonic() - began, 1),
    }


def analyse(url: str) -> None:
    """ANALYZE the database, as an operator does after a bulk load: the planner then knows the tables' sizes
    (a freshly COPYed table has no statistics until autovacuum gets to it)."""
    from sqlalchemy import create_engine, text

    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    began = time.monotonic()
    try:
        with engine.connect() as connection:
            connection.execute(text("ANALYZE"))
    finally:
        engine.dispose()
    print(f"analysed {database_name(url)} in {time.monotonic() - began:.1f} s")


def database_facts(url: str) -> dict[str, Any]:
    """The database's size and what it holds (exact counts of persons and log entries; estimates of the rest)."""
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            facts: dict[str, Any] = {
                "database_bytes": int(
                    connection.execute(text("SELECT pg_database_size(current_database())")).scalar() or 0
                ),
                "persons": int(connection.execute(text("SELECT count(*) FROM persons")).scalar() or 0),
                "audit_entries": int(connection.execute(text("SELECT count(*) FROM audit_entries")).scalar() or 0),
            }
            estimated = connection.execute(
                text(
                    "SELECT relname, reltuples::bigint FROM pg_class WHERE relkind = 'r' AND relname IN "
                    "('consents', 'records', 'relationships', 'disclosures', 'audit_nodes')"
                )
            ).all()
            facts["estimated_rows"] = {str(name): int(rows) for name, rows in estimated}
            # The log's own tables, indexes included: what it costs to keep per entry.
            sizes = connection.execute(
                text(
                    "SELECT c.relname, pg_total_relation_size(c.oid) FROM pg_class c "
                    "JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "WHERE c.relkind = 'r' AND c.relname LIKE 'audit%' AND n.nspname = current_schema()"
                )
            ).all()
            facts["audit_table_bytes"] = {str(name): int(size) for name, size in sizes}
            if facts["audit_entries"]:
                facts["audit_bytes_per_entry"] = round(
                    sum(facts["audit_table_bytes"].values()) / facts["audit_entries"]
                )
    finally:
        engine.dispose()
    return facts


# --- the benchmark ---


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    wrk = find_wrk()
    started, load_before = started_at()
    workdir = Path(tempfile.mkdtemp(prefix="broker-scale-"))
    try:
        with contextlib.ExitStack() as stack:
            if args.demo:
                url = stack.enter_context(scratch_database(args.postgres, "scale_demo", keep=args.keep))
                sets = [SeededSet("demo", None, workdir / "demo-instance", url, None, reused=False)]
            else:
                sets = [seeded_set(args, persons) for persons in args.sizes]
                for seeded in sets:
                    analyse(seeded.database_url)
                if args.prepare_only:
                    print("seeded sets ready: " + ", ".join(f"{s.label} ({s.instance.parent})" for s in sets))
                    return 0
            header = result_header("scale", started, load_before, wrk, sets[0].database_url)
            outcome = run(args, wrk, workdir, sets)
    finally:
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    failed = outcome.pop("failed")
    result = {
        **header,
        **outcome,
        "loadavg_after": loadavg(),
        "ok": not failed,
    }
    if not args.no_write:
        write_result("scale", started, args.label, result)
    if failed:
        print(f"CHECKS FAILED: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


@dataclass
class Served:
    seeded: SeededSet
    env: dict[str, str]
    partner: Partner
    persons_file: Path
    persons: int
    mark: int = 0
    runs: dict[int, list[dict[str, Any]]] = field(default_factory=dict)


def run(args: argparse.Namespace, wrk: str, workdir: Path, sets: list[SeededSet]) -> dict[str, Any]:
    served: list[Served] = []
    rng = random.Random(args.seed)
    with contextlib.ExitStack() as stack:
        for seeded in sets:
            port = free_port()
            base_url = f"http://127.0.0.1:{port}"
            env = broker_env(seeded.instance, base_url, seeded.database_url)
            if seeded.persons is not None:
                # The log keeps the name it was signed under, whatever port serves it now.
                env["BROKER_AUDIT_ORIGIN"] = sink_origin(seeded.instance)
                upgrade(env, seeded)
            if seeded.persons is None:
                demo = create_demo(env, port)
                ids = [demo_person(demo)]
            else:
                demo = json.loads((seeded.instance / "demo.json").read_text())
                assert seeded.manifest is not None
                ids = manifest_persons(seeded.manifest)
            if args.sample and args.sample < len(ids):
                ids = rng.sample(ids, args.sample)
            seeded.facts = {**seeded.facts, **database_facts(seeded.database_url)}
            persons_file = workdir / f"persons-{seeded.label}.txt"
            persons_file.write_text("\n".join(ids) + "\n")
            serve_env = env | {"BROKER_DPOP_MAX_AGE": str(dpop_max_age(args.duration))}
            log = workdir / f"broker-{seeded.label}.log"
            print(f"{seeded.label}: serving on {base_url}; {len(ids):,} persons to draw from; {seeded.facts}")
            stack.enter_context(serve(broker_command(port), serve_env, log, f"{base_url}/healthz"))
            partner = Partner(seeded.instance, demo, base_url, base_url)
            for person_id in rng.sample(ids, min(3, len(ids))):
                partner.disclose(person_id, attempts=15)  # 503 until a quiet log's checkpoint is exported again
            served.append(Served(seeded, env, partner, persons_file, len(ids), mark=audit_mark(seeded.database_url)))

        body = json.dumps({"person_id": "PERSON_ID", **ASK})
        for round_no in range(1, args.rounds + 1):
            for connections in args.levels:
                load = Load(args.threads, connections, args.duration, args.warmup)
                for s in served:
                    wrk_env = {"BENCH_METHOD": "POST", "BENCH_BODY": body, "BENCH_PERSONS": str(s.persons_file)}
                    result = disclosure_run(
                        wrk,
                        load,
                        f"{s.partner.base_url}/api/v1/disclosures",
                        s.partner,
                        wrk_env,
                        expected_rate=1000.0,
                        proof_file=workdir / "proofs.txt",
                    )
                    s.runs.setdefault(connections, []).append(result)
                    latency = result["latency_us"]
                    print(
                        f"  round {round_no} c={connections:<3} {s.seeded.label:>9} persons "
                        f"{result['requests_per_s']:8.1f} /s  p50 {latency['p50'] / 1000:6.2f} ms  "
                        f"p95 {latency['p95'] / 1000:6.2f} ms  p99 {latency['p99'] / 1000:6.2f} ms  "
                        f"non-2xx {result['non_2xx']}"
                    )

    sizes: dict[str, Any] = {}
    failed: list[str] = []
    for s in served:
        committed = disclosures_since(s.seeded.database_url, s.mark)
        verified = verify_log(s.env)
        levels = {str(c): summarise(runs) for c, runs in s.runs.items()}
        merged = {
            k: sum(level[k] for level in levels.values()) for k in ("non_2xx", "socket_errors", "proofs_exhausted")
        }
        sent = sum(r["sent_with_warmup"] for runs in s.runs.values() for r in runs)
        checks = disclosure_checks(merged, sent, committed) | verified
        failed += [f"{s.seeded.label}: {name}" for name in failed_checks(checks)]
        sizes[s.seeded.label] = {
            "persons": s.seeded.persons,
            "persons_drawn_from": s.persons,
            "seeded_set": "reused" if s.seeded.reused else ("seeded for this run" if s.seeded.persons else "demo"),
            "seed_seconds": s.seeded.seed_seconds,
            "database": s.seeded.facts,
            "seed_manifest": manifest_summary(s.seeded.manifest),
            "levels": levels,
            "checks": checks,
        }

    comparison: dict[str, Any] = {}
    if len(served) >= 2:
        small, large = served[0].seeded.label, served[-1].seeded.label
        for c in args.levels:
            p99_small = sizes[small]["levels"][str(c)]["median_over_runs_ms"]["p99"]
            p99_large = sizes[large]["levels"][str(c)]["median_over_runs_ms"]["p99"]
            comparison[str(c)] = {
                "p99_ms": {small: p99_small, large: p99_large},
                "ratio": round(p99_large / p99_small, 3) if p99_small else None,
            }
    report(sizes, comparison, args.levels)
    headline = comparison.get(str(min(args.levels)), {}).get("ratio")
    return {
        "settings": {
            "server": "broker serve --workers 2 (gunicorn sync workers) per size, all sizes served at once",
            "database": "PostgreSQL, a database per size, ANALYZEd before the runs",
            "wrk": f"-t{args.threads} -c{'/'.join(map(str, args.levels))} -d{args.duration}s, {args.warmup} s warm-up",
            "rounds": args.rounds,
            "order": "each round: every concurrency level, every size back to back",
            "request": {"partner": PARTNER, **ASK, "person": "drawn at random per request from the manifest"},
            "percentiles": "median over the rounds of each run's percentile (wrk's latency histogram)",
        },
        "sizes": sizes,
        "p99_comparison": comparison,
        "target_p99_ratio": TARGET,
        "headline_connections": min(args.levels),
        "meets_target": headline is not None and headline <= TARGET,
        "failed": failed,
    }


def report(sizes: dict[str, Any], comparison: dict[str, Any], levels: list[int]) -> None:
    print()
    print(f"{'persons':>10} {'conns':>6} {'disclosures/s':>14} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}")
    for label, size in sizes.items():
        for c in levels:
            s = size["levels"][str(c)]
            m = s["median_over_runs_ms"]
            print(f"{label:>10} {c:>6} {s['requests_per_s']:>14.1f} {m['p50']:>8.2f} {m['p95']:>8.2f} {m['p99']:>8.2f}")
    for level, found in comparison.items():
        ratio = found["ratio"]
        verdict = "meets" if ratio is not None and ratio <= TARGET else "MISSES"
        print(f"c={level}: p99 {found['p99_ms']} — ratio {ratio} × ({verdict} the target of ≤ {TARGET} ×)")
    for label, size in sizes.items():
        checks = size["checks"]
        print(
            f"{label}: non-2xx {checks['non_2xx']}, socket errors {checks['socket_errors']}, proofs sent twice "
            f"{checks['dpop_proofs_sent_twice']}, wrk counted {checks['disclosures_counted_by_wrk']}, committed "
            f"{checks['permits_committed']} permits and {checks['denies_committed']} denials; "
            f"{checks['audit_verify']} ({checks['audit_verify_seconds']} s)"
        )


if __name__ == "__main__":
    sys.exit(main())
