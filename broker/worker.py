"""`broker worker`: pushes due webhook deliveries and runs the scheduled jobs (docs/webhooks.md, "The worker").

Any number of workers may run against one database: a delivery is leased by one of them at a time
(broker/services/webhooks.py). SIGTERM or SIGINT stops a worker after its current round, once the outcome of every
send under way is recorded; a worker killed outright leaves its leases to run out, and another worker sends those
deliveries again (at-least-once).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from types import FrameType

from broker.adapters.database import unavailability
from broker.domain.errors import ConfigurationError
from broker.services import Broker
from broker.services.webhooks import LEASE, DeliveryReport, Sender, deliver_due

log = logging.getLogger("broker.worker")

LEASE_VARIABLE = "BROKER_WEBHOOK_LEASE_SECONDS"


@dataclass(frozen=True)
class WorkerOptions:
    interval: float = 2.0  # seconds between polls when nothing was due
    batch: int = 50  # deliveries leased per round
    concurrency: int = 4  # sends under way at once
    jobs_interval: float = 60.0  # seconds between runs of the scheduled jobs; 0: none
    lease: timedelta = LEASE

    def check(self) -> None:
        if not 0.05 <= self.interval <= 3600:
            raise ConfigurationError("--interval must be from 0.05 to 3600 seconds")
        if not 1 <= self.batch <= 1000:
            raise ConfigurationError("--batch must be from 1 to 1000")
        if not 1 <= self.concurrency <= 32:
            raise ConfigurationError("--concurrency must be from 1 to 32")
        if self.jobs_interval != 0 and not 1 <= self.jobs_interval <= 86400:
            raise ConfigurationError("--jobs-interval must be 0 (no jobs) or from 1 to 86400 seconds")


def lease_from_env(env: Mapping[str, str] | None = None) -> timedelta:
    """BROKER_WEBHOOK_LEASE_SECONDS: how long a taken delivery is the worker's own (default 60). Short leases bring a
    dead worker's deliveries back sooner; a lease shorter than a send (up to 15 s against a slow receiver) lets a
    second worker send the same delivery while the first is still at it — harmless, as receivers de-duplicate, but
    wasted."""
    raw = (os.environ if env is None else env).get(LEASE_VARIABLE, "")
    if raw == "":
        return LEASE
    if not raw.isdigit() or not 1 <= int(raw) <= 3600:
        raise ConfigurationError(f"{LEASE_VARIABLE} must be a whole number of seconds from 1 to 3600, not {raw!r}")
    return timedelta(seconds=int(raw))


class Worker:
    def __init__(self, broker: Broker, options: WorkerOptions) -> None:
        options.check()
        self.broker = broker
        self.options = options
        self._stop = threading.Event()
        self._database_unavailable: str | None = None
        self.stopped_by: str | None = None  # the signal that stopped it

    def stop(self, reason: str | None = None) -> None:
        self.stopped_by = reason
        self._stop.set()

    def run(self, *, once: bool = False) -> int:
        """Work until stopped (or one round with `once`). Returns the exit status: 0, or 1 when `once` failed."""
        options = self.options
        log.info(
            "webhook worker started",
            extra={
                "interval": options.interval,
                "batch": options.batch,
                "concurrency": options.concurrency,
                "jobs_interval": options.jobs_interval,
                "lease_seconds": options.lease.total_seconds(),
            },
        )
        sender = Sender.for_broker(self.broker)  # kept across rounds, for its connections
        jobs_due = time.monotonic()  # the jobs run at start, then every jobs_interval
        ok = True
        try:
            while not self._stop.is_set():
                report = self._deliver(sender)
                ok = ok and report is not None
                if options.jobs_interval and time.monotonic() >= jobs_due:
                    ok = self._run_jobs() and ok
                    jobs_due = time.monotonic() + options.jobs_interval
                if once:
                    break
                # After a full batch more may be due at once; otherwise wait for the next poll.
                full = report is not None and len(report.outcomes) + report.given_up >= options.batch
                if not full:
                    self._stop.wait(options.interval)
        finally:
            sender.close()
            log.info("webhook worker stopped", extra={"signal": self.stopped_by})
        return 0 if ok or not once else 1

    def _deliver(self, sender: Sender) -> DeliveryReport | None:
        try:
            report = deliver_due(
                self.broker,
                limit=self.options.batch,
                lease=self.options.lease,
                sender=sender,
                concurrency=self.options.concurrency,
            )
        except Exception as error:  # a database outage or a bug: logged, and the next round tries again
            reason = unavailability(error)
            if reason is None:
                log.exception("webhook delivery round failed")
            elif self._database_unavailable is None:
                # Leased deliveries whose outcome could not be recorded are sent again when their lease runs out.
                log.warning("webhook worker waits for the database", extra={"reason": reason})
            self._database_unavailable = reason or self._database_unavailable
            return None
        if self._database_unavailable is not None:
            log.info("webhook worker resumed: the database is back")
            self._database_unavailable = None
        return report

    def _run_jobs(self) -> bool:
        from broker.services.jobs import run_jobs  # the scheduled jobs; imported when first run

        try:
            report = run_jobs(self.broker)
        except Exception as error:
            reason = unavailability(error)
            if reason is None:
                log.exception("scheduled jobs failed")
            else:
                log.warning("scheduled jobs wait for the database", extra={"reason": reason})
            return False
        log.info("scheduled jobs ran", extra={"jobs": report.as_dict()})
        return True


def stop_on_signals(worker: Worker) -> None:
    """SIGTERM and SIGINT stop the worker after its current round (call from the main thread)."""

    def handle(signum: int, _frame: FrameType | None) -> None:
        worker.stop(signal.Signals(signum).name)  # only a flag: the handler may interrupt anything, logging too

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
