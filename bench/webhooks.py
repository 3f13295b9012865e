"""`make bench-webhooks`: how fast one worker pushes partner events (issue #8), for an operator's capacity planning.

1. a fresh database (SQLite in a temporary folder; PostgreSQL with `--backend postgres` in a scratch database on the
   server of BROKER_BENCH_POSTGRES_URL, dropped afterwards) with the reference organisations and one endpoint of
   Kela subscribed to `consent.withdrawn`, at a receiver on loopback;
2. N events (`--events`, default 5,000) written through `broker.services.events.emit`, 500 a transaction, as the
   changes that cause them would write them (each with its pending delivery);
3. the worker's own delivery round (`broker.services.webhooks.deliver_due`: lease, sign a Security Event Token per
   attempt, POST, record) run until none is due, `--batch` deliveries a round and `--concurrency` sends at a time,
   as `broker worker` runs it.

The receiver is a separate process (so that its CPU is not counted as the worker's) that reads each POST and
answers 202 at once, without verifying: what is measured is the broker's side. Reported: deliveries a second, the
worker's CPU time per delivery, and p50/p95/p99 of one send as the worker saw it. Every delivery must end
`delivered` and the receiver must have had each event once, or the run fails.

A benchmark, not a test: results in bench/results/webhooks-<date>-<backend>.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.harness import BenchError, free_port, postgres_url, scratch_database, software_info
from bench.machine import machine_info

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
EMIT_CHUNK = 500

# The receiver: a separate interpreter answering 202 to every POST and counting the event ids it got (the token's
# payload is read without verifying — the benchmark measures the sender). It prints the counts when told to stop.
RECEIVER = r"""
import base64, json, sys, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
seen = {}
lock = threading.Lock()
class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        payload = body.split(b".")[1]
        jti = json.loads(base64.urlsafe_b64decode(payload + b"=" * (-len(payload) % 4)))["jti"]
        with lock:
            seen[jti] = seen.get(jti, 0) + 1
        self.send_response(202)
        self.send_header("Content-Length", "0")
        self.end_headers()
    def log_message(self, *args):
        pass
