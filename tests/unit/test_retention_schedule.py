"""The retention schedule (`policies/retention.yaml`): the shipped file covers every record category, a bad file
is refused with a message naming file and field, and the periods are counted as the law counts them."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from broker.services.retention import (
    SCHEDULE_FILE,
    RetentionRule,
    RetentionScheduleError,
    add_years,
    judge,
    load_retention_schedule,
    parse_retention_schedule,
    retention_ends_on,
)
from policies import Policy, PolicyError, load_policy

Mutation = Callable[[dict[str, Any]], None]
FOUR_YEARS = RetentionRule("four", 4, "relationship_end", "380/2023 122 §", "employment records")


@pytest.fixture(scope="module")
def policy() -> Policy:
    return load_policy()


def shipped() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(SCHEDULE_FILE.read_text(encoding="utf-8"))
    return data


def refusal(policy: Policy, mutate: Mutation) -> str:
    data = shipped()
    mutate(data)
    with pytest.raises(RetentionScheduleError) as caught:
        parse_retention_schedule(yaml.safe_dump(data, allow_unicode=True), policy, "policies/retention.yaml")
    return str(caught.value)


# --- the shipped schedule --------------------------------------------------------------------------------------


def test_the_shipped_schedule_names_the_retention_of_every_category_of_the_policy(policy: Policy) -> None:
    schedule = load_retention_schedule(policy)
    assert set(schedule.categories) == policy.categories
    assert all(entry.note for entry in schedule.categories.values())


def test_the_shipped_periods_are_those_of_flows_md(policy: Policy) -> None:
    schedule = load_retention_schedule(policy)
    employment = schedule.rules["employment_and_multisector"]
    assert (employment.years, employment.reference) == (4, "380/2023 122 §; 381/2023 12 §")
    for name in ("working_age_social_services", "substance_abuse_services"):
        assert schedule.rules[name].years == 10 and schedule.rules[name].reference.startswith("703/2023 annex")
    assert schedule.rule_for("work_assessment", "employment_services") == employment
    assert schedule.rule_for("activity_decision", "social_work") == schedule.rules["working_age_social_services"]
    assert schedule.rule_for("activation_plan", "employment_authority") == employment
    assert schedule.rule_for("activation_plan", "social_work") == schedule.rules["working_age_social_services"]
    assert schedule.rule_for("substance_incident", "employment_services") == schedule.rules["substance_abuse_services"]


def test_categories_without_a_period_in_flows_md_are_kept(policy: Policy) -> None:
    schedule = load_retention_schedule(policy)
    for category in ("health_check_summary", "benefit_status", "cofinancing_entry", "youth_referral"):
        assert schedule.rule_for(category, None) is None
    assert schedule.rule_for("rehabilitation_statement", "health_care") is None
    assert schedule.rule_for("contact_details", "kela") is None
    assert schedule.rule_for("a_category_the_schedule_does_not_know", None) is None


# --- a bad file is refused, naming file and field --------------------------------------------------------------


def _drop_category(data: dict[str, Any]) -> None:
    del data["categories"]["work_assessment"]


def _unknown_category(data: dict[str, Any]) -> None:
    data["categories"]["horoscope"] = {"rule": None, "note": "no"}


def _unknown_rule(data: dict[str, Any]) -> None:
    data["categories"]["work_assessment"]["rule"] = "four_years"


def _years(value: Any) -> Mutation:
    return lambda data: data["rules"]["employment_and_multisector"].__setitem__("years", value)


def _trigger(data: dict[str, Any]) -> None:
    data["rules"]["employment_and_multisector"]["after"] = "deposit"


def _no_reference(data: dict[str, Any]) -> None:
    data["rules"]["substance_abuse_services"]["reference"] = " "


def _unknown_rule_key(data: dict[str, Any]) -> None:
    data["rules"]["substance_abuse_services"]["months"] = 6


def _no_note(data: dict[str, Any]) -> None:
    del data["categories"]["youth_referral"]["note"]


def _no_rule_key(data: dict[str, Any]) -> None:
    del data["categories"]["youth_referral"]["rule"]


def _unknown_org_type(data: dict[str, Any]) -> None:
    data["categories"]["activation_plan"]["by_source"]["church"] = None


def _unknown_source_rule(data: dict[str, Any]) -> None:
    data["categories"]["activation_plan"]["by_source"]["social_work"] = "ten_years"


def _empty_by_source(data: dict[str, Any]) -> None:
    data["categories"]["activation_plan"]["by_source"] = {}


def _unused_rule(data: dict[str, Any]) -> None:
    data["categories"]["substance_incident"]["rule"] = "working_age_social_services"


def _bad_rule_name(data: dict[str, Any]) -> None:
    data["rules"]["Ten Years"] = data["rules"].pop("substance_abuse_services")


def _unknown_top_key(data: dict[str, Any]) -> None:
    data["defaults"] = {"years": 4}


def _no_rules(data: dict[str, Any]) -> None:
    data["rules"] = {}


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (_drop_category, "categories: no entry for 'work_assessment'"),
        (_unknown_category, "categories.horoscope: not a category of the policy vocabulary"),
        (_unknown_rule, "categories.work_assessment.rule: unknown rule 'four_years'"),
        (_years(0), "rules.employment_and_multisector.years: must be a whole number of years from 1 to 120"),
        (_years("4"), "rules.employment_and_multisector.years: must be a whole number"),
        (_years(True), "rules.employment_and_multisector.years: must be a whole number"),
        (_years(4.5), "rules.employment_and_multisector.years: must be a whole number"),
        (_trigger, "rules.employment_and_multisector.after: must be one of: relationship_end"),
        (_no_reference, "rules.substance_abuse_services.reference: must be non-empty text"),
        (_unknown_rule_key, "rules.substance_abuse_services.months: unknown key"),
        (_no_note, "categories.youth_referral.note: missing"),
        (_no_rule_key, "categories.youth_referral.rule: missing"),
        (_unknown_org_type, "categories.activation_plan.by_source.church: not an org type"),
        (_unknown_source_rule, "categories.activation_plan.by_source.social_work: unknown rule 'ten_years'"),
        (_empty_by_source, "categories.activation_plan.by_source: must be a non-empty mapping"),
        (_unused_rule, "rules.substance_abuse_services: no category uses this rule"),
        (_bad_rule_name, "rules.Ten Years: a rule's name must be snake_case"),
        (_unknown_top_key, "defaults: unknown key"),
        (_no_rules, "rules: must be a non-empty mapping"),
    ],
)
def test_a_bad_schedule_is_refused_naming_the_file_and_the_field(
    policy: Policy, mutate: Mutation, message: str
) -> None:
    assert f"policies/retention.yaml: {message}" in refusal(policy, mutate)


def test_every_problem_of_a_file_is_reported_at_once(policy: Policy) -> None:
    def two_problems(data: dict[str, Any]) -> None:
        _unknown_rule(data)
        _trigger(data)

    with pytest.raises(RetentionScheduleError) as caught:
        data = shipped()
        two_problems(data)
        parse_retention_schedule(yaml.safe_dump(data), policy, "policies/retention.yaml")
    assert len(caught.value.errors) == 2
    # A schedule error is a policy error: whatever reports those reports this one too.
    assert isinstance(caught.value, PolicyError) and caught.value.code == "invalid_retention_schedule"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("rules: [", "policies/retention.yaml: while parsing"),
        ("- a list", "policies/retention.yaml: must be a mapping with 'rules' and 'categories'"),
        ("", "policies/retention.yaml: must be a mapping"),
    ],
)
def test_a_file_that_is_not_a_schedule_at_all_is_refused(policy: Policy, text: str, message: str) -> None:
    with pytest.raises(RetentionScheduleError, match="^" + message):
        parse_retention_schedule(text, policy, "policies/retention.yaml")


def test_a_missing_file_is_refused_by_name(policy: Policy, tmp_path: Path) -> None:
    with pytest.raises(RetentionScheduleError, match=r"retention\.yaml: cannot be read"):
        load_retention_schedule(policy, tmp_path / "retention.yaml")


# --- counting a period -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "years", "end"),
    [
        (date(2020, 3, 10), 4, date(2024, 3, 10)),
        (date(2020, 2, 29), 4, date(2024, 2, 29)),
        # 150/1930 3 §: no 29 February in 2030, so the month's last day.
        (date(2020, 2, 29), 10, date(2030, 2, 28)),
        (date(2019, 12, 31), 10, date(2029, 12, 31)),
    ],
)
def test_a_period_in_years_ends_on_the_corresponding_day(start: date, years: int, end: date) -> None:
    assert add_years(start, years) == end


def test_a_period_is_counted_on_the_helsinki_calendar() -> None:
    # 22:30 UTC on 9 March is 00:30 on 10 March in Helsinki: the relationship ended on the 10th.
    ended = datetime(2020, 3, 9, 22, 30, tzinfo=UTC)
    assert retention_ends_on(FOUR_YEARS, ended, datetime(2020, 1, 1, tzinfo=UTC)) == date(2024, 3, 10)


def test_a_period_never_starts_before_the_record_was_deposited() -> None:
    ended = datetime(2020, 3, 10, 9, tzinfo=UTC)
    deposited = datetime(2021, 6, 1, 9, tzinfo=UTC)
    assert retention_ends_on(FOUR_YEARS, ended, deposited) == date(2025, 6, 1)


DEPOSITED = datetime(2019, 1, 1, 9, tzinfo=UTC)
ENDED = datetime(2020, 3, 10, 9, tzinfo=UTC)


@pytest.mark.parametrize(
    ("rule", "ends", "now", "status"),
    [
        (None, [ENDED], datetime(2090, 1, 1, tzinfo=UTC), "no_rule"),
        (FOUR_YEARS, [], datetime(2090, 1, 1, tzinfo=UTC), "no_relationship"),
        (FOUR_YEARS, [ENDED, None], datetime(2090, 1, 1, tzinfo=UTC), "open"),
        (FOUR_YEARS, [ENDED], datetime(2024, 3, 9, 21, 59, 59, tzinfo=UTC), "running"),  # 23:59:59 in Helsinki
        (FOUR_YEARS, [ENDED], datetime(2024, 3, 9, 22, 0, tzinfo=UTC), "erase"),  # midnight in Helsinki
        # The newest relationship counts: it ended in 2020, so 2016 + 4 years has not ended it.
        (FOUR_YEARS, [datetime(2016, 1, 1, tzinfo=UTC), ENDED], datetime(2021, 1, 1, tzinfo=UTC), "running"),
    ],
)
def test_judge_says_what_retention_does_with_one_record(
    rule: RetentionRule | None, ends: list[datetime | None], now: datetime, status: str
) -> None:
    assert judge(rule, deposited_at=DEPOSITED, relationship_ends=ends, now=now).status == status
