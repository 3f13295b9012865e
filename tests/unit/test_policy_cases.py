"""The decision tables in `policies/cases/*.yaml`, one test per case (STYLE.md: policies tested as decision
tables, each case citing the rule's source), and the runner behind `broker policy test` / `eval`."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from policies import PolicyError, load_policy
from policies.cases import Case, CaseResult, load_cases, run_case, run_cases
from policies.cli import evaluate_json
from policies.loader import Rule

POLICY = load_policy()
CASES = load_cases()
RESULTS = run_cases(POLICY)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_decision_table(case: Case) -> None:
    result = run_case(POLICY, case)
    assert result.passed, result.message


def test_every_permit_rule_has_a_permitting_case_and_every_forbid_a_forbidden_one() -> None:
    results = run_cases(POLICY)
    permitted = {r.decision.basis.rule_id for r in results if r.decision.basis}
    forbidden = {x.rule_id for r in results for x in r.decision.reasons if x.code == "forbidden"}
    assert permitted == {r.id for r in POLICY.rules if r.effect == "permit"}
    assert forbidden == {r.id for r in POLICY.rules if r.effect == "forbid"}


def test_every_case_cites_a_flow_the_policy_encodes_and_a_statute() -> None:
    flows = {r.flow for r in POLICY.rules}
    for case in CASES:
        assert case.flow == "none" or case.flow in flows, case.name
        assert re.search(r"§|GDPR|DESIGN\.md|flows\.md", case.statute), case.name


def _denials(flow: str) -> list[CaseResult]:
    return [r for r in RESULTS if r.case.flow == flow and not r.decision.permitted]


def _has_reason(flow: str, rule_id: str, code: str) -> bool:
    return any(x.rule_id == rule_id and x.code == code for r in _denials(flow) for x in r.decision.reasons)


def _missing_for(rule: Rule) -> list[str]:
    """What the decision tables must show for one rule (issue #3 item 7): a permit, and the denials that matter,
    each in a case citing the rule's flow."""
    missing = []
    if rule.effect == "forbid":
        return [] if _has_reason(rule.flow, rule.id, "forbidden") else ["forbidden"]
    if not any(r.decision.basis and r.decision.basis.rule_id == rule.id for r in RESULTS):
        missing.append("a permit")
    if rule.purposes != POLICY.purposes and not any(
        r.case.request.category in rule.categories
        and r.case.request.requester_org_type in rule.requester_org_types
        and r.case.request.purpose not in rule.purposes
        for r in _denials(rule.flow)
    ):
        missing.append("wrong purpose")
    wanted = []
    if rule.requester_org_types != POLICY.org_types:
        wanted.append("wrong_org_type")
    if rule.relationship_required:
        wanted.append("no_relationship")
    if rule.person_age_under is not None:
        wanted += ["person_too_old", "person_age_unknown"]
    if rule.basis in ("consent", "consent_or_exception"):
        wanted += ["consent_missing_category", "consent_withdrawn", "representative_without_mandate"]
        if rule.explicit or any(POLICY.is_special(c) for c in rule.categories):
            wanted.append("consent_not_explicit")
        if rule.written:
            wanted.append("consent_not_written")
        if rule.minor_needs_custodian:
            wanted += ["custodian_consent_missing", "minor_consent_missing"]
    if rule.basis == "consent_or_exception":
        wanted.append("exception_not_listed")
        for ground in sorted(rule.exceptions):
            if not any(
                r.decision.basis and (r.decision.basis.rule_id, r.decision.basis.exception_ground) == (rule.id, ground)
                for r in RESULTS
            ):
                missing.append(f"a permit on the exception {ground}")
    missing += [code for code in wanted if not _has_reason(rule.flow, rule.id, code)]
    return missing


def test_every_rule_has_a_permit_and_the_denials_that_matter() -> None:
    missing = {rule.id: m for rule in POLICY.rules if (m := _missing_for(rule))}
    assert missing == {}


def test_exception_permits_carry_the_review_obligations_and_name_their_ground() -> None:
    found = [r for r in RESULTS if r.decision.basis and r.decision.basis.kind == "exception"]
    assert {r.decision.basis.exception_ground for r in found if r.decision.basis} == set(POLICY.exceptions)
    for result in found:
        assert {"dpo_review", "notify_person"} <= set(result.decision.obligations), result.name
        assert result.case.request.exception and result.case.request.exception.justification.strip(), result.name


def test_the_denials_that_matter_are_covered() -> None:
    covered = {case.expect.get("reason") for case in CASES}
    assert {
        "no_rule",
        "wrong_org_type",
        "wrong_role",
        "wrong_source",
        "no_relationship",
        "no_consent",
        "consent_withdrawn",
        "consent_expired",
        "consent_missing_recipient",
        "consent_missing_category",
        "consent_missing_purpose",
        "consent_not_explicit",
        "consent_not_written",
        "representative_without_mandate",
        "forbidden",
    } <= covered


CASE_FILE = """now: 2025-06-01T09:00:00Z
cases:
  - name: kela gets more than it should
    flow: F6
    statute: "380/2023 115 §"
    request: {requester_org: kela, requester_org_type: kela, requester_role: kela_expert,
              category: interruption_notice, purpose: follow_up}
    expect: {effect: permit, basis: statute, rule: F6, fields: [interruption_date, results_summary]}
"""


def test_the_runner_reports_what_differs(tmp_path: Path) -> None:
    (tmp_path / "wrong.yaml").write_text(CASE_FILE, encoding="utf-8")
    [result] = run_cases(POLICY, tmp_path)
    assert not result.passed and result.name == "kela gets more than it should"
    expected, got = ["interruption_date", "results_summary"], ["interruption_date", "reason_category"]
    assert result.problems == (f"fields: expected {expected!r}, got {got!r}",)
    assert "wrong.yaml (F6, 380/2023 115 §): fields:" in result.message


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            ("effect: permit, ", "effect: allow, "),
            "case kela gets more than it should: expect.effect: Must be one of",
        ),
        (
            ("rule: F6, ", ""),
            "case kela gets more than it should: expect.rule: required when a permit is expected",
        ),
        (
            ("now: 2025-06-01T09:00:00Z\n", ""),
            "case kela gets more than it should: now: required (no file default)",
        ),
        (
            ("    flow: F6\n", "    flow: F6\n    colour: red\n"),
            "case kela gets more than it should: colour: Unknown",
        ),
    ],
)
def test_a_bad_case_file_is_refused_naming_file_case_and_field(
    tmp_path: Path, change: tuple[str, str], expected: str
) -> None:
    (tmp_path / "bad.yaml").write_text(CASE_FILE.replace(*change), encoding="utf-8")
    with pytest.raises(PolicyError) as caught:
        load_cases(tmp_path)
    assert f"bad.yaml: {expected}" in str(caught.value)


