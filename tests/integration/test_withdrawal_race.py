"""Withdrawal is immediate (DESIGN.md invariant 3): one withdrawal racing eight disclosures (issue #6's evidence).

What must hold. Once a withdrawal has committed, no disclosure permitted under that consent commits: every permitted
disclosure of a trial commits before the withdrawal. A disclosure that read the consent as active and committed after
the withdrawal decided on stale state, and that is the race — whatever the append ids say: a disclosure may take its
append id before the withdrawal takes its own and still commit after it. So the criterion is the commit order.

How the commit order is observed, exactly. On PostgreSQL a deferred constraint trigger, installed by this test only,
runs at the commit of every transaction that appended an audit entry and draws a tick from a one-row clock table
under that row's lock. The lock is released only once the commit is visible to others, so a later tick is a later
commit. On SQLite each write transaction holds the database's write lock from its BEGIN IMMEDIATE to its end
(broker/adapters/uow.py): the append ids are the commit order. A refusal can only have read the withdrawal, so every
trial also checks that each refusal committed after it: a wrong order would show there.

What makes it hold. On PostgreSQL a disclosure decides on a snapshot and records its decision by one statement,
its own transaction, that takes the person's row FOR SHARE and writes only if the person's facts version is still
the one it read (services/disclosure_statements.py `record_disclosure_if_unchanged`); a withdrawal takes the row FOR
UPDATE (services/consents.py `withdraw_consent`) and its consent change bumps the version (the facts-version
triggers), so a disclosure whose statement comes after the withdrawal's commit, or waits for it, finds the version
changed and decides again under the row lock: there a disclosure takes the person row FOR SHARE before it reads the
consents (services/persons.py `lock_person_birth_date`) and keeps it until it commits, so the withdrawal commits
only after every disclosure that holds the row, and the disclosures that lock the row after it read the consent as
withdrawn. Requests with an Idempotency-Key (HTTP_TRIALS) always decide under the row lock. On SQLite a
disclosure decides on a snapshot without the write lock and commits under it only if the person's facts version is
unchanged (services/disclosures.py); the withdrawal's commit changes it, so a disclosure that decided before the
withdrawal and reaches the lock after it decides again, and is refused.

Four schedules, in turn; in each the eight disclosures and the withdrawal are released together by one barrier.
Natural: they run as the threads fall. Staggered: disclosure k starts k × STAGGER later, so that the withdrawal falls
among them. Held after deciding, and held before committing: the withdrawal starts once a disclosure has got there, and
each disclosure, there, keeps its transaction open until the withdrawal has committed or a hold has passed — the
interleavings that a slow disclosure (a pause, a slow decryption or insert) produces, with its append id taken after
the withdrawal's or before it. The negative control runs the same harness on PostgreSQL with the lock turned off by
the test-only switch (Settings.test_disable_decision_lock, refused outside test mode) and must find disclosures
committed after the withdrawal, including some appended before it; on SQLite there is no row lock to turn off.

Most trials call the use cases: the race is between the transactions of `request_disclosure` and `withdraw_consent`,
which the API views call once each, and the token checks before them add time, not interleavings. One view adds
something: a write sent with an Idempotency-Key runs inside a transaction that also stores its response and commits
after the use case has returned (broker/services/idempotency.py), so HTTP_TRIALS go through the partner API that way.

CI runs TRIALS per backend, HTTP_TRIALS and CONTROL_TRIALS; BROKER_SOAK=1 (`make soak`) runs the soak counts.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
from sqlalchemy import column, select, table, text

from broker.adapters.orm import AuditEntryRow
from broker.app import build_broker
from broker.config import Settings
from broker.demo import caller
from broker.domain.clock import FixedClock
from broker.domain.errors import ConfigurationError, NoLegalBasisError
from broker.services import Broker, consents, disclosures, persons, records
from broker.services.audit_log import append_pending
from broker.services.consents import ConsentTerms
from broker.services.disclosure_statements import Recorded, record_disclosure, record_disclosure_if_unchanged
from policies import Decision, decide
from schemas.records.examples import EXAMPLES
from tests.support import Env, make_env, new_hetu

SOAK = os.environ.get("BROKER_SOAK") == "1"
DISCLOSERS = 8
TRIALS = {"postgres": 1000 if SOAK else 200, "sqlite": 200 if SOAK else 40}
CONTROL_TRIALS = 160 if SOAK else 32
# Through the API each trial makes eight disclosures by one partner, whose rate limit is 600 a minute.
HTTP_TRIALS = {"postgres": 40, "sqlite": 20}
# The schedules, taken in turn (module docstring).
SCHEDULES = ("natural", "staggered", "held-after-deciding", "held-before-committing")
# The staggered schedule starts disclosure k k × STAGGER after the barrier, so that the withdrawal falls among them.
STAGGER = 0.002
# How long a held disclosure waits for the withdrawal to commit. With the lock the withdrawal cannot commit meanwhile,
# however long the wait, and every held trial lasts HOLD. Without it the withdrawal commits within milliseconds and
# ends the wait, so the control can afford a long one: it only matters on a machine slow enough to miss a short one.
HOLD = 0.05
CONTROL_HOLD = 1.0

POSTGRES_ONLY = pytest.param(
    "postgres",
    marks=[
        pytest.mark.postgres,
        pytest.mark.skipif(
            not os.environ.get("BROKER_TEST_POSTGRES_URL"),
            reason="BROKER_TEST_POSTGRES_URL not set (the lock the control turns off is PostgreSQL's row lock)",
        ),
    ],
)

_TICKS = table("race_commit_order", column("entry_id"), column("tick"))
# Test-only DDL, in the test session's own schema. A constraint trigger that is INITIALLY DEFERRED fires at COMMIT;
# the clock row's lock is held to the end of the transaction, which comes after its commit is visible.
_INSTALL = (
    "CREATE TABLE race_commit_clock (tick bigint NOT NULL)",
    "INSERT INTO race_commit_clock VALUES (0)",
    "CREATE TABLE race_commit_order (entry_id bigint PRIMARY KEY, tick bigint NOT NULL UNIQUE)",
    """CREATE FUNCTION race_stamp_commit() RETURNS trigger LANGUAGE plpgsql AS $$
       DECLARE stamp bigint;
       BEGIN
         UPDATE race_commit_clock SET tick = tick + 1 RETURNING tick INTO stamp;
         INSERT INTO race_commit_order (entry_id, tick) VALUES (NEW.id, stamp);
         RETURN NULL;
       END $$""",
    """CREATE CONSTRAINT TRIGGER race_stamp_commit AFTER INSERT ON audit_entries
       DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION race_stamp_commit()""",
)
_REMOVE = (
    "DROP TRIGGER IF EXISTS race_stamp_commit ON audit_entries",
    "DROP FUNCTION IF EXISTS race_stamp_commit()",
    "DROP TABLE IF EXISTS race_commit_order",
    "DROP TABLE IF EXISTS race_commit_clock",
)


@dataclass
class Tally:
    """What a run of trials found. `late` holds, per schedule and violating trial, the append ids of the permitted
    disclosures that committed after the withdrawal; `appended_first` counts those among them whose append id is
    below the withdrawal's, which an order by append id would have missed."""

    trials: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SCHEDULES, 0))
    permits: int = 0
    refusals: int = 0
    mixed: int = 0  # trials with permits and refusals both: the withdrawal fell among the disclosures
    late: dict[str, list[list[int]]] = field(default_factory=lambda: {schedule: [] for schedule in SCHEDULES})
    appended_first: int = 0

    @property
    def violations(self) -> int:
        return sum(len(ids) for found in self.late.values() for ids in found)

    def summary(self, label: str, seconds: float) -> str:
        late = {schedule: len(found) for schedule, found in self.late.items()}
        return (
            f"{label}: {sum(self.trials.values())} trials in {seconds:.1f} s ({self.trials}); "
            f"{self.permits} permits, {self.refusals} refusals, {self.mixed} trials with both; "
            f"trials with permits committed after the withdrawal: {late}; such permits: {self.violations}, "
            f"{self.appended_first} of them appended before the withdrawal"
        )


