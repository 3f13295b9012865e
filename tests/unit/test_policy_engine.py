"""The engine's semantics (DESIGN.md invariants 1, 4, 5): deny by default, a forbid beats a permit, any
error is a deny, the fields are the winning rule's allow-list, and `decide` is pure."""

from __future__ import annotations

import ast
import gc
import shutil
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from policies import (
    ConsentFact,
    Decision,
    DecisionRequest,
    Facts,
    Policy,
    StatutoryException,
    decide,
    load_policy,
)
from policies.engine import index_facts
from policies.loader import PACKAGE_DIR, RULES_DIR

NOW = datetime(2025, 6, 1, 9, 0, tzinfo=UTC)
CATEGORY_PURPOSE = ("work_assessment", "work_capacity_assessment")
POLICY = load_policy()


def f7_request(**changes: object) -> DecisionRequest:
    """Health care asks for the work assessment employment services made (F7, 703/2023 53 § 3 mom.)."""
    request = DecisionRequest(
        requester_org="varha-health",
        requester_org_type="health_care",
        requester_role="physician",
        person_id="person-1",
        category="work_assessment",
        purpose="work_capacity_assessment",
        source_org="kisalli",
        source_org_type="employment_services",
    )
    return replace(request, **changes)  # type: ignore[arg-type]


def f7_consent(**changes: object) -> ConsentFact:
    consent = ConsentFact(
        consent_id="c-1",
        version=2,
        status="active",
        recipients=frozenset({"varha-health"}),
        categories=frozenset({"work_assessment"}),
        purposes=frozenset({"work_capacity_assessment"}),
        valid_from=NOW - timedelta(days=30),
        explicit=True,
    )
    return replace(consent, **changes)  # type: ignore[arg-type]


def f7_facts(*consents: ConsentFact, **changes: object) -> Facts:
    return replace(Facts(relationships=frozenset({"varha-health"}), consents=consents), **changes)  # type: ignore[arg-type]


def codes(decision: Decision) -> list[str]:
    return [r.code for r in decision.reasons]


def policy_with(tmp_path: Path, extra_rules: str) -> Policy:
    """The shipped policy plus one more rule file."""
    folder = tmp_path / "rules"
    shutil.copytree(RULES_DIR, folder)
    (folder / "zz_extra.yaml").write_text(extra_rules, encoding="utf-8")
    return load_policy(folder)


EXPLANATION = "    explanation: {fi: testi, sv: test, en: test}\n"


# --- the basics -----------------------------------------------------------------------------------------


def test_a_consent_based_permit_names_rule_reference_lawful_basis_and_consent() -> None:
    decision = decide(f7_request(), f7_facts(f7_consent()), POLICY, NOW)
    assert decision.permitted and decision.policy_version == POLICY.version
    assert decision.basis is not None and decision.basis.as_dict() == {
        "kind": "consent",
        "rule": "F7",
        "reference": "703/2023 53 § 3 mom.",
        "lawful_basis": "GDPR 6(1)(e), 9(2)(h)",
        "consent_id": "c-1",
        "consent_version": 2,
        "exception_ground": None,
    }
    assert decision.fields == POLICY.rule("F7").fields["work_assessment"]
    assert "coach_recommendation" not in decision.fields
    assert decision.fields == tuple(sorted(decision.fields))
    # One reason per candidate rule; only F7 applies (F15a/F15b concern Ohjaamo).
    assert [r.rule_id for r in decision.reasons] == [r.id for r in POLICY.candidates(*CATEGORY_PURPOSE)]
    assert [(r.rule_id, r.code) for r in decision.reasons if r.applies] == [("F7", "permit")]


def test_nothing_is_permitted_by_default() -> None:
    decision = decide(f7_request(), Facts(), POLICY, NOW)
    assert not decision.permitted
    assert decision.basis is None and decision.fields == () and decision.obligations == ()
    reasons = {r.rule_id: r.code for r in decision.reasons}
    assert reasons == {
        "F7": "no_relationship",
        "F15a": "wrong_org_type",
        "F15b": "wrong_source",
        "-": "no_rule",
    }


def test_a_request_no_rule_indexes_is_denied_with_no_rule() -> None:
    decision = decide(
        f7_request(purpose="marketing"), f7_facts(f7_consent(purposes=frozenset({"marketing"}))), POLICY, NOW
    )
    assert not decision.permitted and codes(decision) == ["no_rule"]


def test_the_same_inputs_give_the_same_decision() -> None:
    facts = f7_facts(f7_consent(), f7_consent(consent_id="c-2"))
    assert decide(f7_request(), facts, POLICY, NOW) == decide(f7_request(), facts, POLICY, NOW)


