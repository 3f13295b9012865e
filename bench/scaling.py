"""`make bench-scaling`: disclosures per second from one broker instance and from two, against one PostgreSQL.

Issue #7: two instances on PostgreSQL give ≥ 1.6 × the throughput of one, and the log stays one consistent,
verifiable tree. What it does (docs/scaling.md has the figures and how to read them):

1. creates a demo instance on a fresh database of the PostgreSQL server named by `--postgres URL` or
   BROKER_BENCH_POSTGRES_URL (dropped afterwards); both broker instances use its folder — the same keys, the same
   checkpoint sink (BROKER_AUDIT_SINK, set explicitly to the folder's `checkpoints/`) and the same issuer (one
   public URL, as behind a load balancer; DPoP proofs name it);
2. gives every part a CPU budget, so that the machine is not what is measured: each instance, the load generator
   and PostgreSQL's backends for this database (bench/cpu_budget.py: cgroup v1 CFS quotas when writable, else
   taskset). An instance is `broker serve --workers N` (gunicorn, sync workers) started inside its budget, so its
   workers are too; PostgreSQL's backends are moved into theirs before each measured run;
3. in each round measures one instance (A alone), then starts instance B on its own port and measures both,
   then stops B. The load generator is one wrk process with `--threads` threads; bench/wrk_report.lua connects
   thread i to instance i mod n (BENCH_ADDRS), with `--connections-per-instance` connections per instance, so
   each instance sees the same offered load in both configurations. Every instance runs the audit sequencer;
   one is elected (a PostgreSQL advisory lock, docs/audit.md) — A, started first — and integrates every entry;
4. checks as the HTTP benchmark does (no non-2xx, no socket error, no DPoP proof sent twice, every disclosure a
   committed permit), then sequences what is left and runs `broker audit verify` against the shared sink: the
   log written by both instances must verify as one tree;
5. prints and writes bench/results/scaling-<date>[-label].json: rates, p50/p95/p99, the ratio of two to one
   (median of the per-round ratios), and each budget's use (cores used, share of CFS periods throttled).

A benchmark, not a test: traffic to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.cpu_budget import Budget, Budgets
from bench.harness import (
    ASK,
    PARTNER,
    BenchError,
    Load,
    Partner,
    audit_mark,
    backend_pids,
    broker_command,
    broker_env,
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
    postgres_url,
    result_header,
    scratch_database,
    serve,
    started_at,
    summarise,
    verify_log,
    write_result,
)
from bench.scale import SeededSet, kept_set, manifest_persons, sink_origin, upgrade

TARGET = 1.6  # issue #7: two instances ≥ 1.6 × the throughput of one


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.scaling", description=__doc__.split("\n")[0])
    parser.add_argument("--postgres", metavar="URL", help="the PostgreSQL server (default $BROKER_BENCH_POSTGRES_URL)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers per instance (default 2)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads, a multiple of 2 (default 2)")
    parser.add_argument(
        "--connections-per-instance", type=int, default=8, help="wrk connections per instance (default 8)"
    )
    parser.add_argument("--duration", type=int, default=10, help="seconds per measured run (default 10)")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of warm-up before each run (default 2)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of one instance, then two (default 3)")
    parser.add_argument(
        "--budget",
        choices=("auto", "cgroup", "taskset", "none"),
        default="auto",
        help="how CPU budgets are enforced: cgroup (v1 CFS quotas), taskset (whole cores: A on CPU 0, B on "
        "CPU 1, wrk and PostgreSQL unpinned), none; auto: cgroup when writable, else taskset (default)",
    )
    # The defaults add up to the 2 cores of the reference machine: 2 × 0.5 for the instances, 0.2 for wrk (which
    # used < 0.05 at these rates) and 0.8 for PostgreSQL (which used ≈ 0.3 with two instances).
    parser.add_argument("--instance-cpu", type=float, default=0.5, help="cores per instance (default 0.5)")
    parser.add_argument("--wrk-cpu", type=float, default=0.2, help="cores for wrk (default 0.2)")
    parser.add_argument(
        "--postgres-cpu", type=float, default=0.8, help="cores for this database's backends (default 0.8)"
    )
    parser.add_argument(
        "--seeded-set",
        type=Path,
        metavar="DIR",
        help="a seeded set kept by bench/scale.py (e.g. bench/seeded/persons-10000): requests spread over its "
        "manifest's persons instead of the demo's one person, on its database (which keeps the disclosures)",
    )
    parser.add_argument("--label", default="", help="appended to the results file name")
    parser.add_argument("--no-write", action="store_true", help="do not write bench/results/*.json")
    parser.add_argument("--keep", action="store_true", help="keep the temporary instance, logs and database")
    args = parser.parse_args(argv)
    args.postgres = postgres_url(args.postgres)
    if not args.postgres and not args.seeded_set:
        parser.error("needs a PostgreSQL server: --postgres URL or BROKER_BENCH_POSTGRES_URL (or --seeded-set)")
    if args.threads < 2 or args.threads % 2:
        parser.error("--threads must be a multiple of 2: wrk's threads are split evenly between the instances")
    if args.connections_per_instance < args.threads // 2:
        parser.error("--connections-per-instance must be at least --threads / 2 (a connection per thread)")
    if min(args.rounds, args.duration, args.workers) < 1 or args.warmup < 0:
        parser.error("--rounds, --duration and --workers must be at least 1, --warmup at least 0")
    if args.duration + args.warmup >= 240:
        parser.error("keep warm-up + duration well under the access token's 300 s lifetime")
    for name in ("instance_cpu", "wrk_cpu", "postgres_cpu"):
        if not 0.05 <= getattr(args, name) <= 8:
            parser.error(f"--{name.replace('_', '-')} must be between 0.05 and 8 cores")
    return args


class Instances:
    """Broker instances A, B, … of one demo instance folder, each on its own port, started and stopped alone."""

    def __init__(self, env: dict[str, str], workdir: Path, budgets: Budgets, workers: int, names: list[str]) -> None:
        self.env = env
        self.workdir = workdir
        self.budgets = budgets
        self.workers = workers
        self.ports = {name: free_port() for name in names}
        self.running: dict[str, contextlib.ExitStack] = {}

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    def start(self, name: str) -> None:
        stack = contextlib.ExitStack()
        command = broker_command(self.ports[name], self.workers, prefix=self.budgets.prefix(f"instance-{name}"))
        stack.enter_context(serve(command, self.env, self.log(name), f"{self.url(name)}/healthz"))
        self.running[name] = stack

    def stop(self, name: str) -> None:
        self.running.pop(name).close()

    def log(self, name: str) -> Path:
        return self.workdir / f"instance-{name.lower()}.log"

    def elected(self) -> list[str]:
        """The instances whose log says that their sequencer was elected."""
        return [n for n in self.ports if self.log(n).exists() and "elected audit sequencer" in self.log(n).read_text()]

    @contextlib.contextmanager
    def stopped_at_exit(self) -> Iterator[Instances]:
        try:
            yield self
        finally:
            for name in list(self.running):
                self.stop(name)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    wrk = find_wrk()
    started, load_before = started_at()
    workdir = Path(tempfile.mkdtemp(prefix="broker-scaling-"))
    budgets = Budgets(
        [
            Budget("instance-A", args.instance_cpu, cpus="0"),
            Budget("instance-B", args.instance_cpu, cpus="1"),
            Budget("wrk", args.wrk_cpu),
            Budget("postgres", args.postgres_cpu),
        ],
        mode=args.budget,
    )
    try:
        with budgets, contextlib.ExitStack() as stack:
            seeded = None
            if args.seeded_set:
                seeded = kept_set(args.seeded_set.resolve())
                if seeded is None:
                    raise BenchError(f"{args.seeded_set}: the seeded set has lost its database or its manifest")
                database_url = seeded.database_url
            else:
                database_url = stack.enter_context(scratch_database(args.postgres, "scaling", keep=args.keep))
            header = result_header("scaling", started, load_before, wrk, database_url)
            outcome = run(args, wrk, workdir, budgets, database_url, seeded)
    finally:
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    failed = outcome.pop("failed")
    result = {
        **header,
        "settings": outcome.pop("settings"),
        **outcome,
        "loadavg_after": loadavg(),
        "ok": not failed,
    }
    if not args.no_write:
        write_result("scaling", started, args.label, result)
    if failed:
        print(f"CHECKS FAILED: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def run(
    args: argparse.Namespace,
    wrk: str,
    workdir: Path,
    budgets: Budgets,
    database_url: str,
    seeded: SeededSet | None,
) -> dict[str, Any]:
    instance = seeded.instance if seeded else workdir / "instance"
    names = ["A", "B"]
    placeholder = broker_env(instance, "http://127.0.0.1", database_url)
    instances = Instances(placeholder, workdir, budgets, args.workers, names)
    issuer = instances.url("A")  # the deployment's one public URL: tokens and DPoP proofs name it
    env = broker_env(instance, issuer, database_url) | {
        # Shared by both instances (they share the instance folder; set explicitly so that it shows).
        "BROKER_AUDIT_SINK": str(instance / "checkpoints"),
        "BROKER_DPOP_MAX_AGE": str(dpop_max_age(args.duration)),
    }
    if seeded is None:
        demo = create_demo(env, instances.ports["A"])
        persons = [demo_person(demo)]
        wrk_env = {"BENCH_METHOD": "POST", "BENCH_BODY": json.dumps({"person_id": persons[0], **ASK})}
    else:
        # A seeded set: its log keeps the name it was signed under; each request for a person of the manifest.
        env["BROKER_AUDIT_ORIGIN"] = sink_origin(instance)
        upgrade(env, seeded)
        demo = json.loads((instance / "demo.json").read_text())
        assert seeded.manifest is not None
        persons = manifest_persons(seeded.manifest)
        persons_file = workdir / "persons.txt"
        persons_file.write_text("\n".join(persons) + "\n")
        body = json.dumps({"person_id": "PERSON_ID", **ASK})
        wrk_env = {"BENCH_METHOD": "POST", "BENCH_BODY": body, "BENCH_PERSONS": str(persons_file)}
    person_id = persons[0]
    instances.env = env
    print(f"budgets: {budgets.describe()['how']}")
    for name, spec in budgets.describe()["budgets"].items():
        print(f"  {name}: {spec}")

    runs: dict[str, list[dict[str, Any]]] = {"1": [], "2": []}
    with instances.stopped_at_exit():
        instances.start("A")
        partner = Partner(instance, demo, instances.url("A"), issuer)
        partner.disclose(person_id, attempts=10)
        mark = audit_mark(database_url)
        for round_no in range(1, args.rounds + 1):
            for config in ("1", "2"):
                serving = names[: int(config)]
                if config == "2":
                    instances.start("B")
                    partner.disclose(person_id, base_url=instances.url("B"))
                load = Load(
                    args.threads,
                    args.connections_per_instance * len(serving),
                    args.duration,
                    args.warmup,
                    prefix=tuple(budgets.prefix("wrk")),
                )
                addrs = ",".join(f"127.0.0.1:{instances.ports[n]}" for n in serving)
                measured: dict[str, Any] = {}

                def before_measured(measured: dict[str, Any] = measured) -> None:
                    # PostgreSQL's backends for this database (the instances' pools, the sequencer's connections)
                    # go into their budget; a connection opened later would be outside it, so they are counted
                    # again after the run.
                    measured["backends_moved"] = len(budgets.move("postgres", backend_pids(database_url)))
                    measured["usage"] = budgets.usage()
                    measured["t"] = time.monotonic()

                result = disclosure_run(
                    wrk,
                    load,
                    f"{issuer}/api/v1/disclosures",
                    partner,
                    wrk_env | {"BENCH_ADDRS": addrs},
                    expected_rate=400.0 * len(serving),
                    proof_file=workdir / "proofs.txt",
                    before_measured=before_measured,
                )
                seconds = time.monotonic() - measured["t"]
                result["budgets"] = Budgets.delta(measured["usage"], budgets.usage(), seconds)
                result["postgres_backends_moved"] = measured["backends_moved"]
                outside = set(backend_pids(database_url)) - set(budgets.moved("postgres"))
                result["postgres_backends_outside_budget"] = len(outside)
                runs[config].append(result)
                latency = result["latency_us"]
                used = ", ".join(
                    f"{n} {u['cores_used']} cores ({u['throttled_periods_pct']} % throttled)"
                    for n, u in result["budgets"].items()
                    if u["cores_used"] is not None
                )
                print(
                    f"  round {round_no} {config} instance(s) {result['requests_per_s']:8.1f} disclosures/s  "
                    f"p50 {latency['p50'] / 1000:6.2f} ms  p95 {latency['p95'] / 1000:6.2f} ms  "
                    f"p99 {latency['p99'] / 1000:6.2f} ms  non-2xx {result['non_2xx']}"
                )
                if used:
                    print(f"      {used}")
                if config == "2":
                    instances.stop("B")
        elected = instances.elected()
        instances.stop("A")

    committed = disclosures_since(database_url, mark)
    verified = verify_log(env)
    sink = sorted(p.name for p in (instance / "checkpoints").glob("*.note"))
    summary = {config: summarise(results) for config, results in runs.items()}
    per_round = [two["requests_per_s"] / one["requests_per_s"] for one, two in zip(runs["1"], runs["2"], strict=True)]
    ratio = round(statistics.median_low(per_round), 3)
    sent = sum(r["sent_with_warmup"] for results in runs.values() for r in results)
    merged = {key: summary["1"][key] + summary["2"][key] for key in ("non_2xx", "socket_errors", "proofs_exhausted")}
    checks = disclosure_checks(merged, sent, committed) | verified
    checks["elected_sequencers"] = elected
    checks["sink_checkpoints"] = len(sink)
    failed = failed_checks(checks)
    if len(elected) > 1:
        failed.append("more than one elected sequencer")

    budget_use = {
        config: {
            name: {
                key: round(statistics.median(r["budgets"][name][key] or 0 for r in results), 3)
                for key in ("cores_used", "throttled_periods_pct")
            }
            for name in (results[0]["budgets"] if results else {})
        }
        for config, results in runs.items()
    }
    warnings = budget_warnings(budgets, budget_use)
    print()
    print(f"{'instances':<10} {'disclosures/s':>14} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}  rates")
    for config, s in summary.items():
        print(
            f"{config:<10} {s['requests_per_s']:>14.1f} {s['p50_ms']:>8.2f} {s['p95_ms']:>8.2f} {s['p99_ms']:>8.2f}  "
            f"{s['rates']}"
        )
    verdict = "meets" if ratio >= TARGET else "is BELOW"
    print(
        f"two / one = {ratio:.2f} × (per round: {', '.join(f'{x:.2f}' for x in per_round)}) — {verdict} the target "
        f"of {TARGET} ×"
    )
    print(f"budgets ({budgets.mode}), median cores used and share of periods throttled: {budget_use}")
    for warning in warnings:
        print(f"WARNING: {warning}")
    print(
        f"non-2xx {checks['non_2xx']}; socket errors {checks['socket_errors']}; DPoP proofs sent twice "
        f"{checks['dpop_proofs_sent_twice']}; wrk counted {sent}, committed {committed['permit']} permits, "
        f"{committed['deny']} denials"
    )
    print(f"elected sequencer: instance {', '.join(elected) or '(none logged)'}; {len(sink)} checkpoints in the sink")
    print(f"broker audit verify: {checks['audit_verify']}")
    return {
        "settings": {
            "instances": f"broker serve --workers {args.workers} (gunicorn sync workers) per instance, own port",
            "shared": "one PostgreSQL database, one instance folder (keys, checkpoint sink), one issuer URL",
            "load": (
                f"one wrk process, -t{args.threads}, {args.connections_per_instance} connections per instance, "
                "thread i connected to instance i mod n (BENCH_ADDRS in bench/wrk_report.lua)"
            ),
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "rounds": args.rounds,
            "order": "each round: A alone, then A and B (B started for it and stopped after)",
            "request": {
                "partner": PARTNER,
                **ASK,
                "person": "mikko (the demo)"
                if seeded is None
                else f"drawn at random per request from {len(persons):,} of the seeded set's {seeded.label} persons",
            },
            "cpu_budgets": budgets.describe(),
        },
        "results": summary,
        "ratio_two_to_one": ratio,
        "ratio_per_round": [round(x, 3) for x in per_round],
        "target": TARGET,
        "meets_target": ratio >= TARGET,
        "budget_use_median": budget_use,
        "runs": {
            config: [
                {
                    "requests_per_s": round(r["requests_per_s"], 1),
                    "budgets": r["budgets"],
                    "postgres_backends_moved": r["postgres_backends_moved"],
                    "postgres_backends_outside_budget": r["postgres_backends_outside_budget"],
                }
                for r in results
            ]
            for config, results in runs.items()
        },
        "warnings": warnings,
        "checks": checks,
        "failed": failed,
    }


def budget_warnings(budgets: Budgets, use: dict[str, dict[str, dict[str, float]]]) -> list[str]:
    """What makes the ratio mean less than it seems. The figure is meant to compare instances that each use their
    whole budget, with wrk and PostgreSQL never short of theirs: an instance well under its budget was held back by
    something else (other processes on the machine, PostgreSQL, locks), and a throttled wrk or PostgreSQL is a
    bottleneck of the harness, not of the broker."""
    found: list[str] = []
    if budgets.mode != "cgroup":
        return ["no CPU quotas (cgroup v1 cpu controller not writable): the instances share the machine's cores"]
    for config, groups in use.items():
        for name, used in groups.items():
            cores = budgets.budgets[name].cores
            serving = name == "instance-A" or (name == "instance-B" and config == "2")
            if serving and used["cores_used"] < 0.85 * cores:
                found.append(
                    f"{config} instance(s): {name} used {used['cores_used']} of its {cores} cores — something other "
                    "than its budget held it back (other processes on the machine, PostgreSQL, locks)"
                )
            if name in {"wrk", "postgres"} and used["throttled_periods_pct"] > 5:
                found.append(
                    f"{config} instance(s): {name} was throttled in {used['throttled_periods_pct']} % of periods: "
                    f"its budget ({cores} cores) limited the run"
                )
    return found


if __name__ == "__main__":
    sys.exit(main())
