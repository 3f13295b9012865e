"""Crash evidence (issue #6): a served broker — gunicorn, two workers, each running the audit sequencer's thread —
whose workers and master are SIGKILLed at random moments, each kill landing while its target serves a request,
while partner threads ask for disclosures. Each disclosure has its own Idempotency-Key; a client retries it with
the same key and a fresh DPoP proof (RFC 9449) after a lost connection, a 5xx, a 503 or a 409, until a final
answer. When the master dies the rest of its process group is killed too and the server is started again on
the same instance, database and port.

What must hold: after every restart the audit log verifies (`verify_broker_log`, what `broker audit verify` runs:
entries, tree, signed checkpoints and the sink); at the end, with every entry sequenced, it verifies again (also
through the command line); every 2xx the client saw has its sequenced `disclosure:permit` entry and disclosure
row; no disclosure entry lacks its row and no row its entry; the run made exactly one disclosure per key; no 500
was ever answered; and no process of the server is left.

1,000 disclosures and 14 kills per backend here; `make soak` (BROKER_SOAK=1) runs 10,000 and 120 kills.
BROKER_SOAK_SEED repeats a run's choices of targets and kill points (not its timing).
"""

from __future__ import annotations

import json
import os
import random
import secrets
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from joserfc.jwk import OKPKey
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from audit import AuditVerificationError
from broker.app import build_broker
from broker.config import Settings
from broker.services.audit_check import LogCheck, verify_broker_log
from tests.e2e.chaos import (
    BROKER,
    ROOT,
    Chaos,
    Partner,
    Server,
    Tally,
    check_world,
    disclosure_ids,
    kill_plan,
    last_append_id,
    wait_until_sequenced,
)
from tests.support import create_demo_instance, free_port

pytestmark = pytest.mark.slow

POSTGRES_URL = os.environ.get("BROKER_TEST_POSTGRES_URL")
SOAK = os.environ.get("BROKER_SOAK") == "1"
DISCLOSURES = 10_000 if SOAK else 1_000
KILLS = 120 if SOAK else 14
MIN_KILLS = 100 if SOAK else 10
CLIENTS = 4
#: How long the whole run may take before the test fails instead of hanging.
RUN_TIMEOUT = 1800 if SOAK else 300

PARTNER = "varha-health"
ASK = {"category": "work_assessment", "purpose": "work_capacity_assessment"}  # permitted by the demo's consent


@dataclass
class World:
    env: dict[str, str]
    port: int
    instance: Path
    postgres_url: str | None  # the run's own PostgreSQL database, None on SQLite
    setup_seconds: float


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param(
            "postgres",
            marks=[
                pytest.mark.postgres,
                pytest.mark.skipif(not POSTGRES_URL, reason="BROKER_TEST_POSTGRES_URL not set"),
            ],
        ),
    ]
)
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    """The demo instance (its consent lets the health centre have Mikko's work assessment) in a fresh folder, on
    a fresh SQLite file or a fresh PostgreSQL database. A database of its own rather than a schema: PostgreSQL's
    advisory locks, with which the sequencer is elected, are per database, and another test session's broker on
    the same database would otherwise hold the election."""
    began = time.monotonic()
    instance = tmp_path / "instance"
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "BROKER_MODE": "demo", "BROKER_INSTANCE_PATH": str(instance), "BROKER_ISSUER": base_url}
    env.pop("BROKER_DATABASE_URL", None)
    # DPoP as deployed: required (the default). The rate limits are off: they are tested in
    # tests/integration/test_limits.py, and here would only stretch the run (1,000 disclosures in well under the
    # minute that 600 per minute allows).
    env.pop("BROKER_REQUIRE_DPOP", None)
    env["BROKER_RATE_LIMITS"] = "off"
    admin = None
    name = f"crash_{secrets.token_hex(4)}"
    if request.param == "postgres":
        assert POSTGRES_URL
        admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        env["BROKER_DATABASE_URL"] = make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    try:
        create_demo_instance(env, port)
        yield World(env, port, instance, env.get("BROKER_DATABASE_URL"), time.monotonic() - began)
    finally:
        if admin is not None:
            with admin.connect() as connection:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()


