"""The `broker` command line (DESIGN.md, "Command line")."""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from broker.client.cli import add_client_commands
from broker.config import Settings
from broker.domain.errors import ConfigurationError

if TYPE_CHECKING:
    from policies import Policy

Handler = Callable[[argparse.Namespace], int]


def _settings(mode: str | None = None) -> Settings:
    return Settings.from_env(**({"mode": mode} if mode else {}))


def cmd_demo(args: argparse.Namespace) -> int:
    from broker.demo import create_demo

    settings = _settings("demo")
    summary = create_demo(settings, host=args.host, port=args.port)
    print(summary)
    if args.no_serve:
        return 0
    # The demo is a whole deployment on one machine: beside the web processes, a worker that pushes partner events to
    # the endpoints registered (loopback http is allowed in demo mode) and runs the scheduled jobs every minute.
    worker = subprocess.Popen([sys.executable, "-m", "broker.cli", "worker"], env={**os.environ, "BROKER_MODE": "demo"})
    try:
        return _serve(settings, args.host, args.port, workers=args.workers)
    finally:
        worker.terminate()  # SIGTERM: it stops after recording what it was sending
        try:
            worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()


def cmd_serve(args: argparse.Namespace) -> int:
    return _serve(_settings(), args.host, args.port, workers=args.workers)


def _serve(settings: Settings, host: str, port: int, *, workers: int) -> int:
    from broker.wsgi import run_gunicorn

    run_gunicorn(settings, host=host, port=port, workers=workers)
    return 0


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from broker.migrations import upgrade

    settings = _settings()
    settings.instance_path.mkdir(parents=True, exist_ok=True)
    upgrade(settings.database_url)
    print("database is at the newest schema")
    return 0


def cmd_keys_init(args: argparse.Namespace) -> int:
    from broker.adapters.keystore import KeyStore

    settings = _settings()
    settings.instance_path.mkdir(parents=True, exist_ok=True)
    store = KeyStore.open(settings.keys_path, create=True)
    print(f"key store ready: key-encryption key {store.current_kek()[0]}")
    return 0


def cmd_keys_rotate(args: argparse.Namespace) -> int:
    from broker.services.keys import rotate_keys

    settings = _settings()
    if args.checkpoint_key:
        from broker.adapters.keystore import KeyStore

        # The sequencer signs its next checkpoint with the new key; the old one stays in the key set, so the
        # checkpoints it signed keep verifying (every export's verifier.key lists both).
        kid = KeyStore.open(settings.keys_path).add_log_key()
        print(f"new checkpoint signing key {kid}; publish the new verifier key (GET /api/v1/audit/checkpoint)")
        return 0
    result = rotate_keys(settings, batch_size=args.batch_size)
    print(
        f"new key-encryption key {result.kek_id}; re-wrapped {result.records} records, "
        f"{result.persons} identity codes, {result.notices} notices and {result.idempotent_responses} stored responses"
    )
    return 0


def cmd_policy_check(args: argparse.Namespace) -> int:
    from policies import PolicyError, load_policy

    try:
        policy = load_policy(args.rules)
    except PolicyError as error:
        print(f"policy error: {error}", file=sys.stderr)
        return 1
    from policies.register import flows

    portal = f", {len(policy.portal)} portal entr{'y' if len(policy.portal) == 1 else 'ies'}" if policy.portal else ""
    print(f"policy {policy.version[:16]} is valid: {len(policy.rules)} rules{portal}, {len(flows(policy))} flows")
    return 0


