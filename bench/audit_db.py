"""`make bench-audit` (database side): the sequencer's throughput and the cost of a proof at national scale.

1. fills a fresh database (SQLite in a temporary folder, or PostgreSQL with `--postgres URL`) with N pending
   entries shaped like real disclosure entries (default 1,000,000), the way disclosures append them;
2. runs the sequencer over them in batches (`--batch`, default 10,000: one signed checkpoint per batch) and
   reports entries integrated per second;
3. times inclusion proofs (RFC 9162 §2.1.3) of random entries against the full tree, and consistency proofs
   between random earlier checkpoints and the full tree, through the same service the API uses
   (broker/services/audit_read.py): p50, p99 and max in milliseconds. The issue's target: an inclusion proof
   ≤ 2 ms at 1,000,000 entries.

A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import json
import random
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import insert, text

from audit import commit_actor, new_actor_salt
from audit.entry import encode_pending
from bench.machine import machine_info

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
TARGET_MS = 2.0


def _pending_rows(count: int, start: datetime) -> list[dict[str, Any]]:
    rows = []
    for i in range(count):
        person = f"per_{secrets.token_hex(16)}"
        salt = new_actor_salt()
        data, split = encode_pending(
            logged_at=start + timedelta(milliseconds=i),
            event="disclosure:permit",
            request_id=secrets.token_hex(8),
            partner="varha-health",
            organisation="varha-health",
            actor_role="physician",
            actor_commitment=commit_actor(f"staff-{i % 500}", salt),
            person_id=person,
            category="work_assessment",
            purpose="work_capacity_assessment",
            effect="permit",
            basis={"kind": "consent", "consent_id": f"con_{secrets.token_hex(16)}", "rule": "F12a"},
            policy_version=secrets.token_hex(32),
            record_ids=[f"rec_{secrets.token_hex(16)}"],
            fields=["assessment_date", "capacity", "restrictions", "summary"],
            payload_sha256=secrets.token_hex(32),
            detail={"disclosure_id": f"dis_{secrets.token_hex(16)}"},
        )
        rows.append(
            {
                "entry": data,
                "split": split,
                "logged_at": start + timedelta(milliseconds=i),
                "event": "disclosure:permit",
                "person_id": person,
                "organisation": "varha-health",
                "category": "work_assessment",
                "purpose": "work_capacity_assessment",
                "effect": "permit",
                "basis_kind": "consent",
            }
        )
    return rows


def _percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_ms": round(statistics.median(ordered) * 1000, 3),
        "p99_ms": round(ordered[int(len(ordered) * 0.99) - 1] * 1000, 3),
        "max_ms": round(ordered[-1] * 1000, 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.audit_db", description=__doc__.split("\n")[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=10_000, help="sequencer batch size (one checkpoint each)")
    parser.add_argument("--proofs", type=int, default=2_000, help="proofs of each kind to time")
    parser.add_argument("--postgres", metavar="URL", help="run on this PostgreSQL database (a scratch schema)")
    parser.add_argument("--no-write", action="store_true", help="do not write bench/results/*.json")
    args = parser.parse_args(argv)

    from broker.adapters.database import Database
    from broker.adapters.orm import AuditEntryRow, Base
    from broker.app import build_broker
    from broker.config import Settings
    from broker.services import audit_read
    from broker.services.sequencer import Sequencer

    workdir = Path(tempfile.mkdtemp(prefix="broker-bench-audit-"))
    schema = None
    try:
        if args.postgres:
            schema = f"bench_{secrets.token_hex(4)}"
            admin = Database(args.postgres)
            with admin.engine.begin() as connection:
                connection.execute(text(f'CREATE SCHEMA "{schema}"'))
            admin.dispose()
            separator = "&" if "?" in args.postgres else "?"
            url = f"{args.postgres}{separator}options=-csearch_path%3D{schema}"
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

        start = datetime(2026, 1, 1, tzinfo=UTC)
        print(f"appending {args.entries:,} entries ({'PostgreSQL' if args.postgres else 'SQLite'})…", flush=True)
        began = time.perf_counter()
        chunk = 20_000
        for offset in range(0, args.entries, chunk):
            rows = _pending_rows(min(chunk, args.entries - offset), start + timedelta(seconds=offset))
            with broker.uow() as uow:
                uow.session.execute(insert(AuditEntryRow.__table__), rows)
                uow.commit()
        appended_s = time.perf_counter() - began

        print(f"sequencing in batches of {args.batch:,}…", flush=True)
        sequencer = Sequencer(broker)
        began = time.perf_counter()
        result = sequencer.run_once(start + timedelta(days=1))
        sequenced_s = time.perf_counter() - began
        size = result.size
        print(f"  {size:,} entries in {sequenced_s:.1f} s: {size / sequenced_s:,.0f} entries/s")

        rng = random.Random(7)
        inclusion: list[float] = []
        for _ in range(args.proofs):
            index = rng.randrange(size)
            t0 = time.perf_counter()
            audit_read.inclusion(broker, index, size)
            inclusion.append(time.perf_counter() - t0)
        checkpoints = list(range(args.batch, size, args.batch)) or [max(1, size // 2)]
        consistency: list[float] = []
        for _ in range(args.proofs):
            first = rng.choice(checkpoints)
            t0 = time.perf_counter()
            audit_read.consistency(broker, first, size)
            consistency.append(time.perf_counter() - t0)
        broker.db.dispose()

        figures = {
            "entries": size,
            "append_entries_per_s": round(size / appended_s),
            "sequencer_entries_per_s": round(size / sequenced_s),
            "inclusion_proof": _percentiles(inclusion),
            "consistency_proof": _percentiles(consistency),
        }
        print(
            f"inclusion proof at {size:,}: p50 {figures['inclusion_proof']['p50_ms']} ms, "
            f"p99 {figures['inclusion_proof']['p99_ms']} ms, max {figures['inclusion_proof']['max_ms']} ms "
            f"(target ≤ {TARGET_MS} ms)"
        )
        print(
            f"consistency proof: p50 {figures['consistency_proof']['p50_ms']} ms, "
            f"p99 {figures['consistency_proof']['p99_ms']} ms"
        )
        meets = figures["inclusion_proof"]["p99_ms"] <= TARGET_MS
        print(f"inclusion proof p99 {'meets' if meets else 'is ABOVE'} the target of {TARGET_MS} ms")
        if not args.no_write:
            RESULTS.mkdir(exist_ok=True)
            now = datetime.now(UTC)
            backend = "postgres" if args.postgres else "sqlite"
            path = RESULTS / f"audit_db-{now:%Y-%m-%d}-{backend}.json"
            path.write_text(
                json.dumps(
                    {
                        "benchmark": "audit_db",
                        "date": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
                        "machine": machine_info(),
                        "backend": backend,
                        "batch": args.batch,
                        "results": figures,
                        "target_inclusion_ms": TARGET_MS,
                        "meets_target": meets,
                    },
                    indent=2,
                )
                + "\n"
            )
            print(f"results: {path.relative_to(ROOT)}")
        return 0 if meets else 1
    finally:
        if schema and args.postgres:
            admin = Database(args.postgres)
            with admin.engine.begin() as connection:
                connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
            admin.dispose()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
