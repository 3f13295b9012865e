"""`broker worker` as its own process against the test's database (a SQLite file, or PostgreSQL): the outbox survives
a worker killed in the middle of a send, SIGTERM stops a worker only after the outcome of its send is recorded,
`--once` delivers and runs the scheduled jobs, and a bad configuration stops it with a non-zero exit."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from broker.adapters.orm import WebhookDeliveryRow
from broker.demo import caller
from broker.domain.clock import FixedClock
from broker.services import webhooks
from broker.services.events import EVENT_TYPES, emit
from tests.integration.receiver import Receiver
from tests.support import BROKER_CLI, ROOT, Env

FAST = ["--interval", "0.1", "--jobs-interval", "0"]


@pytest.fixture
def clock() -> FixedClock:
    # The worker processes run on the real clock: the events are made at the real present.
    return FixedClock(at=datetime.now(UTC))


@pytest.fixture
def receiver(env: Env) -> Iterator[Receiver]:
    with Receiver(env.broker.keys.public_jwks(), env.issuer, audiences={"kela"}) as running:
        yield running


def worker_environment(env: Env, **extra: str) -> dict[str, str]:
    settings = env.broker.settings
    return {
        **os.environ,
        "BROKER_MODE": "test",
        "BROKER_DATABASE_URL": settings.database_url,
        "BROKER_INSTANCE_PATH": str(settings.instance_path),
        "BROKER_ISSUER": settings.issuer,
        **extra,
    }


def start_worker(env: Env, log: Path, *args: str, **extra: str) -> subprocess.Popen[bytes]:
    with log.open("ab") as stderr:
        return subprocess.Popen(
            [*BROKER_CLI, "worker", *args],
            env=worker_environment(env, **extra),
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )


def log_lines(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]


def emit_events(env: Env, count: int) -> list[str]:
    ids = []
    with env.broker.uow() as uow:
        for n in range(count):
            found = emit(
                uow,
                type="consent.withdrawn",
                organisations=["kela"],
                person_id=f"per_{n}",
                data={"consent_id": f"con_{n}", "version": 2},
                now=env.clock.now(),
            )
            ids.append(found["kela"])
        uow.commit()
    return ids


def deliveries(env: Env) -> dict[str, WebhookDeliveryRow]:
    with env.broker.uow(write=False) as uow:
        return {row.event_id: row for row in uow.session.scalars(select(WebhookDeliveryRow))}


def wait_for(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


@pytest.mark.slow
def test_the_outbox_survives_a_worker_killed_in_the_middle_of_a_send(
    env: Env, receiver: Receiver, tmp_path: Path
) -> None:
    webhooks.register_endpoint(env.broker, caller(env.broker, "kela"), receiver.url, list(EVENT_TYPES))
    ids = emit_events(env, 5)
    release = receiver.hold_next()  # the first request is taken, verified, and never answered
    lease = {"BROKER_WEBHOOK_LEASE_SECONDS": "2"}
    first = start_worker(env, tmp_path / "first.log", "--batch", "1", "--concurrency", "1", *FAST, **lease)
    try:
        assert receiver.arrived.wait(60), (tmp_path / "first.log").read_text()
        first.send_signal(signal.SIGKILL)  # mid-send: no outcome recorded, the lease still held
        assert first.wait(10) == -signal.SIGKILL
    finally:
        if first.poll() is None:
            first.kill()
    [held] = receiver.jtis()
    assert {d.status for d in deliveries(env).values()} == {"pending"}

    second = start_worker(env, tmp_path / "second.log", *FAST, **lease)
    try:
        wait_for(lambda: {d.status for d in deliveries(env).values()} == {"delivered"}, 60, "every delivery")
        second.send_signal(signal.SIGTERM)
        assert second.wait(30) == 0
    finally:
        if second.poll() is None:
            second.kill()
        release.set()

    # Every event arrived; the one in flight when the worker died arrived twice, and the receiver, de-duplicating on
    # jti, kept each exactly once.
    assert sorted(receiver.accepted) == sorted(ids)
    assert dict(receiver.duplicates) == {held: 1}
    assert sorted(receiver.jtis()) == sorted([*ids, held])
    stored = deliveries(env)
    assert stored[held].attempts == 2  # the lost attempt counts
    assert {d.attempts for event_id, d in stored.items() if event_id != held} == {1}
    outcomes = [line for line in log_lines(tmp_path / "second.log") if line["message"].startswith("webhook delivery")]
    assert sorted(line["event_id"] for line in outcomes) == sorted(ids)
    assert {line["message"] for line in outcomes} == {"webhook delivery delivered"}
    for line in outcomes:  # ids, never a person or a URL
        assert "person_id" not in line and receiver.url not in json.dumps(line)


@pytest.mark.slow
def test_sigterm_stops_the_worker_after_the_outcome_of_its_send_is_recorded(
    env: Env, receiver: Receiver, tmp_path: Path
) -> None:
    webhooks.register_endpoint(env.broker, caller(env.broker, "kela"), receiver.url, ["consent.withdrawn"])
    [event_id] = emit_events(env, 1)
    release = receiver.hold_next()
    log = tmp_path / "worker.log"
    worker = start_worker(env, log, *FAST)
    try:
        assert receiver.arrived.wait(60), log.read_text()
        worker.send_signal(signal.SIGTERM)
        time.sleep(1)
        assert worker.poll() is None  # still waiting for the receiver's answer
        release.set()
        assert worker.wait(30) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
        release.set()
    delivery = deliveries(env)[event_id]
    assert (delivery.status, delivery.attempts, delivery.last_status) == ("delivered", 1, 202)
    lines = log_lines(log)
    assert lines[-1]["message"] == "webhook worker stopped" and lines[-1]["signal"] == "SIGTERM"


def test_once_delivers_what_is_due_and_runs_the_scheduled_jobs(env: Env, receiver: Receiver, tmp_path: Path) -> None:
    webhooks.register_endpoint(env.broker, caller(env.broker, "kela"), receiver.url, ["consent.withdrawn"])
    ids = emit_events(env, 3)
    log = tmp_path / "worker.log"
    worker = start_worker(env, log, "--once")
    assert worker.wait(120) == 0, log.read_text()
    assert sorted(receiver.accepted) == sorted(ids)
    messages = [line["message"] for line in log_lines(log)]
    assert messages.count("webhook delivery delivered") == 3
    [jobs] = [line for line in log_lines(log) if line["message"] == "scheduled jobs ran"]
    assert {"requests_expired", "consents_expired", "tokens_forgotten"} <= set(jobs["jobs"])


@pytest.mark.parametrize(
    ("args", "extra", "message"),
    [
        ((), {"BROKER_WEBHOOK_LEASE_SECONDS": "0"}, "BROKER_WEBHOOK_LEASE_SECONDS must be a whole number"),
        (("--batch", "0"), {}, "--batch must be from 1 to 1000"),
        (("--interval", "0"), {}, "--interval must be from 0.05 to 3600 seconds"),
        ((), {"BROKER_MODE": "production", "BROKER_DATABASE_URL": ""}, "BROKER_DATABASE_URL must be set"),
    ],
)
def test_a_bad_configuration_stops_the_worker_with_a_non_zero_exit(
    env: Env, tmp_path: Path, args: tuple[str, ...], extra: dict[str, str], message: str
) -> None:
    environment = {k: v for k, v in worker_environment(env, **extra).items() if v != ""}
    done = subprocess.run(
        [*BROKER_CLI, "worker", "--once", *args],
        env=environment,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2
    assert f"configuration error: {message}" in done.stderr