def cmd_policy_test(args: argparse.Namespace) -> int:
    from policies import PolicyError, load_policy
    from policies.cases import run_cases

    try:
        policy = load_policy(args.rules)
    except PolicyError as error:
        print(f"policy error: {error}", file=sys.stderr)
        return 1
    results = run_cases(policy, args.cases)
    failed = [r for r in results if not r.passed]
    for result in failed:
        print(f"FAIL {result.name}: {result.message}", file=sys.stderr)
    print(f"{len(results) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


def cmd_policy_eval(args: argparse.Namespace) -> int:
    from policies import load_policy
    from policies.cli import evaluate_json

    policy = load_policy(args.rules)
    try:
        document = json.load(sys.stdin)
    except json.JSONDecodeError as error:
        print(f"stdin is not valid JSON: {error}", file=sys.stderr)
        return 2
    try:
        result = evaluate_json(policy, document)
    except ValueError as error:
        print(f"invalid input: {error}", file=sys.stderr)
        return 2
    json.dump(result, sys.stdout, indent=2, ensure_ascii=False)
    print()
    return 0


def cmd_policy_explain(args: argparse.Namespace) -> int:
    from policies import PolicyError, load_policy
    from policies.register import explain_all, explain_flow

    try:
        policy = load_policy(args.rules)
    except PolicyError as error:
        print(f"policy error: {error}", file=sys.stderr)
        return 2
    try:
        text = explain_flow(policy, args.flow, args.lang) if args.flow else explain_all(policy, args.lang)
    except KeyError as error:
        print(error.args[0], file=sys.stderr)
        return 2
    sys.stdout.write(text)
    return 0


def cmd_policy_register(args: argparse.Namespace) -> int:
    from policies import PolicyError, load_policy
    from policies.register import register_in, register_markdown, replace_register

    try:
        policy = load_policy(args.rules)
    except PolicyError as error:
        print(f"policy error: {error}", file=sys.stderr)
        return 2
    table = register_markdown(policy)
    document_path: Path | None = args.update or args.check
    if document_path is None:
        sys.stdout.write(table)
        return 0
    try:
        document = document_path.read_text(encoding="utf-8")
        current = register_in(document)
    except (OSError, ValueError) as error:
        print(f"{document_path}: {error}", file=sys.stderr)
        return 2
    if current == table:
        print(f"{document_path}: the register is up to date")
        return 0
    if args.check:
        print(f"{document_path}: the register is out of date; run: broker policy register --update {document_path}")
        return 1
    document_path.write_text(replace_register(document, table), encoding="utf-8")
    print(f"{document_path}: register updated")
    return 0


def cmd_policy_diff(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from policies import PolicyError
    from policies.cases import load_cases
    from policies.diff import diff_policies

    try:
        old, new = _policy_version(args.old), _policy_version(args.new)
        cases = load_cases(args.cases)
    except PolicyError as error:
        print(f"policy error: {error}", file=sys.stderr)
        return 2
    result = diff_policies(old, new, cases, datetime.now(UTC))
    for line in result.lines():
        print(line)
    return 1 if result.changed else 0


def _policy_version(spec: str) -> Policy:
    """A folder of policy files, or a version the broker has stored (its hash, or a unique prefix of 8 or more
    hex digits), read from the database the environment names."""
    from policies import PolicyError, load_policy

    if Path(spec).is_dir():
        return load_policy(spec)
    if re.fullmatch(r"[0-9a-f]{8,64}", spec):
        return _stored_policy(spec)
    raise PolicyError(f"{spec}: neither a folder of policy files nor a stored policy version (8 to 64 hex digits)")


def _stored_policy(prefix: str) -> Policy:
    from sqlalchemy import select

    from broker.adapters.database import Database
    from broker.adapters.orm import PolicyVersionRow
    from policies import PolicyError
    from policies.loader import load_policy_files

    db = Database(_settings().database_url)
    try:
        with db.session(write=False) as session:
            rows = session.scalars(
                select(PolicyVersionRow).where(PolicyVersionRow.version.startswith(prefix, autoescape=True)).limit(2)
            ).all()
    finally:
        db.dispose()
    if len(rows) != 1:
        raise PolicyError(f"{prefix}: {'no' if not rows else 'more than one'} stored policy version starts so")
    [row] = rows
    policy = load_policy_files(row.files, origin=f"stored policy {row.version[:16]}")
    if policy.version != row.version:
        raise PolicyError(f"{prefix}: the stored text does not hash to its version {row.version}")
    return policy


def cmd_audit_verify(args: argparse.Namespace) -> int:
    """Verify the whole log and store the result (the DPO's integrity page shows the last one)."""
    from broker.app import build_broker
    from broker.services.audit_check import verify_broker_log
    from broker.services.dpo import record_verification

    broker = build_broker(_settings())
    try:
        if args.no_sink:
            from audit import AuditVerificationError

            try:
                check = verify_broker_log(broker, check_sink=False)
            except AuditVerificationError as error:
                print(f"audit log INVALID: {error}", file=sys.stderr)
                return 1
            result = {
                "ok": True,
                "size": check.size,
                "root": check.root.hex(),
                "checkpoints": check.checkpoints,
                "pending": check.pending,
                "exported_size": None,
            }
        else:
            result = record_verification(broker)
    finally:
        broker.db.dispose()
    if not result["ok"]:
        where = f"entry {result['failure_index']}: " if result.get("failure_index") is not None else ""
        print(f"audit log INVALID: {where}{result['failure_kind']}: {result['message']}", file=sys.stderr)
        return 1
    if args.no_sink:
        exported = "sink not checked"
    elif result["exported_size"] is None:
        exported = "sink empty"
    else:
        exported = f"extends the exported checkpoint of {result['exported_size']}"
    print(
        f"audit log verified: {result['size']} entries, root {result['root']}, "
        f"{result['checkpoints']} signed checkpoints, {exported}, {result['pending']} entries awaiting sequencing"
    )
    return 0


def cmd_audit_sequence(args: argparse.Namespace) -> int:
    """Run the sequencer in this process: once, or until interrupted (for deployments that run it apart from
    the web processes, with BROKER_AUDIT_SEQUENCER=off there)."""
    import time

    from broker.app import build_broker
    from broker.services.sequencer import Sequencer, SequencerHalted, SequencerThread

    broker = build_broker(_settings())
    try:
        if args.once:
            sequencer = Sequencer(broker)
            try:
                sequencer.check_against_sink()
                result = sequencer.run_once()
            except SequencerHalted as error:
                print(f"sequencer halted: {error}", file=sys.stderr)
                return 1
            print(
                f"sequenced {result.integrated} entries; tree size {result.size}; "
                f"checkpoint {'exported' if result.exported else 'already exported'}"
            )
            return 0
        thread = SequencerThread(broker)
        thread.start()
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            thread.stop()
        return 0
    finally:
        broker.db.dispose()


def cmd_audit_export(args: argparse.Namespace) -> int:
    from broker.app import build_broker
    from broker.services.audit_export import ExportError, export_log

    broker = build_broker(_settings())
    try:
        summary = export_log(broker, args.directory, first=args.from_index, end=args.to_index)
    except ExportError as error:
        print(f"export failed: {error}", file=sys.stderr)
        return 1
    finally:
        broker.db.dispose()
    print(summary)
    return 0


def cmd_export_fhir(args: argparse.Namespace) -> int:
    """Each person's consents and disclosures as a FHIR R4 Bundle, as the data-protection officer sees them."""
    from broker.app import build_broker
    from broker.services.fhir import ExportError, export_fhir

    broker = build_broker(_settings())
    try:
        summary = export_fhir(broker, args.directory, person_id=args.person)
    except ExportError as error:
        print(f"export failed: {error}", file=sys.stderr)
        return 1
    finally:
        broker.db.dispose()
    print(summary.line())
    return 0


def cmd_jobs_run(args: argparse.Namespace) -> int:
    from broker.app import build_broker
    from broker.services.jobs import JobRunError, run_jobs

    broker = build_broker(_settings())
    try:
        report = run_jobs(broker, args.now)
    except JobRunError as error:
        print(f"jobs: {error}", file=sys.stderr)
        return 2
    finally:
        broker.db.dispose()
    for line in report.lines():
        print(line)
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    """Deliver webhook events and run the scheduled jobs until stopped (docs/webhooks.md, "The worker")."""
    from broker.app import build_broker
    from broker.logs import configure_logging
    from broker.worker import Worker, WorkerOptions, lease_from_env, stop_on_signals

    options = WorkerOptions(
        interval=args.interval,
        batch=args.batch,
        concurrency=args.concurrency,
        jobs_interval=args.jobs_interval,
        lease=lease_from_env(),
    )
    options.check()
    configure_logging()
    broker = build_broker(_settings())
    try:
        worker = Worker(broker, options)
        stop_on_signals(worker)
        return worker.run(once=args.once)
    finally:
        broker.db.dispose()


def cmd_retention_run(args: argparse.Namespace) -> int:
    from broker.app import build_broker
    from broker.services.retention import RetentionRunError, RetentionScheduleError, run_retention

    broker = build_broker(_settings())
    try:
        report = run_retention(broker, args.now, dry_run=args.dry_run, batch_size=args.batch_size)
    except (RetentionScheduleError, RetentionRunError) as error:
        print(f"retention: {error}", file=sys.stderr)
        return 2
    finally:
        broker.db.dispose()
    for line in report.lines():
        print(line)
    return 0


def cmd_bench_seed(args: argparse.Namespace) -> int:
    """Fill the configured database with fictional persons at national scale (docs/seeding.md)."""
    from broker.seed import SeedError, SeedOptions, check_options, seed_persons

    options = SeedOptions(
        persons=args.persons,
        entries_per_person=args.entries_per_person,
        seed=args.seed,
        sample=args.sample,
        manifest=args.manifest,
        workers=args.workers,
        chunk=args.chunk,
        batch=args.batch,
        now=args.now,
    )
    try:
        check_options(options)
    except SeedError as error:
        print(f"bench seed: {error}", file=sys.stderr)
        return 2
    try:
        result = seed_persons(_settings(), options)
    except SeedError as error:
        print(f"bench seed: {error}", file=sys.stderr)
        return 1
    counts = result.counts
    print(
        f"seeded {counts['persons']:,} persons (numbers {result.first_ordinal:,}–"
        f"{result.first_ordinal + counts['persons'] - 1:,}): {counts['relationships']:,} service relationships, "
        f"{counts['consents']:,} consents ({counts['consents_withdrawn']:,} withdrawn, {counts['consents_expired']:,} "
        f"expired), {counts['records']:,} records, {counts['disclosures']:,} disclosures, {counts['notices']:,} "
        f"notices, {counts['audit_entries']:,} audit entries"
    )
    print(f"audit log: {result.log_size:,} entries in the tree, newest checkpoint exported")
    print(f"{result.eligible:,} persons ready for the benchmark disclosure; time {result.seconds['total']:.1f} s")
    work = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in result.worker_seconds.items())
    print(f"workers: {work}; sequencer {result.sequencer_seconds:.1f} s (CPU {result.sequencer_cpu_seconds:.1f} s)")
    if result.manifest is not None:
        print(f"manifest: {result.manifest} ({result.sampled:,} persons)")
    return 0


def _instant(value: str) -> datetime:
    """An ISO 8601 time with its UTC offset (`2030-03-10T00:00:00+02:00`, `…Z`): a bare date or time would leave
    open which day it is in Helsinki."""
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {value!r}") from None
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError(f"give the UTC offset too, e.g. {value}+02:00 or {value}Z")
    return moment


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="broker", description="Consent Broker")
    commands = parser.add_subparsers(dest="command", required=True)

    def add(
        name: str, handler: Handler, help_text: str, sub: argparse._SubParsersAction | None = None
    ) -> argparse.ArgumentParser:  # type: ignore[type-arg]
        command = (sub or commands).add_parser(name, help=help_text, description=help_text)
        command.set_defaults(handler=handler)
        return command

    for name, handler, help_text in (
        ("demo", cmd_demo, "create or refresh the demo instance, then serve it"),
        ("serve", cmd_serve, "serve the broker under gunicorn"),
    ):
        command = add(name, handler, help_text)
        command.add_argument("--host", default="127.0.0.1")
        command.add_argument("--port", type=int, default=8000)
        command.add_argument("--workers", type=int, default=2)
        if name == "demo":
            command.add_argument("--no-serve", action="store_true", help="only create the instance")

    db = commands.add_parser("db", help="database schema").add_subparsers(dest="db_command", required=True)
    add("upgrade", cmd_db_upgrade, "apply the Alembic migrations", db)

    keys = commands.add_parser("keys", help="key store").add_subparsers(dest="keys_command", required=True)
    add("init", cmd_keys_init, "create the instance's key store", keys)
    rotate = add("rotate", cmd_keys_rotate, "add a key-encryption key and re-wrap every data key", keys)
    rotate.add_argument("--batch-size", type=int, default=500)
    rotate.add_argument(
        "--checkpoint-key", action="store_true", help="instead: add a new key for signing the audit log's checkpoints"
    )

    policy = commands.add_parser("policy", help="policy files").add_subparsers(dest="policy_command", required=True)
    for name, handler, help_text in (
        ("check", cmd_policy_check, "validate the policy files"),
        ("test", cmd_policy_test, "run the decision tables"),
        ("eval", cmd_policy_eval, "what-if: request and facts as JSON on stdin, decision JSON on stdout"),
        ("explain", cmd_policy_explain, "a flow's rules in words: who, what, from whom, why, on which basis"),
        ("register", cmd_policy_register, "the register of flows as a Markdown table, generated from the files"),
    ):
        command = add(name, handler, help_text, policy)
        command.add_argument("--rules", type=Path, default=None, help="policy rules folder")
        if name == "test":
            command.add_argument("--cases", type=Path, default=None, help="decision tables folder")
        if name == "explain":
            command.add_argument("flow", nargs="?", help="a flow (F7, F12) or a rule (F12a); without it, every flow")
            command.add_argument("--lang", choices=("en", "fi", "sv"), default="en", help="language of the explanation")
        if name == "register":
            target = command.add_mutually_exclusive_group()
            target.add_argument("--update", type=Path, metavar="FILE", help="rewrite the register inside FILE")
            target.add_argument("--check", type=Path, metavar="FILE", help="exit 1 when FILE's register is out of date")
    diff = add(
        "diff",
        cmd_policy_diff,
        "what changes between two policy versions, over the decision tables and a generated request set; "
        "exit 0 when nothing changes, 1 when something does, 2 on an error",
        policy,
    )
    diff.add_argument("old", metavar="OLD", help="rules folder, or a stored policy version (hash or unique prefix)")
    diff.add_argument("new", metavar="NEW", help="rules folder, or a stored policy version (hash or unique prefix)")
    diff.add_argument("--cases", type=Path, default=None, help="decision tables folder (default: the shipped ones)")

    jobs = commands.add_parser("jobs", help="scheduled jobs").add_subparsers(dest="jobs_command", required=True)
    jobs_run = add(
        "run",
        cmd_jobs_run,
        "run the scheduled jobs once: forget expired assertion and DPoP proof ids, tokens and Idempotency-Key "
        "responses; expire consent requests past their deadline and consents past their end or relationship "
        "(docs/jobs.md)",
        jobs,
    )
    jobs_run.add_argument(
        "--now", type=_instant, default=None, metavar="ISO", help="expire as of this time (default: now; not future)"
    )

    worker = add(
        "worker",
        cmd_worker,
        "deliver webhook events to partners' endpoints and run the scheduled jobs, until SIGTERM or SIGINT "
        "(docs/webhooks.md)",
    )
    worker.add_argument("--once", action="store_true", help="one round of deliveries and the jobs, then exit")
    worker.add_argument("--interval", type=float, default=2.0, metavar="S", help="seconds between polls (default 2)")
    worker.add_argument("--batch", type=int, default=50, metavar="N", help="deliveries taken per round (default 50)")
    worker.add_argument("--concurrency", type=int, default=4, metavar="N", help="sends at once (default 4)")
    worker.add_argument(
        "--jobs-interval", type=float, default=60.0, metavar="S", help="seconds between job runs (default 60; 0: none)"
    )

    retention = commands.add_parser("retention", help="retention of record content (docs/retention.md)")
    retention_commands = retention.add_subparsers(dest="retention_command", required=True)
    retention_run = add(
        "run",
        cmd_retention_run,
        "erase the content of records whose retention period (policies/retention.yaml) has ended; "
        "print what was erased and kept, per category",
        retention_commands,
    )
    retention_run.add_argument("--dry-run", action="store_true", help="count what would be erased; change nothing")
    retention_run.add_argument(
        "--now", type=_instant, default=None, metavar="ISO", help="as of this time (default: now; future: dry run only)"
    )
    retention_run.add_argument("--batch-size", type=int, default=500, help="records erased per transaction")

    bench = commands.add_parser("bench", help="benchmark tools").add_subparsers(dest="bench_command", required=True)
    seed = add(
        "seed",
        cmd_bench_seed,
        "add N fictional persons with relationships, consents, records, disclosures and audit entries to the "
        "configured demo instance's database, and sequence the log (docs/seeding.md)",
        bench,
    )
    seed.add_argument("--persons", type=int, required=True, metavar="N", help="persons to add")
    seed.add_argument("--entries-per-person", type=int, default=10, metavar="E", help="audit entries per person")
    seed.add_argument("--seed", type=int, default=1, metavar="S", help="the same seed makes the same persons")
    seed.add_argument("--manifest", type=Path, default=None, metavar="PATH", help="write benchmark-ready persons here")
    seed.add_argument("--sample", type=int, default=10_000, metavar="K", help="persons listed in the manifest")
    seed.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes making persons")
    seed.add_argument("--chunk", type=int, default=2_000, help="persons per transaction")
    seed.add_argument("--batch", type=int, default=50_000, help="entries per sequencer batch (one checkpoint each)")
    seed.add_argument(
        "--now", type=_instant, default=None, metavar="ISO", help="end of the seeded history (default: now)"
    )

    audit = commands.add_parser("audit", help="audit log").add_subparsers(dest="audit_command", required=True)
    verify = add(
        "verify", cmd_audit_verify, "verify the whole log in the database and against the exported checkpoints", audit
    )
    verify.add_argument("--no-sink", action="store_true", help="do not compare with the checkpoint sink")
    sequence = add("sequence", cmd_audit_sequence, "run the audit sequencer (integrate, sign, export)", audit)
    sequence.add_argument("--once", action="store_true", help="one round, then exit")
    export = add("export", cmd_audit_export, "write a verifiable export (python -m audit verify DIR)", audit)
    export.add_argument("directory", type=Path, metavar="DIR", help="a new or empty folder")
    export.add_argument("--from", dest="from_index", type=int, default=None, help="first entry index (default 0)")
    export.add_argument("--to", dest="to_index", type=int, default=None, help="end index, exclusive (default all)")

    exports = commands.add_parser("export", help="consents and disclosures in standard formats")
    export_commands = exports.add_subparsers(dest="export_command", required=True)
    fhir_export = add(
        "fhir",
        cmd_export_fhir,
        "write each person's consents and disclosures as a FHIR R4 Bundle to DIR/<person_id>.json (logged)",
        export_commands,
    )
    fhir_export.add_argument("directory", type=Path, metavar="DIR", help="a new or empty folder")
    fhir_export.add_argument("--person", default=None, metavar="PERSON_ID", help="only this person")

    add_client_commands(commands)  # `broker client …`: the partner client (broker/client/cli.py)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.handler(args)
    except ConfigurationError as error:
        print(f"configuration error: {error}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
