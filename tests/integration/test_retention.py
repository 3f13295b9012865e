"""Retention (flows.md, "Retention"; docs/retention.md): `broker retention run` erases the content of exactly the
records whose period has ended, keeps the rest, logs each erasure without content, and the log still verifies."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from broker.adapters.orm import AuditEntryRow, RecordRow
from broker.cli import main
from broker.demo import caller
from broker.services import retention
from broker.services.audit_check import verify_broker_log
from broker.services.keys import rotate_keys
from broker.services.persons import end_relationship, resolve_person, start_relationship
from broker.services.records import deposit_record
from broker.services.retention import RetentionRunError, run_retention
from broker.services.sequencer import Sequencer
from schemas.records.examples import EXAMPLES
from tests.support import Env, new_hetu

# Relationships end at 00:30 on 10 March 2020 in Helsinki, which is still 9 March in UTC: the periods are counted
# on the Helsinki calendar, so the four-year period ends on 10 March 2024 and the ten-year one on 10 March 2030.
ENDED = datetime(2020, 3, 9, 22, 30, tzinfo=UTC)
FOUR_YEARS_ON = datetime(2024, 3, 9, 22, 0, tzinfo=UTC)  # 00:00 on 10 March 2024 in Helsinki
TEN_YEARS_ON = datetime(2030, 3, 9, 22, 0, tzinfo=UTC)  # 00:00 on 10 March 2030 in Helsinki
LONG_AFTER = datetime(2045, 1, 1, tzinfo=UTC)


@dataclass
class Story:
    person: str  # served by Kisälli, adult social work and the health centre until ENDED
    assessment: str  # Kisälli's work assessment: 4 years (380/2023 122 §)
    decision: str  # social work's activity decision: 10 years (703/2023 annex)
    health_check: str  # the health centre's summary: no rule in flows.md, kept
    open_assessment: str  # Kisälli still serves this person: kept
    returning_assessment: str  # Kisälli served 2015–2016 and again from 2019: open, kept
    unserved_plan: str  # the employment authority never served this person: no date to count from, kept

    @property
    def all(self) -> set[str]:
        return {
            self.assessment,
            self.decision,
            self.health_check,
            self.open_assessment,
            self.returning_assessment,
            self.unserved_plan,
        }


def at(env: Env, moment: datetime) -> None:
    env.clock.at = moment


def deposit(env: Env, org: str, person_id: str, category: str) -> str:
    deposited = deposit_record(env.broker, caller(env.broker, org), person_id, category, EXAMPLES[category])
    record_id: str = deposited["record_id"]
    return record_id


def new_person(env: Env, *orgs: str) -> str:
    person_id = resolve_person(env.broker, caller(env.broker, "kisalli"), new_hetu())
    for org in orgs:
        start_relationship(env.broker, caller(env.broker, org), person_id)
    return person_id


@pytest.fixture
def story(env: Env) -> Story:
    at(env, datetime(2015, 5, 4, 9, tzinfo=UTC))
    returning = new_person(env, "kisalli")
    returning_assessment = deposit(env, "kisalli", returning, "work_assessment")
    at(env, datetime(2016, 1, 10, 9, tzinfo=UTC))
    end_relationship(env.broker, caller(env.broker, "kisalli"), returning)
    at(env, datetime(2019, 6, 3, 9, tzinfo=UTC))
    start_relationship(env.broker, caller(env.broker, "kisalli"), returning)

    at(env, datetime(2020, 1, 15, 9, tzinfo=UTC))
    person = new_person(env, "kisalli", "varha-social-work", "varha-health")
    assessment = deposit(env, "kisalli", person, "work_assessment")
    decision = deposit(env, "varha-social-work", person, "activity_decision")
    health_check = deposit(env, "varha-health", person, "health_check_summary")
    served = new_person(env, "kisalli")
    open_assessment = deposit(env, "kisalli", served, "work_assessment")
    unserved = new_person(env)
    unserved_plan = deposit(env, "turku-employment", unserved, "activation_plan")

    at(env, ENDED)
    for org in ("kisalli", "varha-social-work", "varha-health"):
        end_relationship(env.broker, caller(env.broker, org), person)
    return Story(
        person=person,
        assessment=assessment,
        decision=decision,
        health_check=health_check,
        open_assessment=open_assessment,
        returning_assessment=returning_assessment,
        unserved_plan=unserved_plan,
    )


def erased(env: Env) -> set[str]:
    with env.broker.uow(write=False) as uow:
        return set(uow.session.scalars(select(RecordRow.id).where(RecordRow.ciphertext.is_(None))))


def erase_entries(env: Env) -> list[dict[str, Any]]:
    with env.broker.uow(write=False) as uow:
        rows = uow.session.scalars(
            select(AuditEntryRow.entry).where(AuditEntryRow.event == "record:erase").order_by(AuditEntryRow.id)
        )
        return [json.loads(bytes(row)) for row in rows]


def entry_count(env: Env) -> int:
    with env.broker.uow(write=False) as uow:
        return uow.session.scalar(select(func.count()).select_from(AuditEntryRow)) or 0


def test_a_record_is_kept_the_day_before_its_period_ends_and_erased_on_the_day(env: Env, story: Story) -> None:
    at(env, FOUR_YEARS_ON - timedelta(seconds=1))  # 23:59:59 on 9 March 2024 in Helsinki
    report = run_retention(env.broker, env.clock.now())
    assert report.erased == 0 and erased(env) == set()
    assert report.categories["work_assessment"].kept_running == 1

    at(env, FOUR_YEARS_ON)
    report = run_retention(env.broker, env.clock.now())
    assert erased(env) == {story.assessment}
    tally = report.categories["work_assessment"]
    assert (tally.erased, tally.kept_open, tally.kept_running) == (1, 2, 0)
    assert report.categories["activity_decision"].kept_running == 1

    at(env, TEN_YEARS_ON - timedelta(days=1))
    run_retention(env.broker, env.clock.now())
    assert erased(env) == {story.assessment}
    at(env, TEN_YEARS_ON)
    run_retention(env.broker, env.clock.now())
    assert erased(env) == {story.assessment, story.decision}


def test_records_of_open_relationships_without_a_rule_or_without_a_relationship_are_kept(
    env: Env, story: Story
) -> None:
    at(env, LONG_AFTER)
    report = run_retention(env.broker, env.clock.now(), batch_size=1)
    assert erased(env) == {story.assessment, story.decision}
    assert report.batches == 2  # batch_size records a transaction
    assert report.categories["work_assessment"].kept_open == 2
    assert report.categories["health_check_summary"].kept_no_rule == 1
    assert report.categories["activation_plan"].kept_no_relationship == 1
    assert set(report.notes) == {"health_check_summary"}
    assert any(line.startswith("no retention rule: kept 1 record of health_check_summary") for line in report.lines())


def test_each_erasure_is_logged_without_content_and_the_log_still_verifies(env: Env, story: Story) -> None:
    at(env, LONG_AFTER)
    run_retention(env.broker, env.clock.now())
    entries = erase_entries(env)
    by_category = {e["category"]: e for e in entries}
    assert len(entries) == len(by_category) == 2
    assessment, decision = by_category["work_assessment"], by_category["activity_decision"]
    assert assessment["record_ids"] == [story.assessment] and decision["record_ids"] == [story.decision]
    assert assessment["detail"] == {
        "rule": "employment_and_multisector",
        "reference": "380/2023 122 §; 381/2023 12 §",
        "retention_ended_on": "2024-03-10",
    }
    assert decision["detail"]["rule"] == "working_age_social_services"
    assert decision["detail"]["reference"].startswith("703/2023 annex")
    assert decision["detail"]["retention_ended_on"] == "2030-03-10"
    for entry in entries:
        assert entry["event"] == "record:erase" and entry["person_id"] == story.person
        assert entry["actor_role"] == "system" and "organisation" not in entry and "partner" not in entry
    text = json.dumps(entries, ensure_ascii=False)
    for category in ("work_assessment", "activity_decision"):
        for value in EXAMPLES[category].values():
            if isinstance(value, str) and len(value) > 8:
                assert value not in text

    Sequencer(env.broker).run_once()
    check = verify_broker_log(env.broker)
    assert check.size == entry_count(env) and check.pending == 0


def test_a_dry_run_changes_nothing_and_may_look_ahead(env: Env, story: Story) -> None:
    before = entry_count(env)
    report = run_retention(env.broker, LONG_AFTER, dry_run=True)  # the clock still stands at ENDED
    assert report.dry_run and report.erased == 2 and report.batches == 0
    assert erased(env) == set() and entry_count(env) == before
    assert report.lines().__next__().startswith("retention dry run as of 2045-01-01T00:00:00Z: would erase 2")


def test_erasing_as_of_a_future_time_is_refused(env: Env, story: Story) -> None:
    with pytest.raises(RetentionRunError, match="only a dry run may look ahead"):
        run_retention(env.broker, env.clock.now() + timedelta(seconds=1))
    with pytest.raises(RetentionRunError, match="UTC offset"):
        run_retention(env.broker, datetime(2020, 1, 1), dry_run=True)
    assert erased(env) == set()


def test_a_second_run_erases_nothing(env: Env, story: Story) -> None:
    at(env, LONG_AFTER)
    assert run_retention(env.broker, env.clock.now()).erased == 2
    before = entry_count(env)
    again = run_retention(env.broker, env.clock.now())
    assert (again.erased, again.batches) == (0, 0)
    assert entry_count(env) == before and erased(env) == {story.assessment, story.decision}


def test_a_relationship_that_opens_again_during_the_run_keeps_the_record(
    env: Env, story: Story, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Kisälli takes the person on again after the run has read its page and before it erases: the erasing
    # transaction decides again under its locks and keeps the record.
    scan = retention._live_records

    def scan_then_serve_again(uow: Any, after: str, limit: int) -> list[Any]:
        page = scan(uow, after, limit)
        if page:
            start_relationship(env.broker, caller(env.broker, "kisalli"), story.person)
        return page

    monkeypatch.setattr(retention, "_live_records", scan_then_serve_again)
    at(env, FOUR_YEARS_ON)
    report = run_retention(env.broker, env.clock.now())
    assert report.erased == 0 and erased(env) == set() and erase_entries(env) == []
    assert report.categories["work_assessment"].kept_open == 3


def test_runs_at_the_same_time_erase_each_record_once(env: Env, story: Story) -> None:
    at(env, LONG_AFTER)
    runs = 4
    start = threading.Barrier(runs)

    def run() -> int:
        start.wait()
        return run_retention(env.broker, env.clock.now()).erased

    with ThreadPoolExecutor(runs) as pool:
        counts = list(pool.map(lambda _: run(), range(runs)))
    assert sum(counts) == 2
    assert sorted(e["record_ids"][0] for e in erase_entries(env)) == sorted([story.assessment, story.decision])


def test_a_disclosure_after_an_erasure_answers_without_the_erased_record(env: Env, story: Story) -> None:
    at(env, TEN_YEARS_ON)
    run_retention(env.broker, env.clock.now())
    assert story.decision in erased(env)
    # Kisälli serves the person again: social work's decisions reach it on statute (flows.md F3).
    start_relationship(env.broker, caller(env.broker, "kisalli"), story.person)
    ask = {"person_id": story.person, "category": "activity_decision", "purpose": "service_delivery"}
    # Only an erased record: a permit with no records, the same answer as for a person with none at all.
    response = env.post("kisalli", "/disclosures", ask)
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["records"] == []
    # Social work decides on a new period of work activity: that one is disclosed, the erased one is not.
    newer = deposit(env, "varha-social-work", story.person, "activity_decision")
    response = env.post("kisalli", "/disclosures", ask)
    assert response.status_code == 200, response.get_json()
    assert [r["record_id"] for r in response.get_json()["records"]] == [newer]


def test_keys_still_rotate_after_an_erasure(env: Env, story: Story) -> None:
    # An erased record keeps its wrapped data key (the column is NOT NULL); rotation re-wraps it like any other.
    at(env, LONG_AFTER)
    run_retention(env.broker, env.clock.now())
    result = rotate_keys(env.broker.settings)
    assert result.records == len(story.all)


def test_the_command_line_runs_retention_and_prints_a_summary(
    env: Env, story: Story, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = env.broker.settings
    monkeypatch.setenv("BROKER_MODE", "test")
    monkeypatch.setenv("BROKER_INSTANCE_PATH", str(settings.instance_path))
    monkeypatch.setenv("BROKER_DATABASE_URL", settings.database_url)

    assert main(["retention", "run", "--dry-run", "--now", "2045-01-01T00:00:00Z"]) == 0
    out = capsys.readouterr().out
    assert "would erase 2 records; nothing was changed" in out and erased(env) == set()
    assert "no retention rule: kept 1 record of health_check_summary — A health-care patient document" in out

    # The command runs on the real clock: a time in the past is allowed, and erases as of then.
    assert main(["retention", "run", "--now", "2024-03-10T00:00:00+02:00"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("retention run as of 2024-03-09T22:00:00Z: erased 1 record in 1 transaction")
    work_assessment = next(line for line in out.splitlines() if line.startswith("work_assessment "))
    assert work_assessment.split()[1:] == ["1", "2", "0", "0", "0"]
    assert erased(env) == {story.assessment}

    assert main(["retention", "run", "--now", "2999-01-01T00:00:00Z"]) == 2
    assert "only a dry run may look ahead" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["retention", "run", "--now", "2030-03-10"])
    assert "give the UTC offset" in capsys.readouterr().err