def test_withdrawal_takes_effect_from_its_moment() -> None:
    consent = f7_consent()
    assert decide(f7_request(), f7_facts(consent), POLICY, NOW).permitted
    withdrawn = replace(consent, status="withdrawn", withdrawn_at=NOW - timedelta(seconds=1))
    assert codes(decide(f7_request(), f7_facts(withdrawn), POLICY, NOW))[0] == "consent_withdrawn"


def test_a_consent_ends_at_valid_until_exactly() -> None:
    consent = f7_consent(valid_until=NOW + timedelta(microseconds=1))
    assert decide(f7_request(), f7_facts(consent), POLICY, NOW).permitted
    assert not decide(f7_request(), f7_facts(consent), POLICY, NOW + timedelta(microseconds=1)).permitted


def test_a_representative_of_unknown_kind_does_not_count() -> None:
    consent = f7_consent(given_by="neighbour")
    assert codes(decide(f7_request(), f7_facts(consent), POLICY, NOW))[0] == "representative_without_mandate"


def test_the_deepest_consent_failure_is_reported() -> None:
    # One consent is for another purpose, the other names the purpose but is not explicit: the second
    # says more.
    facts = f7_facts(f7_consent(purposes=frozenset({"follow_up"})), f7_consent(consent_id="c-2", explicit=False))
    assert codes(decide(f7_request(), facts, POLICY, NOW))[0] == "consent_not_explicit"


# --- precedence -----------------------------------------------------------------------------------------


FORBIDDEN_PERMIT = (
    """rules:
  - id: F99
    effect: permit
    requester_org_types: [kela]
    source_org_types: any
    categories: [substance_incident, interruption_notice]
    purposes: [follow_up]
    basis: statute
    lawful_basis: "GDPR 6(1)(c)"
    secrecy_ground: "test 1 §"
    relationship_required: false
    fields:
      substance_incident: [incident_date, observed_facts, action_taken]
      interruption_notice: [interruption_date, reason_category, results_summary, proposed_next_step]
"""
    + EXPLANATION
)


def test_a_forbid_beats_a_statutory_permit(tmp_path: Path) -> None:
    policy = policy_with(tmp_path, FORBIDDEN_PERMIT)
    request = DecisionRequest("kela", "kela", "kela_expert", "person-1", "substance_incident", "follow_up")
    decision = decide(request, Facts(), policy, NOW)
    assert not decision.permitted and decision.fields == ()
    applied = {(r.rule_id, r.code) for r in decision.reasons if r.applies}
    assert applied == {("F12b", "forbidden"), ("F99", "permit")}
    assert "no_rule" not in codes(decision)


def test_a_statute_beats_a_consent(tmp_path: Path) -> None:
    policy = policy_with(tmp_path, FORBIDDEN_PERMIT)
    # F15b would let kela have Ohjaamo's record on consent; F99 gives it by statute, with other fields.
    request = DecisionRequest(
        "kela",
        "kela",
        "kela_expert",
        "person-1",
        "interruption_notice",
        "follow_up",
        "ohjaamo-turku",
        "ohjaamo",
    )
    consent = f7_consent(
        recipients=frozenset({"kela"}),
        categories=frozenset({"interruption_notice"}),
        purposes=frozenset({"follow_up"}),
    )
    decision = decide(request, Facts(consents=(consent,)), policy, NOW)
    assert {r.rule_id for r in decision.reasons if r.code == "permit"} == {"F15b", "F99"}
    assert decision.basis is not None and (decision.basis.kind, decision.basis.rule_id) == ("statute", "F99")
    assert decision.fields == policy.rule("F99").fields["interruption_notice"]


def test_between_equal_bases_the_earlier_rule_wins(tmp_path: Path) -> None:
    policy = policy_with(tmp_path, FORBIDDEN_PERMIT)
    request = DecisionRequest(
        "kela",
        "kela",
        "kela_expert",
        "person-1",
        "interruption_notice",
        "follow_up",
        "kisalli",
        "employment_services",
    )
    decision = decide(request, Facts(), policy, NOW)
    assert decision.basis is not None and (decision.basis.kind, decision.basis.rule_id) == ("statute", "F6")
    assert decision.fields == ("interruption_date", "reason_category")


def test_an_asserted_exception_is_preferred_to_a_consent_and_reviewed() -> None:
    claim = StatutoryException("care_need_health_or_safety_at_risk", "collapsed at work, needs care today")
    decision = decide(f7_request(exception=claim), f7_facts(f7_consent()), POLICY, NOW)
    assert decision.basis is not None
    assert decision.basis.kind == "exception" and decision.basis.exception_ground == claim.ground
    assert decision.basis.reference == "703/2023 56 §" and decision.basis.consent_id is None
    assert decision.obligations == ("dpo_review", "notify_person")