def test_duplicate_case_names_are_refused(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(CASE_FILE, encoding="utf-8")
    (tmp_path / "b.yaml").write_text(CASE_FILE, encoding="utf-8")
    with pytest.raises(PolicyError, match="duplicate case name"):
        load_cases(tmp_path)


def test_eval_answers_a_what_if_in_json() -> None:
    document = {
        "request": {
            "requester_org": "varha-health",
            "requester_org_type": "health_care",
            "requester_role": "nurse",
            "category": "work_assessment",
            "purpose": "work_capacity_assessment",
        },
        "facts": {
            "relationships": ["varha-health"],
            "consents": [
                {
                    "consent_id": "c-9",
                    "recipients": ["varha-health"],
                    "categories": ["work_assessment"],
                    "purposes": ["work_capacity_assessment"],
                    "valid_from": "2025-01-01T00:00:00Z",
                    "explicit": True,
                }
            ],
        },
        "now": "2025-06-01T09:00:00Z",
    }
    answer = evaluate_json(POLICY, document)
    assert answer["effect"] == "permit" and answer["basis"]["rule"] == "F7" and answer["basis"]["consent_id"] == "c-9"
    assert answer["policy_version"] == POLICY.version
    with pytest.raises(ValueError, match="now"):
        evaluate_json(POLICY, {**document, "now": "2025-06-01T09:00:00"})  # a naive clock is refused
    with pytest.raises(ValueError, match="colour"):
        evaluate_json(POLICY, {**document, "colour": "red"})
