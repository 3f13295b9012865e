"""`broker policy diff` (issue #3 item 5): both versions decide the decision tables and the generated request
set, and every request whose decision changes is reported with what changed."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest

from policies import Policy, load_policy
from policies.cases import load_cases
from policies.diff import Change, Outcome, PolicyDiff, diff_policies, generated_requests, situations
from policies.loader import RULES_DIR

NOW = datetime(2025, 6, 1, 9, 0, tzinfo=UTC)
POLICY = load_policy()
CASES = load_cases()


def edited(tmp_path: Path, *edits: tuple[str, str, str]) -> Policy:
    """The shipped rules with text replacements (file, old, new), each of which must apply exactly once."""
    folder = tmp_path / "rules"
    if not folder.exists():
        shutil.copytree(RULES_DIR, folder)
    for file, old, new in edits:
        path = folder / file
        text = path.read_text(encoding="utf-8")
        assert text.count(old) == 1, (file, old)
        path.write_text(text.replace(old, new), encoding="utf-8")
    return load_policy(folder)


F14B_RULE_START = "  - id: F14b\n"


@pytest.fixture(scope="module")
def changed(tmp_path_factory: pytest.TempPathFactory) -> PolicyDiff:
    """One new version with a change of every kind, decided once for the whole module (it takes seconds)."""
    youth = (RULES_DIR / "youth.yaml").read_text(encoding="utf-8")
    start = youth.index(F14B_RULE_START)
    f14b = youth[start : youth.index("  # Ohjaamo has no data-sharing right", start)]
    new = edited(
        tmp_path_factory.mktemp("diff"),
        # fields: the benefit payers would also see the results summary of an interruption
        (
            "activation.yaml",
            "      interruption_notice: [interruption_date, reason_category]\n",
            "      interruption_notice: [interruption_date, reason_category, results_summary]\n",
        ),
        # reference: F1 cites another section
        ("activation.yaml", 'secrecy_ground: "189/2001 27 §"', 'secrecy_ground: "189/2001 27 § 1 mom."'),
        # obligations: employers are no longer told that the data are confidential
        ("employers.yaml", "    obligations: [no_onward_disclosure]\n", ""),
        # effect: F14b is gone
        ("youth.yaml", f14b, ""),
        # a word only the new version has: a second Kela role
        ("vocabulary.yaml", "    roles: [kela_expert]\n", "    roles: [kela_expert, kela_director]\n"),
    )
    return diff_policies(POLICY, new, CASES, NOW)


def test_a_version_against_itself_changes_nothing() -> None:
    result = diff_policies(POLICY, load_policy(), CASES)  # no clock: the decision tables only
    assert not result.changed and result.cases == len(CASES) and result.requests == 0
    assert list(result.lines()) == [result.summary()]
    assert result.summary() == (
        f"policy {POLICY.version[:16]} → {POLICY.version[:16]}: 0 of {len(CASES)} decision-table cases and "
        "0 of 0 generated requests change"
    )


def test_the_generated_set_covers_every_org_type_role_source_category_purpose_and_situation() -> None:
    count = sum(1 for _ in generated_requests(POLICY, POLICY, NOW))
    roles = sum(len(POLICY.roles_for(t)) for t in POLICY.org_types)
    sources = len(POLICY.org_types) + 1  # and "any source"
    assert len(situations(sorted(POLICY.exceptions))) == 6 + len(POLICY.exceptions)
    assert count == roles * sources * len(POLICY.categories) * len(POLICY.purposes) * (6 + len(POLICY.exceptions))


def test_the_situations_give_the_facts_they_describe() -> None:
    by_name = {s.name: s for s in situations(["care_need_health_or_safety_at_risk"])}
    assert by_name["none"].facts("kela", "benefit_status", "follow_up", NOW).relationships == frozenset()
    minor = by_name["minor_custodian"].facts("kela", "benefit_status", "follow_up", NOW)
    assert minor.person_is_minor and minor.person_age == 16 and minor.relationships == {"kela"}
    assert sorted((c.given_by, c.mandate, c.explicit, c.written) for c in minor.consents) == [
        ("person", None, True, True),
        ("representative", "custodian", True, True),
    ]
    [consent] = by_name["explicit_consent"].facts("kela", "benefit_status", "follow_up", NOW).consents
    assert (consent.recipients, consent.categories, consent.purposes) == ({"kela"}, {"benefit_status"}, {"follow_up"})
    assert consent.explicit and not consent.written and consent.valid_from < NOW
    assert by_name["exception:care_need_health_or_safety_at_risk"].exception == "care_need_health_or_safety_at_risk"


def test_changed_fields_are_reported_for_every_request_and_case_they_touch(changed: PolicyDiff) -> None:
    fields = [c for c in changed.changes if c.aspects == ("fields",)]
    assert {c.new.rule for c in fields} == {"F6"}
    assert all(c.new.fields == ("interruption_date", "reason_category", "results_summary") for c in fields)
    assert {c.origin for c in fields} == {"case", "request"}
    line = next(c.line() for c in fields if c.label.startswith("kela/kela_expert ← employment_services"))
    assert line == (
        "request kela/kela_expert ← employment_services: interruption_notice for follow_up [none]: "
        "permit statute F6 fields [interruption_date, reason_category] → "
        "permit statute F6 fields [interruption_date, reason_category, results_summary]  [fields]"
    )


def test_a_removed_rule_turns_its_permits_into_denials(changed: PolicyDiff) -> None:
    gone = [c for c in changed.changes if c.old.rule == "F14b"]
    # Denied — except where a consent opens another flow: asked "would any source do", Ohjaamo's records could
    # still reach outreach youth work on the young person's consent (F15b).
    assert gone and all(c.new.effect == "deny" or (c.new.rule == "F15b" and "← any source:" in c.label) for c in gone)
    assert any(c.new.effect == "deny" for c in gone) and any(c.new.rule == "F15b" for c in gone)
    # Only the young: the situations with a person under 29, and the decision-table cases for F14b.
    assert {c.label.rsplit("[", 1)[1] for c in gone if c.origin == "request"} == {"young_adult]", "minor_custodian]"}
    assert any(c.origin == "case" and "(F14b, 1285/2016 11 § 4 mom.)" in c.label for c in gone)
    assert all(c.label.startswith("youth_outreach/") for c in gone if c.origin == "request")


def test_changed_obligations_and_references_are_reported(changed: PolicyDiff) -> None:
    obligations = [c for c in changed.changes if "obligations" in c.aspects and c.old.rule == c.new.rule]
    assert obligations and {c.old.rule for c in obligations} == {"F18"}
    assert all(c.old.obligations == ("no_onward_disclosure",) and c.new.obligations == () for c in obligations)
    references = [c for c in changed.changes if "reference" in c.aspects and c.old.rule == c.new.rule]
    assert references and {c.new.rule for c in references} == {"F1"}
    assert "(189/2001 27 § 1 mom.; GDPR 6(1)(c))" in references[0].line()


def test_a_word_only_the_new_version_has_is_asked_about(changed: PolicyDiff) -> None:
    director = [c for c in changed.changes if c.label.startswith("kela/kela_director ")]
    assert director and all(c.old.effect == "deny" and c.new.effect == "permit" for c in director)
    assert "wrong_role" in director[0].old.why


def test_nothing_else_changes_and_the_summary_counts_it(changed: PolicyDiff) -> None:
    explained = {"F1", "F6", "F14b", "F18"}
    for change in changed.changes:
        assert change.label.startswith("kela/kela_director ") or {change.old.rule, change.new.rule} & explained
    summary = changed.summary()
    assert summary.startswith(f"policy {POLICY.version[:16]} → ")
    cases = sum(c.origin == "case" for c in changed.changes)
    requests = len(changed.changes) - cases
    assert f": {cases} of {len(CASES)} decision-table cases and {requests} of {changed.requests} generated" in summary
    assert list(changed.lines())[-1] == summary


def test_a_denial_is_described_by_the_reasons_that_concern_the_request() -> None:
    change = Change(
        "request",
        "x",
        Outcome("deny", why="no_relationship"),
        Outcome("permit", "statute", "F9", "381/2023 15 §", "GDPR 6(1)(e)", ("a", "b"), ("dpo_review",)),
    )
    assert change.aspects == ("effect", "basis", "reference", "fields", "obligations")
    assert change.line() == (
        "request x: deny (no_relationship) → permit statute F9 (381/2023 15 §; GDPR 6(1)(e)) fields [a, b] "
        "obligations [dpo_review]  [effect, basis, reference, fields, obligations]"
    )
    assert Outcome("deny", why="a") == Outcome("deny", why="b")  # reasons are shown, not compared