def test_an_exception_on_a_consent_only_flow_is_ignored() -> None:
    request = DecisionRequest(
        "kisalli",
        "employment_services",
        "individual_coach",
        "person-1",
        "health_check_summary",
        "service_delivery",
        "turku-employment",
        "employment_authority",
        StatutoryException("care_need_health_or_safety_at_risk", "urgent"),
    )
    decision = decide(request, Facts(relationships=frozenset({"kisalli"})), POLICY, NOW)
    assert not decision.permitted and "no_consent" in codes(decision)


# --- any error is a deny --------------------------------------------------------------------------------


def test_a_naive_clock_is_an_engine_error() -> None:
    decision = decide(f7_request(), f7_facts(f7_consent()), POLICY, datetime(2025, 6, 1))
    assert not decision.permitted and codes(decision) == ["engine_error"]
    assert decision.policy_version == POLICY.version


def test_a_malformed_consent_is_an_engine_error_not_an_exception() -> None:
    naive = f7_consent(valid_from=datetime(2025, 1, 1))
    decision = decide(f7_request(), f7_facts(naive), POLICY, NOW)
    assert not decision.permitted and codes(decision) == ["engine_error"]


def test_a_broken_policy_is_an_engine_error() -> None:
    rule = POLICY.rule("F6")
    broken = replace(POLICY, index={("interruption_notice", "follow_up"): (replace(rule, fields={}),)})
    request = DecisionRequest("kela", "kela", "kela_expert", "person-1", "interruption_notice", "follow_up")
    assert codes(decide(request, Facts(), broken, NOW)) == ["engine_error"]
    nothing = decide(request, Facts(), None, NOW)  # type: ignore[arg-type]
    assert not nothing.permitted and nothing.policy_version == ""


class _Untouchable(tuple):  # type: ignore[type-arg]
    def __iter__(self):  # type: ignore[no-untyped-def]
        raise AssertionError("decide scanned every rule")


def test_decide_reads_the_index_not_every_rule() -> None:
    policy = replace(POLICY, rules=_Untouchable())
    assert decide(f7_request(), f7_facts(f7_consent()), policy, NOW).permitted


# --- consents indexed once per Facts --------------------------------------------------------------------


def test_the_consent_index_is_built_once_per_facts_and_forgotten_with_them() -> None:
    from policies import engine

    facts = f7_facts(f7_consent())
    assert index_facts(facts) is index_facts(facts)
    assert index_facts(f7_facts(f7_consent())) is not index_facts(facts)
    key = id(facts)
    del facts
    gc.collect()
    assert key not in engine._INDEXES


def test_a_decision_looks_only_at_consents_naming_the_requester_and_category() -> None:
    # 10,000 consents for other recipients, each malformed so that evaluating any of them would be an engine
    # error (a naive datetime): the permit shows that the decision never touched them. Speed itself is
    # measured by the policy benchmark, not here.
    others = tuple(
        f7_consent(
            consent_id=f"c-{i}",
            recipients=frozenset({f"org-{i % 97}"}),
            categories=frozenset({"work_assessment", "contact_details"}),
            valid_from=datetime(2020, 1, 1),
        )
        for i in range(10_000)
    )
    facts = f7_facts(*others, f7_consent(consent_id="c-mine"))
    decision = decide(f7_request(), facts, POLICY, NOW)
    assert decision.permitted and decision.basis is not None and decision.basis.consent_id == "c-mine"


# --- purity ---------------------------------------------------------------------------------------------


def test_policies_import_neither_flask_nor_sqlalchemy() -> None:
    code = (
        "import sys, policies, policies.cases, policies.cli; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'flask', 'sqlalchemy', 'authlib', 'broker', 'requests', 'psycopg'}); "
        "print(','.join(bad))"
    )
    found = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=PACKAGE_DIR.parent
    )
    assert found.stdout.strip() == ""


def test_the_engine_reads_no_clock_and_does_no_io() -> None:
    tree = ast.parse((PACKAGE_DIR / "engine.py").read_text(encoding="utf-8"))
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert imported <= {
        "__future__",
        "weakref",
        "collections",
        "dataclasses",
        "datetime",
        "typing",
        "policies",
    }
    calls = {n.func.attr for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)}
    names = {n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
    assert not calls & {"now", "utcnow", "today", "time", "monotonic", "read_text", "read_bytes"}
    assert "open" not in names and "print" not in names


# The properties (deny by default, withdrawal is monotonic, fields within the allow-list, …) are in
# test_policy_properties.py.
