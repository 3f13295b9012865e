"""What must always hold of `decide` (STYLE.md: property tests for what must always hold; issue #3 item 8).

Each property is checked against an independent reading of the rules, written here from their meaning
(docs/policies.md, "How a decision is made") rather than by calling the engine's own helpers: a rule matches a
request, a consent counts, an exception holds — and from those, which rule and basis must win.

The requests are generated around the rules, so that most examples come close to a permit and the edges
(a consent one condition short, an age of 28 or 29, an exception without justification) are exercised.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policies import ConsentFact, Decision, DecisionRequest, Facts, StatutoryException, decide, load_policy
from policies.loader import Rule

POLICY = load_policy()
NOW = datetime(2025, 6, 1, 9, 0, tzinfo=UTC)
PERMITS = [r for r in POLICY.rules if r.effect == "permit"]
FORBIDS = [r for r in POLICY.rules if r.effect == "forbid"]
ORG_TYPES, CATEGORIES, PURPOSES = sorted(POLICY.org_types), sorted(POLICY.categories), sorted(POLICY.purposes)
ROLES = sorted({role for t in ORG_TYPES for role in POLICY.roles_for(t)})
EXCEPTIONS = sorted(POLICY.exceptions)
AGES = (None, 15, 17, 18, 24, 28, 29, 45)
MANDATES = (None, "custodian", "guardian_personal", "continuing_poa_personal", "guardian_financial", "relative")
RANK = {"statute": 0, "exception": 1, "consent": 2}
REVIEW = ("dpo_review", "notify_person")  # flows.md: an asserted exception is reviewed and the person told
PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --- generating requests and facts around the rules ---------------------------------------------------------
# The strategies are built once here, not inside each draw: building them is what would make the tests slow.


def org(org_type: str, n: int = 1) -> str:
    return f"{org_type}-{n}"


OTHERS = [org(t) for t in ORG_TYPES]
# Consent rules are aimed at more often, and rules with exceptions most: their permits need the most to line up.
# None: a request aimed at no rule in particular.
AIMED = st.sampled_from(
    [
        None,
        None,
        None,
        *PERMITS,
        *FORBIDS,
        *(r for r in PERMITS if r.basis != "statute"),
        *[r for r in PERMITS if r.exceptions] * 2,
    ]
)
AIM = {
    rule.id: st.tuples(
        st.sampled_from(sorted(rule.requester_org_types)),
        st.sampled_from(sorted(rule.categories)),
        st.sampled_from(sorted(rule.purposes)),
        st.sampled_from([None, None, *sorted(rule.source_org_types) * 8, *ORG_TYPES]),
    )
    for rule in PERMITS + FORBIDS
}
ANYTHING = st.tuples(
    st.sampled_from(ORG_TYPES),
    st.sampled_from(CATEGORIES),
    st.sampled_from(PURPOSES),
    st.none() | st.sampled_from(ORG_TYPES),
)
# Seven times in eight one of the org type's own roles.
ROLE = {
    t: st.tuples(
        st.sampled_from(sorted(POLICY.roles_for(t))), st.sampled_from(ROLES), st.sampled_from([True] * 7 + [False])
    ).map(lambda drawn: drawn[0] if drawn[2] else drawn[1])
    for t in ORG_TYPES
}
CLAIMS = st.none() | st.builds(
    StatutoryException,
    st.sampled_from(EXCEPTIONS),
    st.sampled_from(["", "   ", "collapsed at work, needs care today", "cannot assess consent, no guardian"]),
)
REQUESTER = "<requester>"  # stands for the requesting organisation until the request is known


def _named(pool: list[str]) -> st.SearchStrategy[tuple[frozenset[str], bool]]:
    """Up to two names from the pool and, seven times in eight, the name the request needs."""
    return st.tuples(st.frozensets(st.sampled_from(pool), max_size=2), st.sampled_from([True] * 7 + [False]))


CONSENT_SHAPE = st.fixed_dictionaries(
    {
        "consent_id": st.sampled_from(["c-1", "c-2", "c-3", "c-4", "c-5"]),
        "version": st.integers(1, 3),
        "status": st.sampled_from(["active"] * 9 + ["withdrawn", "expired", "superseded"]),
        "recipients": _named(OTHERS),
        "categories": _named(CATEGORIES),
        "purposes": _named(PURPOSES),
        "valid_from": st.sampled_from(
            [NOW - timedelta(days=90), NOW - timedelta(days=1), NOW - timedelta(days=1), NOW, NOW + timedelta(days=1)]
        ),
        "valid_until": st.sampled_from([None] * 4 + [NOW, NOW + timedelta(microseconds=1), NOW + timedelta(days=30)]),
        "explicit": st.sampled_from([True] * 5 + [False]),
        "written": st.sampled_from([True, True, False]),
        "bound_to_org": st.tuples(st.sampled_from([REQUESTER, *OTHERS]), st.sampled_from([False] * 7 + [True])).map(
            lambda drawn: drawn[0] if drawn[1] else None
        ),
        "given_by": st.sampled_from(["person"] * 5 + ["representative", "representative", "neighbour"]),
        "mandate": st.sampled_from(MANDATES),
    }
)
# Hypothesis favours short lists; drawing the length first gives as many examples with consents as without.
CONSENT_SHAPES = st.sampled_from([0, 1, 1, 2, 3, 4]).flatmap(
    lambda n: st.lists(CONSENT_SHAPE, min_size=n, max_size=n, unique_by=lambda shape: shape["consent_id"])
)
RELATIONSHIPS = st.tuples(
    st.frozensets(st.sampled_from(OTHERS), max_size=2), st.sampled_from([True] * 4 + [False])
).map(lambda drawn: drawn[0] | {REQUESTER} if drawn[1] else drawn[0])
FLAGS = st.tuples(st.sampled_from(AGES), st.booleans(), st.booleans(), st.sampled_from([1, 1, 1, 2]))


def consent_from(shape: dict[str, Any], request: DecisionRequest) -> ConsentFact:
    """A consent that usually names the request's recipient, category and purpose: one condition or none short
    of counting."""

    def names(key: str, wanted: str) -> frozenset[str]:
        extra, include = shape[key]
        return frozenset(extra | {wanted}) if include else frozenset(extra)

    bound = shape["bound_to_org"]
    return ConsentFact(
        consent_id=shape["consent_id"],
        version=shape["version"],
        status=shape["status"],
        recipients=names("recipients", request.requester_org),
        categories=names("categories", request.category),
        purposes=names("purposes", request.purpose),
        valid_from=shape["valid_from"],
        valid_until=shape["valid_until"],
        explicit=shape["explicit"],
        written=shape["written"],
        bound_to_org=request.requester_org if bound == REQUESTER else bound,
        given_by=shape["given_by"],
        mandate=shape["mandate"],
    )


@st.composite
def examples(draw: st.DrawFn) -> tuple[DecisionRequest, Facts]:
    aimed: Rule | None = draw(AIMED)
    org_type, category, purpose, source_type = draw(AIM[aimed.id] if aimed else ANYTHING)
    age, coin, represented, n = draw(FLAGS)
    requester = org(org_type, n)
    request = DecisionRequest(
        requester,
        org_type,
        draw(ROLE[org_type]),
        "person-1",
        category,
        purpose,
        org(source_type) if source_type else None,
        source_type,
        draw(CLAIMS),
    )
    facts = Facts(
        relationships=frozenset(requester if r == REQUESTER else r for r in draw(RELATIONSHIPS)),
        consents=tuple(consent_from(shape, request) for shape in draw(CONSENT_SHAPES)),
        person_is_minor=age < 18 if age is not None else coin,
        has_legal_representative=represented,
        person_age=age,
    )
    return request, facts


# --- the rules read independently -----------------------------------------------------------------------


def rule_matches(rule: Rule, request: DecisionRequest, facts: Facts) -> bool:
    """Who asks, for what, from whom — and for a permit the service relationship and the age it requires."""
    org_type, role = request.requester_org_type, request.requester_role
    if org_type not in rule.requester_org_types or org_type in rule.except_org_types:
        return False
    if rule.requester_roles is not None and role not in rule.requester_roles:
        return False
    if request.category not in rule.categories or request.purpose not in rule.purposes:
        return False
    if request.source_org_type is not None and request.source_org_type not in rule.source_org_types:
        return False
    if rule.effect == "forbid":
        return True
    if role not in POLICY.roles_for(org_type):
        return False
    if rule.relationship_required and request.requester_org not in facts.relationships:
        return False
    limit = rule.person_age_under
    return limit is None or (facts.person_age is not None and facts.person_age < limit)


def mandate_covers(consent: ConsentFact, facts: Facts) -> bool:
    """flows.md: a custodian consents for a minor; for an adult a guardian or attorney for personal matters;
    a relative never."""
    if consent.given_by == "person":
        return True
    if consent.given_by != "representative":
        return False
    if facts.person_is_minor:
        return consent.mandate == "custodian"
    return consent.mandate in ("guardian_personal", "continuing_poa_personal")


def consent_counts(consent: ConsentFact, rule: Rule, request: DecisionRequest, facts: Facts) -> bool:
    explicit_needed = rule.explicit or POLICY.is_special(request.category)
    return (
        consent.status == "active"
        and consent.withdrawn_at is None
        and consent.valid_from <= NOW
        and (consent.valid_until is None or consent.valid_until > NOW)
        and request.requester_org in consent.recipients
        and request.category in consent.categories
        and request.purpose in consent.purposes
        and (consent.bound_to_org is None or consent.bound_to_org in facts.relationships)
        and (consent.explicit or not explicit_needed)
        and (consent.written or not rule.written)
        and mandate_covers(consent, facts)
    )


def latest(consents: list[ConsentFact]) -> ConsentFact:
    return sorted(consents, key=lambda c: (-c.valid_from.timestamp(), c.consent_id))[0]


def consent_basis(rule: Rule, request: DecisionRequest, facts: Facts) -> ConsentFact | None:
    """The consent a consent-based rule would rest on, or None."""
    if rule.basis not in ("consent", "consent_or_exception"):
        return None
    counting = [c for c in facts.consents if consent_counts(c, rule, request, facts)]
    if rule.minor_needs_custodian and facts.person_is_minor:
        own = [c for c in counting if c.given_by == "person"]
        custodians = [c for c in counting if c.given_by == "representative"]
        return latest(own) if own and custodians else None
    return latest(counting) if counting else None


def exception_holds(rule: Rule, request: DecisionRequest, facts: Facts) -> bool:
    claim = request.exception
    if rule.basis != "consent_or_exception" or claim is None or claim.ground not in rule.exceptions:
        return False
    ground = POLICY.exceptions[claim.ground]
    return bool(claim.justification.strip()) and not (
        ground.requires_no_legal_representative and facts.has_legal_representative
    )


def expected_winner(request: DecisionRequest, facts: Facts) -> tuple[Rule, str, ConsentFact | None] | None:
    """The permit that must win, scanning every rule (not the engine's index): none when a forbid matches;
    else a statute before an exception before a consent; among consents the latest; then the earlier rule."""
    if any(rule_matches(f, request, facts) for f in FORBIDS):
        return None
    found: list[tuple[tuple[int, float, str, int], Rule, str, ConsentFact | None]] = []
    for order, rule in enumerate(POLICY.rules):
        if rule.effect != "permit" or not rule_matches(rule, request, facts):
            continue
        if rule.basis == "statute":
            found.append(((RANK["statute"], 0.0, "", order), rule, "statute", None))
            continue
        if exception_holds(rule, request, facts):
            found.append(((RANK["exception"], 0.0, "", order), rule, "exception", None))
            continue
        consent = consent_basis(rule, request, facts)
        if consent is not None:
            key = (RANK["consent"], -consent.valid_from.timestamp(), consent.consent_id, order)
            found.append((key, rule, "consent", consent))
    if not found:
        return None
    _, rule, kind, consent = min(found, key=lambda item: item[0])
    return rule, kind, consent


# --- properties -----------------------------------------------------------------------------------------


@PROPERTY
@given(examples())
def test_deny_by_default_a_permit_needs_a_rule_that_lists_the_request(example: tuple[DecisionRequest, Facts]) -> None:
    request, facts = example
    decision = decide(request, facts, POLICY, NOW)
    assert "engine_error" not in codes(decision)
    assert decision.permitted == (expected_winner(request, facts) is not None)
    if not decision.permitted:
        assert decision.basis is None and decision.fields == () and decision.obligations == ()


@PROPERTY
@given(examples())
def test_every_permit_is_justified_by_exactly_the_rule_it_names(example: tuple[DecisionRequest, Facts]) -> None:
    request, facts = example
    decision = decide(request, facts, POLICY, NOW)
    winner = expected_winner(request, facts)
    if winner is None:
        assert not decision.permitted
        return
    rule, kind, consent = winner
    basis = decision.basis
    assert decision.permitted and basis is not None
    assert (basis.rule_id, basis.kind) == (rule.id, kind)
    assert basis.lawful_basis == rule.lawful_basis
    assert basis.consent_id == (consent.consent_id if consent else None)
    assert basis.consent_version == (consent.version if consent else None)
    if kind == "exception":
        assert request.exception is not None and basis.exception_ground == request.exception.ground
        assert basis.reference == POLICY.exceptions[request.exception.ground].reference
        assert decision.obligations == rule.obligations + tuple(o for o in REVIEW if o not in rule.obligations)
    else:
        assert basis.exception_ground is None and basis.reference == rule.secrecy_ground
        assert decision.obligations == rule.obligations
    assert decision.fields == rule.fields[request.category]


@PROPERTY
@given(examples())
def test_the_fields_disclosed_are_within_the_rules_allow_list(example: tuple[DecisionRequest, Facts]) -> None:
    request, facts = example
    decision = decide(request, facts, POLICY, NOW)
    if decision.basis is not None:
        allowed = POLICY.rule(decision.basis.rule_id).fields[request.category]
        assert set(decision.fields) <= set(allowed) <= set(POLICY.category_fields(request.category))
        assert len(decision.fields) == len(set(decision.fields))


@PROPERTY
@given(examples(), st.integers(0, 3))
def test_withdrawing_a_consent_never_turns_a_deny_into_a_permit(
    example: tuple[DecisionRequest, Facts], which: int
) -> None:
    request, facts = example
    if not facts.consents:
        return
    before = decide(request, facts, POLICY, NOW)
    target = facts.consents[which % len(facts.consents)]
    withdrawn = tuple(replace(c, status="withdrawn", withdrawn_at=NOW) if c is target else c for c in facts.consents)
    after = decide(request, replace(facts, consents=withdrawn), POLICY, NOW)
    assert before.permitted or not after.permitted
    # Withdrawal is immediate (invariant 3): nothing after it rests on the withdrawn consent.
    assert after.basis is None or after.basis.consent_id != target.consent_id
    assert after.extra.get("custodian_consent_id") != target.consent_id


@PROPERTY
@given(examples(), st.data())
def test_adding_a_consent_never_turns_a_permit_into_a_deny(
    example: tuple[DecisionRequest, Facts], data: st.DataObject
) -> None:
    request, facts = example
    before = decide(request, facts, POLICY, NOW)
    extra = replace(consent_from(data.draw(CONSENT_SHAPE), request), consent_id="c-added")
    after = decide(request, replace(facts, consents=(*facts.consents, extra)), POLICY, NOW)
    assert after.permitted or not before.permitted


@PROPERTY
@given(examples())
def test_special_categories_are_never_permitted_on_a_consent_that_is_not_explicit(
    example: tuple[DecisionRequest, Facts],
) -> None:
    request, facts = example
    decision = decide(request, facts, POLICY, NOW)
    if decision.basis is None or decision.basis.kind != "consent" or not POLICY.is_special(request.category):
        return
    used = {decision.basis.consent_id, decision.extra.get("custodian_consent_id")} - {None}
    assert used and all(c.explicit for c in facts.consents if c.consent_id in used)


@PROPERTY
@given(examples())
def test_an_exception_permits_only_where_the_flow_lists_it_with_a_justification(
    example: tuple[DecisionRequest, Facts],
) -> None:
    request, facts = example
    decision = decide(request, facts, POLICY, NOW)
    if decision.basis is None or decision.basis.kind != "exception":
        return
    rule = POLICY.rule(decision.basis.rule_id)
    assert request.exception is not None and request.exception.justification.strip()
    assert rule.basis == "consent_or_exception" and request.exception.ground in rule.exceptions
    assert set(REVIEW) <= set(decision.obligations)


@PROPERTY
@given(examples())
def test_a_forbidden_flow_stays_closed_whatever_the_facts(example: tuple[DecisionRequest, Facts]) -> None:
    request, facts = example
    if any(rule_matches(f, request, facts) for f in FORBIDS):
        decision = decide(request, facts, POLICY, NOW)
        assert not decision.permitted and "forbidden" in codes(decision)


@PROPERTY
@given(examples())
def test_an_age_condition_permits_only_a_person_known_to_be_young_enough(
    example: tuple[DecisionRequest, Facts],
) -> None:
    request, facts = example
    decision = decide(request, facts, POLICY, NOW)
    if decision.basis is not None and (limit := POLICY.rule(decision.basis.rule_id).person_age_under) is not None:
        assert facts.person_age is not None and facts.person_age < limit


@PROPERTY
@given(examples())
def test_no_partner_request_is_ever_answered_by_a_portal_entry(example: tuple[DecisionRequest, Facts]) -> None:
    request, facts = example
    decision = decide(request, facts, POLICY, NOW)
    portal = {entry.id for entry in POLICY.portal}
    assert not portal & {r.rule_id for r in decision.reasons}


@PROPERTY
@given(examples())
def test_without_relationships_consents_or_a_known_age_only_a_statute_or_an_exception_permits(
    example: tuple[DecisionRequest, Facts],
) -> None:
    request, _ = example
    decision = decide(request, Facts(), POLICY, NOW)
    if decision.basis is not None:
        rule = POLICY.rule(decision.basis.rule_id)
        assert decision.basis.kind in ("statute", "exception")
        assert not rule.relationship_required and rule.person_age_under is None


@PROPERTY
@given(st.text(max_size=12), st.text(max_size=12), st.text(max_size=12), st.text(max_size=12))
def test_unknown_words_are_always_denied(org_type: str, role: str, category: str, purpose: str) -> None:
    request = DecisionRequest("x", org_type, role, "person-1", category, purpose, None, org_type or None)
    decision = decide(request, Facts(relationships=frozenset({"x"}), person_age=20), POLICY, NOW)
    known = org_type in POLICY.org_types and role in ROLES and category in CATEGORIES and purpose in PURPOSES
    assert known or not decision.permitted


def codes(decision: Decision) -> list[str]:
    return [r.code for r in decision.reasons]