server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
threading.Thread(target=server.serve_forever, daemon=True).start()
print("ready", flush=True)
sys.stdin.readline()
server.shutdown()
repeated = sum(1 for n in seen.values() if n > 1)
print(json.dumps({"events": len(seen), "posts": sum(seen.values()), "repeated": repeated}))
"""


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run_backend(
    backend: str, database_url: str, instance: Path, *, events: int, batch: int, concurrency: int
) -> dict[str, Any]:
    from sqlalchemy import func, select

    from broker.adapters.database import Database
    from broker.adapters.orm import Base, WebhookDeliveryRow, WebhookEndpointRow
    from broker.app import build_broker
    from broker.config import Settings
    from broker.demo import register_organisations
    from broker.services.events import emit
    from broker.services.webhooks import Sender, deliver_due

    db = Database(database_url)
    Base.metadata.create_all(db.engine)
    db.dispose()
    settings = Settings(
        instance_path=instance,
        database_url=database_url,
        issuer="http://127.0.0.1:8000",
        mode="test",
        audit_anchor_window=None,
    )
    instance.mkdir(parents=True, exist_ok=True)
    broker = build_broker(settings)
    port = free_port()
    receiver = subprocess.Popen(
        [sys.executable, "-c", RECEIVER, str(port)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert receiver.stdout is not None and receiver.stdin is not None
        if receiver.stdout.readline().strip() != "ready":
            raise BenchError("the receiver did not start")
        register_organisations(broker)
        now = broker.clock.now()
        with broker.uow() as uow:
            uow.session.add(
                WebhookEndpointRow(
                    id="whk_bench",
                    organisation_id="kela",
                    client_id="kela",
                    url=f"http://127.0.0.1:{port}/events",
                    events=["consent.withdrawn"],
                    active=True,
                    created_at=now,
                    disabled_at=None,
                )
            )
            uow.commit()
        started = time.perf_counter()
        for first in range(0, events, EMIT_CHUNK):
            with broker.uow() as uow:
                for n in range(first, min(events, first + EMIT_CHUNK)):
                    emit(
                        uow,
                        type="consent.withdrawn",
                        organisations=["kela"],
                        person_id=f"per_{n:032x}",
                        data={
                            "consent_id": f"con_{n:032x}",
                            "version": 2,
                            "withdrawn_at": now,
                            "attestation": {"required": False},
                        },
                        now=now,
                    )
                uow.commit()
        emitted = time.perf_counter() - started

        sender = Sender.for_broker(broker)
        sends: list[float] = []
        rounds = 0
        wall0, cpu0 = time.perf_counter(), time.process_time()
        try:
            while True:
                report = deliver_due(broker, limit=batch, sender=sender, concurrency=concurrency)
                if not report.outcomes and not report.given_up:
                    break
                rounds += 1
                sends += [o.elapsed_ms for o in report.outcomes]
                failed = [o for o in report.outcomes if o.result != "delivered"]
                if failed:
                    raise BenchError(f"a delivery did not succeed: {failed[0]}")
        finally:
            sender.close()
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        with broker.uow(write=False) as uow:
            delivered = uow.session.scalar(
                select(func.count()).select_from(WebhookDeliveryRow).where(WebhookDeliveryRow.status == "delivered")
            )
        receiver.stdin.write("stop\n")
        receiver.stdin.flush()
        seen = json.loads(receiver.stdout.readline())
    finally:
        if receiver.poll() is None:
            receiver.kill()
        receiver.wait()
        broker.db.dispose()
    if delivered != events or seen["events"] != events or seen["repeated"]:
        raise BenchError(f"{delivered} of {events} delivered; the receiver saw {seen}")
    return {
        "backend": backend,
        "events": events,
        "batch": batch,
        "concurrency": concurrency,
        "rounds": rounds,
        "emit_events_per_s": round(events / emitted),
        "deliveries_per_s": round(events / wall, 1),
        "worker_cpu_ms_per_delivery": round(cpu / events * 1000, 3),
        "send_ms": {q: round(_percentile(sends, v), 2) for q, v in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))},
        "send_ms_mean": round(statistics.fmean(sends), 2),
        "receiver": seen,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.webhooks", description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--batch", type=int, default=50, help="deliveries leased a round (broker worker --batch)")
    parser.add_argument("--concurrency", type=int, default=4, help="sends at a time (broker worker --concurrency)")
    parser.add_argument("--backend", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--postgres", help="server URL (default: BROKER_BENCH_POSTGRES_URL)")
    args = parser.parse_args(argv)
    if args.events < 1 or not 1 <= args.batch <= 1000 or not 1 <= args.concurrency <= 32:
        parser.error("--events ≥ 1, --batch 1..1000, --concurrency 1..32")
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    server = postgres_url(args.postgres) if "postgres" in backends else None
    if "postgres" in backends and server is None:
        raise BenchError("PostgreSQL needs --postgres URL or BROKER_BENCH_POSTGRES_URL")
    results = []
    for backend in backends:
        with ExitStack() as stack:
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-webhooks-")))
            if backend == "sqlite":
                url = f"sqlite:///{folder / 'broker.db'}"
            else:
                assert server is not None
                url = stack.enter_context(scratch_database(server, "webhooks"))
            result = run_backend(
                backend, url, folder / "instance", events=args.events, batch=args.batch, concurrency=args.concurrency
            )
        result.update(
            measured_at=datetime.now(UTC).isoformat(timespec="seconds"),
            machine=machine_info(),
            software=software_info(None, server if backend == "postgres" else None),
        )
        RESULTS.mkdir(parents=True, exist_ok=True)
        path = RESULTS / f"webhooks-{datetime.now(UTC):%Y-%m-%d}-{backend}.json"
        path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        print(
            f"{backend}: {result['deliveries_per_s']} deliveries/s, {result['worker_cpu_ms_per_delivery']} ms of "
            f"worker CPU each, one send p50/p95/p99 {result['send_ms']['p50']}/{result['send_ms']['p95']}/"
            f"{result['send_ms']['p99']} ms (concurrency {args.concurrency}, batch {args.batch}) → {path.name}"
        )
        results.append(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