class Adversary:
    """The held schedules. A disclosure is held either right after its call of `decide` (it has read the consent,
    written nothing) or right after its audit entry is appended (it has its append id, not yet committed); the first
    disclosure to get there starts the hold clock, and each held one waits until the withdrawal has committed or the
    hold is over. Installed in place of the names the disclosure module calls."""

    def __init__(self, hold: float) -> None:
        self.hold = hold
        self.schedule = "natural"
        self.ready = threading.Event()  # a disclosure has reached the point where it is held
        self.withdrawn = threading.Event()
        self.permitted_before_withdrawal = False  # a disclosure decided "permit" before the withdrawal committed
        self._deadline: float | None = None
        self._guard = threading.Lock()
        self._decide = decide
        self._append_pending = append_pending
        self._record_disclosure = record_disclosure
        self._record_disclosure_if_unchanged = record_disclosure_if_unchanged

    @property
    def holds(self) -> bool:
        return self.schedule.startswith("held-")

    def begin(self, schedule: str) -> None:
        """Before a trial, with no thread running."""
        self.schedule = schedule
        self.ready = threading.Event()
        self.withdrawn = threading.Event()
        self.permitted_before_withdrawal = False
        self._deadline = None

    def decide(self, *args: Any, **kwargs: Any) -> Decision:
        decision: Decision = self._decide(*args, **kwargs)
        if decision.permitted and not self.withdrawn.is_set():
            self.permitted_before_withdrawal = True
        if self.schedule == "held-after-deciding":
            self._wait()
        return decision

    def append_pending(self, *args: Any, **kwargs: Any) -> int:
        index: int = self._append_pending(*args, **kwargs)
        if self.schedule == "held-before-committing":
            self._wait()
        return index

    def record_disclosure(self, *args: Any, **kwargs: Any) -> int:
        """PostgreSQL's append under the row lock: the entry and the disclosure row in one statement
        (disclosure_statements.py)."""
        index: int = self._record_disclosure(*args, **kwargs)
        if self.schedule == "held-before-committing":
            self._wait()
        return index

    def record_disclosure_if_unchanged(self, *args: Any, **kwargs: Any) -> Recorded:
        """PostgreSQL's record of a plan made on a snapshot: one statement, in autocommit, that appends, writes and
        commits if the person's facts version is unchanged. The last point before its commit that the test can
        reach is just before it is sent."""
        if self.schedule == "held-before-committing":
            self._wait()
        return self._record_disclosure_if_unchanged(*args, **kwargs)

    def _wait(self) -> None:
        with self._guard:
            if self._deadline is None:
                self._deadline = time.monotonic() + self.hold
            deadline = self._deadline
        self.ready.set()
        self.withdrawn.wait(max(0.0, deadline - time.monotonic()))