def test_killed_workers_and_masters_lose_no_disclosure_and_log_every_one_once(world: World) -> None:
    seed = int(os.environ.get("BROKER_SOAK_SEED") or secrets.randbits(32))
    rng = random.Random(seed)
    demo = json.loads((world.instance / "demo.json").read_text())
    mikko = demo["persons"][0]["person_id"]
    entry = next(p for p in demo["partners"] if p["client_id"] == PARTNER)
    key = OKPKey.import_key(json.loads((world.instance / entry["key_file"]).read_text()))
    body = {"person_id": mikko, **ASK}

    reader = build_broker(Settings.from_env(world.env))  # reads the database the server writes
    server = Server(world.env, world.port, world.instance.parent / "server.log")
    before = disclosure_ids(reader, PARTNER, mikko)
    tally = Tally()
    verified: list[LogCheck] = []

    def after_restart() -> None:
        """The restarted server's sequencer integrates what the killed one left waiting, and the log verifies:
        every sequenced entry, the stored subtree hashes, the signed checkpoints and the sink's newest one. A
        failure stops the run (Chaos.failure), with the end of the server's log."""
        left_waiting = wait_until_sequenced(reader, up_to=last_append_id(reader), timeout=30)
        if left_waiting:
            raise AssertionError(
                f"restart {server.starts - 1}: {left_waiting} entries never sequenced\n{server.log_tail()}"
            )
        try:
            verified.append(verify_broker_log(reader))
        except AuditVerificationError as error:
            raise AssertionError(f"restart {server.starts - 1}: the log does not verify: {error}") from error

    keys = [str(uuid.uuid4()) for _ in range(DISCLOSURES)]
    handed_out = 0
    keys_lock = threading.Lock()
    deadline = time.monotonic() + RUN_TIMEOUT
    client_failures: list[BaseException] = []

    def next_key() -> str | None:
        """The next key, once the chaos allows it (Chaos.allowance); None when all are handed out."""
        nonlocal handed_out
        while not chaos.aborted.is_set() and time.monotonic() < deadline:
            with keys_lock:
                if handed_out == len(keys):
                    return None
                if handed_out < chaos.allowance():
                    handed_out += 1
                    return keys[handed_out - 1]
            time.sleep(0.002)
        return None

    def client() -> None:
        partner = Partner(server.base_url, demo["issuer"], PARTNER, key, entry["actor"], tally, chaos.aborted)
        try:
            while (idempotency_key := next_key()) is not None:
                partner.disclose(idempotency_key, body, deadline)
        except BaseException as error:  # reported below
            client_failures.append(error)

    plan = kill_plan(KILLS, DISCLOSURES, rng)
    chaos = Chaos(server, plan, lambda: tally.finished, after_restart, rng, world.postgres_url)
    seconds = {"demo created": world.setup_seconds}

    def lap(phase: str) -> None:
        seconds[phase] = time.monotonic() - began - sum(seconds.values())

    began = time.monotonic() - world.setup_seconds
    server.start()
    try:
        clients = [threading.Thread(target=client, name=f"client-{i}", daemon=True) for i in range(CLIENTS)]
        for thread in clients:
            thread.start()
        chaos.start()
        for thread in clients:
            thread.join(max(1.0, deadline - time.monotonic()))
        chaos.stopping.set()
        chaos.join(120)
        lap("run")
        pending = wait_until_sequenced(reader)
        lap("sequenced")
        final = verify_broker_log(reader)
        lap("verified")
        command = subprocess.run(
            [*BROKER, "audit", "verify"],
            env=world.env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        lap("broker audit verify")
        problems = check_world(reader, tally, partner=PARTNER, person_id=mikko, before=before)
        lap("checked")
    finally:
        chaos.stopping.set()  # before the server stops, or the chaos would start it again
        chaos.join(120)
        server.stop()
        reader.db.dispose()
    lap("stopped")
    left = server.group()

    kills = chaos.kills
    replays_after_loss = sum(1 for s in tally.seen.values() if s.replayed and "aborted" in s.attempts)
    summary = {
        "seed": seed,
        "disclosures": DISCLOSURES,
        "seconds": {phase: round(value, 1) for phase, value in seconds.items()},
        "kills": dict(Counter(k.kind for k in kills)),
        "kills_mid_request": dict(Counter(k.kind for k in kills if k.mid_request)),
        "server_starts": server.starts,
        "start_seconds": [round(s, 2) for s in server.start_seconds],
        "answers": dict(tally.statuses),
        "tokens": tally.tokens,
        "replayed": sum(s.replayed for s in tally.seen.values()),
        "replays_after_a_lost_answer": replays_after_loss,
        "verifications_after_restart": len(verified),
        "log_size": final.size,
    }
    print(json.dumps(summary, indent=1))

    context = f"{json.dumps(summary)}\n--- server log ---\n{server.log_tail()}"
    assert not client_failures, client_failures
    assert chaos.failure is None, chaos.failure
    assert not chaos.is_alive(), "the chaos thread did not finish"
    assert not chaos.findings, chaos.findings
    # DPoP for real: every token was bound to the client's key (RFC 9449 §5: token_type "DPoP").
    assert {k for k in tally.statuses if k.startswith("token_type:")} == {"token_type:DPoP"}, context
    assert not tally.server_errors, tally.server_errors[:5]
    assert not tally.unexpected, tally.unexpected[:5]
    assert not tally.stuck, tally.stuck[:5]
    assert len(tally.seen) == DISCLOSURES, context
    assert len(kills) >= MIN_KILLS, context
    assert {k.kind for k in kills} == {"worker", "sequencer", "master"}, context
    # The kills land while their target serves a request: each waited until it held a client's connection (a
    # sequencer's worker may be taken between requests), and the clients lost at least as many requests with their
    # connections.
    mid_request = sum(k.mid_request for k in kills)
    assert mid_request >= len(kills) - sum(k.kind == "sequencer" for k in kills), context
    assert tally.statuses["aborted"] + tally.statuses["token:aborted"] >= mid_request, context
    if SOAK:
        # With a hundred kills some land between a disclosure's commit and its answer: the retry must then have
        # been answered with the stored response (in CI's fourteen this happens in most runs, and is reported).
        assert replays_after_loss > 0, context
    assert len(verified) == server.starts - 1 == sum(k.kind == "master" for k in kills), context
    assert pending == 0, f"{pending} audit entries never sequenced"
    assert final.exported_size == final.size, "the newest checkpoint did not reach the sink"
    assert command.returncode == 0, command.stderr
    assert not problems, problems[:10]
    assert not left, f"processes of the server left running: {left}"
