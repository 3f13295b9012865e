"""`make bench-http`: disclosures per second over HTTP next to the same server's `/healthz` rate, on SQLite and
on PostgreSQL.

For each backend (`--backend sqlite|postgres|both`; docs/benchmarks.md has the numbers and how to read them):

1. creates a fresh demo instance in a temporary folder (`broker demo --no-serve`) — on SQLite in that folder, or
   on a fresh database of the PostgreSQL server named by `--postgres URL` or BROKER_BENCH_POSTGRES_URL (created
   next to that URL's database and dropped afterwards; the URL's own database is never written) — and serves it
   with `broker serve --workers 2` (gunicorn, sync workers) on a free loopback port;
2. serves the reference app bench/bare_insert.py — one endpoint doing one durable insert, into SQLite or into
   the same PostgreSQL database — under the same gunicorn settings on another free port;
3. gets an access token for the `varha-health` partner (client_credentials + private_key_jwt, the assertion
   built with joserfc; DPoP-bound, RFC 9449) and checks that one disclosure of Mikko's work assessment is
   permitted;
4. drives `GET /healthz`, `POST /insert` (bare app) and `POST /api/v1/disclosures` with wrk — same threads,
   connections and duration for each, a short warm-up before each measured run, a fresh token per run — in
   rounds of the three back to back;
5. checks that wrk saw no error responses and no socket errors (warm-ups included), that every disclosure was a
   committed permit, that no DPoP proof had to be sent twice, and that the audit log verifies
   (`broker audit verify`);
6. prints a table per backend — requests/s and p50/p95/p99 latency of the median run; the ratios to /healthz
   and to the bare insert, each the median of the per-round ratios — and writes
   bench/results/http_disclosure-<date>[-label].json. It exits 1 when a check fails (not when a target is
   missed: that is a finding, reported as such).

Every disclosure request carries its own DPoP proof, as a partner's would. wrk's Lua cannot sign, so the proofs are
signed here just before each wrk run — warm-up and measured run apart — and wrk_report.lua sends each once. How
many: the warm-up's from this round's /healthz rate (an upper bound of the disclosure rate), the measured run's
from the warm-up's disclosure rate, each with a margin of two. Signing happens before wrk starts, so the client's
cost is not in the figures; the broker's share (verifying the proof, using its `jti` once) is. A run that runs out
of proofs would send replays, which the broker refuses: the checks count them, and the run fails.

A benchmark, not a test: it sends traffic to 127.0.0.1 only, and every wrk run is bounded by `--duration`.
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
from pathlib import Path
from typing import Any

from bench.bare_insert import prepare_postgres
from bench.harness import (
    ASK,
    BROKER,
    PARTNER,
    WORKERS,
    BenchError,
    DpopKey,
    Load,
    Partner,
    audit_mark,
    background,
    bare_command,
    broker_command,
    broker_env,
    build_assertion,
    create_demo,
    demo_person,
    disclosure_checks,
    disclosure_run,
    disclosures_since,
    dpop_max_age,
    failed_checks,
    find_wrk,
    free_port,
    loadavg,
    plain_run,
    postgres_url,
    result_header,
    scratch_database,
    serve,
    started_at,
    summarise,
    taskset,
    verify_log,
    write_result,
)

__all__ = ["ASK", "PARTNER", "PERSON", "DpopKey", "build_assertion", "main"]  # bench/profile_disclosure.py uses them

PERSON = "Mikko Laine"
HIGH_LIMIT = "10000000/minute"
# Issue #7: a full disclosure over HTTP ≥ 30 % of the same server's /healthz rate on PostgreSQL, ≥ 25 % on SQLite.
TARGETS = {"sqlite": 0.25, "postgres": 0.30}
DATABASES = {
    "sqlite": "SQLite, WAL, synchronous=FULL, writers serialised by a file lock",
    "postgres": "PostgreSQL over TCP loopback, READ COMMITTED",
}
LABELS = {
    "healthz": "GET /healthz",
    "bare_insert": "POST /insert (bare app)",
    "disclosure": "POST /api/v1/disclosures",
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.http_disclosure", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--backend",
        choices=("sqlite", "postgres", "both"),
        default="both",
        help="which database(s) the broker and the bare app use (default both; postgres needs a server URL)",
    )
    parser.add_argument(
        "--postgres",
        metavar="URL",
        help="the PostgreSQL server (postgresql+psycopg://user@host:port/scratch_db); a fresh database is created "
        "next to the URL's database and dropped afterwards. Default: $BROKER_BENCH_POSTGRES_URL",
    )
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (default 1)")
    parser.add_argument("--connections", type=int, default=8, help="wrk connections (default 8)")
    parser.add_argument("--duration", type=int, default=10, help="seconds per measured run (default 10)")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of warm-up before each run (default 2)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of healthz/insert/disclosure (default 3)")
    parser.add_argument(
        "--pin",
        choices=("wrk", "split", "none"),
        default="wrk",
        help="wrk: wrk on the last CPU, servers anywhere (default); split: wrk on the last CPU, servers on the "
        "others; none: no pinning",
    )
    parser.add_argument(
        "--checkpointing",
        choices=("on", "apart", "off"),
        default="on",
        help="on: the audit sequencer integrates, signs and exports checkpoints while serving, as in production, "
        "in a thread of one of the workers (default); apart: the same, in a process of its own beside the workers "
        "(`broker audit sequence`, the workers with BROKER_AUDIT_SEQUENCER=off: docs/scaling.md), its CPU counted "
        "with the servers'; off: no sequencer (and no anchoring gate), the entries are sequenced after the "
        "run — the baseline for issue #5's 'no more than 10 %% slower with checkpointing on'",
    )
    parser.add_argument(
        "--rate-limits",
        metavar="off|REDIS_URL",
        default="off",
        help="off: no rate limits (default; one partner at hundreds of requests a second would be refused); a "
        "redis:// URL: the limits on, counted in that Redis as a deployment of several processes does, each set "
        "far above the benchmark's rate so that only their cost is measured",
    )
    parser.add_argument("--label", default="", help="appended to the results file name (e.g. 'before')")
    parser.add_argument("--no-write", action="store_true", help="do not write bench/results/*.json")
    parser.add_argument("--keep", action="store_true", help="keep the temporary instances, logs and databases")
    args = parser.parse_args(argv)
    if args.duration + args.warmup >= 240:
        parser.error("keep warm-up + duration well under the access token's 300 s lifetime")
    if min(args.rounds, args.duration, args.threads, args.connections) < 1 or args.warmup < 0:
        parser.error("--rounds, --duration, --threads and --connections must be at least 1, --warmup at least 0")
    if args.rate_limits != "off" and not args.rate_limits.startswith("redis://"):
        parser.error("--rate-limits takes off or a redis:// URL")
    args.postgres = postgres_url(args.postgres)
    if args.backend in ("postgres", "both") and not args.postgres:
        parser.error(
            f"--backend {args.backend} needs a PostgreSQL server: --postgres URL or BROKER_BENCH_POSTGRES_URL "
            "(e.g. createdb -h 127.0.0.1 -U postgres broker_bench, then "
            "postgresql+psycopg://postgres@127.0.0.1:5432/broker_bench)"
        )
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    wrk = find_wrk()
    cpus = sorted(os.sched_getaffinity(0))
    last = str(cpus[-1])
    rest = ",".join(str(c) for c in cpus[:-1]) or None
    wrk_cpus = None if args.pin == "none" or len(cpus) < 2 else last
    server_cpus = rest if args.pin == "split" and len(cpus) >= 2 else None
    load = Load(args.threads, args.connections, args.duration, args.warmup, prefix=tuple(taskset(wrk_cpus)))
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]

    started, load_before = started_at()
    workdir = Path(tempfile.mkdtemp(prefix="broker-bench-"))
    results: dict[str, Any] = {}
    try:
        for backend in backends:
            print(f"\n== {backend} ==")
            results[backend] = run_backend(backend, args, wrk, load, server_cpus, workdir / backend)
    finally:
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    print()
    failed = report(results)
    result = {
        **result_header("http_disclosure", started, load_before, wrk, args.postgres if "postgres" in results else None),
        "settings": {
            "server": f"gunicorn, {WORKERS} sync workers, 127.0.0.1 (loopback)",
            "checkpointing": args.checkpointing,
            "rate_limits": (
                "off"
                if args.rate_limits == "off"
                else f"on, counted in Redis, every limit {HIGH_LIMIT} (far above the rate: their cost, no refusal)"
            ),
            "wrk": f"-t{load.threads} -c{load.connections} -d{load.duration}s --timeout={load.timeout}s",
            "warmup_s": load.warmup,
            "rounds": args.rounds,
            "pin": args.pin,
            "wrk_cpus": wrk_cpus,
            "server_cpus": server_cpus,
            "request": {"partner": PARTNER, "person": "mikko", **ASK},
            "dpop": (
                "DPoP-bound token, a fresh Ed25519 proof per request, signed before each wrk run (wrk cannot sign); "
                f"broker proof window {dpop_max_age(load.duration)} s"
            ),
            "ratios": "median of the per-round ratios (a round measures the three endpoints back to back)",
        },
        "backends": results,
        "loadavg_after": loadavg(),
        "ok": not failed,
    }
    if not args.no_write:
        write_result("http_disclosure", started, args.label, result)
    if failed:
        print(f"CHECKS FAILED: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def run_backend(
    backend: str, args: argparse.Namespace, wrk: str, load: Load, server_cpus: str | None, workdir: Path
) -> dict[str, Any]:
    workdir.mkdir(parents=True)
    instance = workdir / "instance"
    port, bare_port = free_port(), free_port()
    base_url = f"http://127.0.0.1:{port}"
    bare_url = f"http://127.0.0.1:{bare_port}"
    with contextlib.ExitStack() as stack:
        database_url = None
        bare_env: dict[str, str]
        synchronous_commit = None
        if backend == "postgres":
            database_url = stack.enter_context(scratch_database(args.postgres, "http", keep=args.keep))
            synchronous_commit = prepare_postgres(database_url)
            if synchronous_commit != "on":
                raise BenchError(f"the PostgreSQL server's synchronous_commit is {synchronous_commit}, not on")
            bare_env = {"BENCH_BARE_POSTGRES": database_url}
        else:
            bare_env = {"BENCH_BARE_DB": str(workdir / "bare.db")}
        env = broker_env(instance, base_url, database_url)
        db_url = database_url or f"sqlite:///{instance / 'broker.db'}"
        where = "a fresh PostgreSQL database" if database_url else "SQLite"
        print(f"demo instance on {where}; broker on {base_url}, bare insert app on {bare_url}")
        demo = create_demo(env, port)
        person_id = demo_person(demo, PERSON)
        body = json.dumps({"person_id": person_id, **ASK})

        serve_env = {**env, "BROKER_DPOP_MAX_AGE": str(dpop_max_age(load.duration))}
        if args.rate_limits != "off":
            # The limits on and shared through Redis, each far above what the run can reach: every counted request
            # pays for its Redis round trips, and none is refused. A prefix of its own keeps the counts apart from
            # anything else in that Redis.
            serve_env.pop("BROKER_RATE_LIMITS", None)
            serve_env |= {
                "BROKER_REDIS_URL": args.rate_limits,
                "BROKER_RATE_LIMIT_PREFIX": f"consent-broker-bench-{os.getpid()}",
                **{f"BROKER_RATE_LIMIT_{group}": HIGH_LIMIT for group in ("API", "UNAUTHENTICATED", "OAUTH", "LOGIN")},
            }
        if args.checkpointing == "off":
            # The anchoring gate can be switched off only in test mode; the disclosure path is otherwise the same.
            serve_env |= {"BROKER_MODE": "test", "BROKER_AUDIT_SEQUENCER": "off", "BROKER_AUDIT_ANCHOR_WINDOW": "off"}
        prefix = taskset(server_cpus)
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in LABELS}
        bare_log, broker_log = workdir / "bare.log", workdir / "broker.log"
        sequencer: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
        if args.checkpointing == "apart":
            serve_env |= {"BROKER_AUDIT_SEQUENCER": "off"}
            sequencer = background(
                [*prefix, *BROKER, "audit", "sequence"],
                {**serve_env, "BROKER_AUDIT_SEQUENCER": "on"},
                workdir / "sequencer.log",
            )
        with (
            sequencer,
            serve(broker_command(port, prefix=prefix), serve_env, broker_log, f"{base_url}/healthz"),
            serve(bare_command(bare_port, prefix=prefix), {**env, **bare_env}, bare_log, f"{bare_url}/healthz"),
        ):
            partner = Partner(instance, demo, base_url, base_url)
            partner.disclose(person_id)
            mark = audit_mark(db_url)
            targets = {
                "healthz": (f"{base_url}/healthz", {"BENCH_METHOD": "GET"}),
                "bare_insert": (f"{bare_url}/insert", {"BENCH_METHOD": "POST", "BENCH_BODY": body}),
                "disclosure": (f"{base_url}/api/v1/disclosures", {"BENCH_METHOD": "POST", "BENCH_BODY": body}),
            }
            pin_note = f"wrk under {' '.join(load.prefix)}" if load.prefix else "wrk not pinned"
            print(
                f"wrk -t{load.threads} -c{load.connections} -d{load.duration}s ({load.warmup}s warm-up each), "
                f"{args.rounds} round(s), {pin_note}, servers on CPU {server_cpus or 'any'}"
            )
            for round_no in range(1, args.rounds + 1):
                for name, (url, wrk_env) in targets.items():
                    if name == "disclosure":
                        expected = runs["healthz"][-1]["requests_per_s"]
                        proof_file = workdir / "proofs.txt"
                        result = disclosure_run(
                            wrk, load, url, partner, wrk_env, expected_rate=expected, proof_file=proof_file
                        )
                    else:
                        result = plain_run(wrk, load, url, wrk_env)
                    runs[name].append(result)
                    latency = result["latency_us"]
                    cpu = result["cpu_us_per_request"]
                    servers = cpu["machine"] - cpu["postgres"] - cpu["wrk"]
                    print(
                        f"  round {round_no} {name:<12} {result['requests_per_s']:9.1f} req/s  "
                        f"p50 {latency['p50'] / 1000:7.2f} ms  p95 {latency['p95'] / 1000:7.2f} ms  "
                        f"p99 {latency['p99'] / 1000:7.2f} ms  non-2xx {result['non_2xx']}  "
                        f"CPU/request µs: servers {servers:.0f}, PostgreSQL {cpu['postgres']:.0f}, wrk {cpu['wrk']:.0f}"
                    )
        # After the servers have stopped: what was committed, and the whole log verified.
        committed = disclosures_since(db_url, mark)
        verified = verify_log(env)

    summary = {name: summarise(results) for name, results in runs.items()}

    def per_round(name: str, reference: str) -> list[float]:
        # Each round measures all three endpoints back to back, so a round's ratio compares rates taken under the
        # same conditions; the median over the rounds is the ratio reported.
        return [r["requests_per_s"] / h["requests_per_s"] for r, h in zip(runs[name], runs[reference], strict=True)]

    ratios: dict[str, Any] = {}
    for name, reference in (
        ("disclosure", "healthz"),
        ("bare_insert", "healthz"),
        ("disclosure", "bare_insert"),
    ):
        values = per_round(name, reference)
        ratios[f"{name}_to_{reference}"] = {
            "median": round(statistics.median_low(values), 4),
            "per_round": [round(x, 4) for x in values],
        }
    sent = sum(r["sent_with_warmup"] for r in runs["disclosure"])
    checks = disclosure_checks(summary["disclosure"], sent, committed)
    checks["non_2xx_other_endpoints"] = summary["healthz"]["non_2xx"] + summary["bare_insert"]["non_2xx"]
    checks["socket_errors"] = sum(s["socket_errors"] for s in summary.values())
    checks |= verified
    target = TARGETS[backend]
    ratio = ratios["disclosure_to_healthz"]["median"]
    return {
        "database": DATABASES[backend] + (f" (synchronous_commit {synchronous_commit})" if synchronous_commit else ""),
        "results": summary,
        "ratios": ratios,
        "target_disclosure_to_healthz": target,
        "meets_target": ratio >= target,
        "checks": checks,
        "failed": failed_checks(checks) + (["non_2xx_other_endpoints"] if checks["non_2xx_other_endpoints"] else []),
    }


def report(results: dict[str, Any]) -> list[str]:
    """Print each backend's table and checks; return the failed checks, named by backend."""
    failed: list[str] = []
    for backend, outcome in results.items():
        summary, ratios, checks = outcome["results"], outcome["ratios"], outcome["checks"]
        print(f"{backend}: {outcome['database']}")
        print(f"{'endpoint':<28} {'requests/s':>11} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'vs /healthz':>12}")
        for name, s in summary.items():
            vs = {"healthz": 1.0, "bare_insert": ratios["bare_insert_to_healthz"]["median"]}.get(
                name, ratios["disclosure_to_healthz"]["median"]
            )
            print(
                f"{LABELS[name]:<28} {s['requests_per_s']:>11.1f} {s['p50_ms']:>8.2f} {s['p95_ms']:>8.2f} "
                f"{s['p99_ms']:>8.2f} {100 * vs:>11.1f}%"
            )
        ratio = ratios["disclosure_to_healthz"]["median"]
        verdict = "meets" if outcome["meets_target"] else "is BELOW"
        print(
            f"disclosure / healthz = {100 * ratio:.1f} % (per round: "
            f"{', '.join(f'{100 * x:.1f}' for x in ratios['disclosure_to_healthz']['per_round'])}) — {verdict} "
            f"the target of {100 * outcome['target_disclosure_to_healthz']:.0f} %"
        )
        print(f"disclosure / bare insert = {100 * ratios['disclosure_to_bare_insert']['median']:.1f} %")
        print(
            f"non-2xx: disclosures {checks['non_2xx']}, other endpoints {checks['non_2xx_other_endpoints']}; "
            f"socket errors {checks['socket_errors']}; DPoP proofs sent twice {checks['dpop_proofs_sent_twice']}"
        )
        print(
            f"disclosures: wrk counted {checks['disclosures_counted_by_wrk']}, committed "
            f"{checks['permits_committed']} permits and {checks['denies_committed']} denials"
        )
        print(f"broker audit verify: {checks['audit_verify']}")
        print()
        failed += [f"{backend}: {name}" for name in outcome["failed"]]
    return failed


if __name__ == "__main__":
    sys.exit(main())