class CommitOrder:
    """Each audit entry's place in the commit order: a commit tick on PostgreSQL, the append id on SQLite."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.postgres = not broker.db.sqlite

    def install(self) -> None:
        if self.postgres:
            with self.broker.db.engine.begin() as connection:
                for statement in _INSTALL:
                    connection.execute(text(statement))

    def remove(self) -> None:
        if self.postgres:
            with self.broker.db.engine.begin() as connection:
                for statement in _REMOVE:
                    connection.execute(text(statement))

    def entries(self, person_id: str) -> list[tuple[int, int, str]]:
        """(place, append id, event) of every entry about the person."""
        with self.broker.uow(write=False) as uow:
            if not self.postgres:
                rows = uow.session.execute(
                    select(AuditEntryRow.id, AuditEntryRow.id, AuditEntryRow.event).where(
                        AuditEntryRow.person_id == person_id
                    )
                )
                return [(place, entry_id, event) for place, entry_id, event in rows]
            rows = uow.session.execute(
                select(_TICKS.c.tick, AuditEntryRow.id, AuditEntryRow.event)
                .select_from(AuditEntryRow)
                .outerjoin(_TICKS, _TICKS.c.entry_id == AuditEntryRow.id)
                .where(AuditEntryRow.person_id == person_id)
            )
            found = [(tick, entry_id, event) for tick, entry_id, event in rows]
        assert all(tick is not None for tick, _, _ in found), f"entries committed without a tick: {found}"
        return found


class ServiceCalls:
    """The race through the use cases, as the API views call them."""

    # Whether a PostgreSQL disclosure decides under the person's row lock (rather than on a snapshot).
    under_row_lock = False

    def __init__(self, env: Env) -> None:
        self.broker = env.broker
        self.kisalli, self.health = caller(self.broker, "kisalli"), caller(self.broker, "varha-health")

    def disclose(self, person_id: str) -> int | None:
        ask = disclosures.DisclosureAsk(person_id, "work_assessment", "work_capacity_assessment")
        try:
            return int(disclosures.request_disclosure(self.broker, self.health, ask)["audit_entry_id"])
        except NoLegalBasisError:
            return None

    def withdraw(self, consent_id: str) -> None:
        consents.withdraw_consent(self.broker, self.kisalli, consent_id)


class HttpCalls(ServiceCalls):
    """The race through the partner API: DPoP-bound tokens, and an Idempotency-Key on every write, so that each
    disclosure and the withdrawal run inside the transaction that also stores their response and commits later
    (broker/services/idempotency.py)."""

    under_row_lock = True

    def __init__(self, env: Env) -> None:
        super().__init__(env)
        self.env = env
        for org in ("kisalli", "varha-health"):
            env.token(org)  # issued before the threads start; each request then signs its own DPoP proof

    def disclose(self, person_id: str) -> int | None:
        body = {"person_id": person_id, "category": "work_assessment", "purpose": "work_capacity_assessment"}
        response = self.env.post("varha-health", "/disclosures", body, headers=_idempotency_key())
        if response.status_code == 403:
            assert response.get_json()["code"] == "no_legal_basis", response.get_data(as_text=True)
            return None
        assert response.status_code == 200, response.get_data(as_text=True)
        return int(response.get_json()["audit_entry_id"])

    def withdraw(self, consent_id: str) -> None:
        response = self.env.post("kisalli", f"/consents/{consent_id}/withdraw", {}, headers=_idempotency_key())
        assert response.status_code == 200, response.get_data(as_text=True)


def _idempotency_key() -> dict[str, str]:
    return {"Idempotency-Key": f'"{uuid.uuid4()}"'}


def run_trials(
    env: Env, trials: int, hold: float, monkeypatch: pytest.MonkeyPatch, calls: ServiceCalls | None = None
) -> Tally:
    """Run the trials, the schedules in turn, and tally what each one left in the log."""
    broker = env.broker
    calls = calls or ServiceCalls(env)
    adversary = Adversary(hold)
    monkeypatch.setattr(disclosures, "decide", adversary.decide)
    monkeypatch.setattr(disclosures, "append_pending", adversary.append_pending)
    monkeypatch.setattr(disclosures, "record_disclosure", adversary.record_disclosure)
    monkeypatch.setattr(disclosures, "record_disclosure_if_unchanged", adversary.record_disclosure_if_unchanged)
    order = CommitOrder(broker)
    tally = Tally()
    try:
        order.install()
        with ThreadPoolExecutor(DISCLOSERS + 1) as pool:
            for trial in range(trials):
                schedule = SCHEDULES[trial % len(SCHEDULES)]
                _trial(broker, calls, pool, adversary, order, schedule, tally)
    finally:
        order.remove()
    return tally


def _trial(
    broker: Broker,
    calls: ServiceCalls,
    pool: ThreadPoolExecutor,
    adversary: Adversary,
    order: CommitOrder,
    schedule: str,
    tally: Tally,
) -> None:
    kisalli, health = calls.kisalli, calls.health
    person_id = persons.resolve_person(broker, kisalli, new_hetu())
    persons.start_relationship(broker, kisalli, person_id)
    persons.start_relationship(broker, health, person_id)
    records.deposit_record(broker, kisalli, person_id, "work_assessment", EXAMPLES["work_assessment"])
    consent = consents.record_consent(
        broker,
        kisalli,
        person_id,
        ConsentTerms(
            recipients=["varha-health"], categories=["work_assessment"], purposes=["work_capacity_assessment"]
        ),
        method="in_person",
        witness="witness",
    )
    adversary.begin(schedule)
    start = threading.Barrier(DISCLOSERS + 1)

    def disclose(k: int) -> int | None:
        start.wait()
        if schedule == "staggered":
            time.sleep(k * STAGGER)
        return calls.disclose(person_id)

    def withdraw() -> None:
        start.wait()
        if adversary.holds:
            adversary.ready.wait(timeout=10)
        calls.withdraw(consent["consent_id"])
        adversary.withdrawn.set()

    asked = [pool.submit(disclose, k) for k in range(DISCLOSERS)]
    withdrawing = pool.submit(withdraw)
    withdrawing.result()
    answers = [future.result() for future in asked]

    entries = order.entries(person_id)
    withdrawal = [(place, entry_id) for place, entry_id, event in entries if event == "consent:withdraw"]
    assert len(withdrawal) == 1, entries
    withdrawn_at, withdrawal_id = withdrawal[0]
    permits = {entry_id: place for place, entry_id, event in entries if event == "disclosure:permit"}
    refusals = [place for place, _, event in entries if event == "disclosure:deny"]
    # The log holds exactly what the callers were told: each permit answered has its entry, each refusal too.
    assert sorted(permits) == sorted(a for a in answers if a is not None), (answers, entries)
    assert len(refusals) == answers.count(None), (answers, entries)
    # A refusal read the withdrawal, so it committed after it; the order observed must say so.
    assert all(place > withdrawn_at for place in refusals), (withdrawn_at, entries)
    tally.trials[schedule] += 1
    tally.permits += len(permits)
    tally.refusals += len(refusals)
    tally.mixed += bool(permits and refusals)
    late = sorted(entry_id for entry_id, place in permits.items() if place > withdrawn_at)
    if late:
        tally.late[schedule].append(late)
        tally.appended_first += sum(entry_id < withdrawal_id for entry_id in late)
    if adversary.holds:
        # The withdrawal started only once a disclosure had decided on the active consent: the trial raced. (Where
        # that disclosure commits is the lock's business: before the withdrawal, or refused after it — one that
        # decided on a snapshot plans again once the withdrawal has changed the facts.) Where the held disclosure
        # holds what the withdrawal waits for — SQLite's write lock before committing, PostgreSQL's row lock (with an
        # Idempotency-Key a disclosure decides under it) — it commits first, a permit.
        assert adversary.permitted_before_withdrawal, f"held trial without a permit decided first: {entries}"
        if (schedule == "held-before-committing") if broker.db.sqlite else calls.under_row_lock:
            assert permits, f"held trial without a permitted disclosure: {entries}"


def test_through_the_api_no_disclosure_commits_after_the_withdrawal(
    env: Env, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The same race through the partner API, each write with an Idempotency-Key: the disclosure's transaction
    then also stores its response, and commits after the use case has returned. Fewer trials (the partner's rate
    limit, 600 a minute, counts every disclosure of the run)."""
    backend = "sqlite" if env.broker.db.sqlite else "postgres"
    started = time.monotonic()
    tally = run_trials(env, HTTP_TRIALS[backend], HOLD, monkeypatch, HttpCalls(env))
    with capsys.disabled():
        print(f"\n{tally.summary(f'withdrawal race over HTTP, {backend}', time.monotonic() - started)}")
    assert tally.violations == 0, f"permitted disclosures committed after the withdrawal: {tally.late}"
    assert sum(tally.trials.values()) == HTTP_TRIALS[backend]


def test_outside_test_mode_the_switch_is_refused_and_ignored(env: Env) -> None:
    """The switch set on a production Settings (not through `from_env`): build_broker refuses it, and a Broker given
    such settings all the same still takes the lock in every unit of work."""
    production = replace(env.broker.settings, mode="production", test_disable_decision_lock=True)
    with pytest.raises(ConfigurationError, match="BROKER_TEST_DISABLE_DECISION_LOCK is allowed only in test mode"):
        build_broker(production, clock=env.clock)
    assert dataclasses.replace(env.broker, settings=production).uow().decision_lock is True
    assert dataclasses.replace(env.broker, settings=replace(production, mode="test")).uow().decision_lock is False


@pytest.fixture
def unlocked_env(settings: Settings, clock: FixedClock) -> Iterator[Env]:
    """The same broker with the decision lock turned off by the test-only switch."""
    environment = make_env(replace(settings, test_disable_decision_lock=True), clock)
    assert environment.broker.uow().decision_lock is False
    yield environment
    environment.broker.db.dispose()


def test_no_disclosure_under_a_consent_commits_after_its_withdrawal(
    env: Env, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    backend = "sqlite" if env.broker.db.sqlite else "postgres"
    assert env.broker.uow().decision_lock is True
    started = time.monotonic()
    tally = run_trials(env, TRIALS[backend], HOLD, monkeypatch)
    with capsys.disabled():
        print(f"\n{tally.summary(f'withdrawal race, {backend}', time.monotonic() - started)}")
    assert tally.violations == 0, f"permitted disclosures committed after the withdrawal: {tally.late}"
    assert sum(tally.trials.values()) == TRIALS[backend]


@pytest.mark.parametrize("database_url", [POSTGRES_ONLY], indirect=True)
@pytest.mark.parametrize("path", ["snapshot", "locked"])
def test_without_the_decision_lock_the_same_harness_finds_late_disclosures(
    unlocked_env: Env, path: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The negative control: the harness can fail. With the lock off — on a snapshot, the one recording statement
    neither locks the person's row nor compares the facts version; under the row lock, there is no lock — disclosures
    that decided on the active consent commit after the withdrawal, and the criterion sees them; under the lock also
    those that took their append id before the withdrawal took its own (the schedule held before committing), which
    an order by append id would miss. (On a snapshot the append id is taken by the statement that commits.)"""
    if path == "locked":
        monkeypatch.setattr(disclosures, "_plan_and_record_in_two_statements", lambda *args: None)
    started = time.monotonic()
    tally = run_trials(unlocked_env, CONTROL_TRIALS, CONTROL_HOLD, monkeypatch)
    with capsys.disabled():
        print(f"\n{tally.summary(f'withdrawal race without the lock, {path} (control)', time.monotonic() - started)}")
    assert tally.violations > 0, f"the harness found no late disclosure without the lock: {tally}"
    if path == "locked":
        assert tally.appended_first > 0, f"no late disclosure appended before the withdrawal: {tally}"
