"""The decision: may this requester have this category of the person's records for this purpose, on what
basis, and which fields?

Pure (DESIGN.md invariant 5): no I/O and no clock — `now` is given. Deny by default; a matching forbid beats
any permit; any error inside evaluation is a deny with reason `engine_error` (Cedar's documented semantics).
A consent is a basis only for a rule whose basis admits consent, so a consent can never open a flow the policy
does not list (flows.md: "Everything not in this table is denied").
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

from policies.loader import ExceptionGround, Policy, Rule
from policies.model import (
    Basis,
    BasisKind,
    ConsentFact,
    Decision,
    DecisionRequest,
    Facts,
    Reason,
    StatutoryException,
)

NO_RULE = "-"  # the rule id of reasons that concern no single rule
# flows.md: an asserted exception is logged as such and put on the DPO's review list; the person is told.
EXCEPTION_OBLIGATIONS = ("dpo_review", "notify_person")
# When several permits apply the sturdiest basis wins: a statute outlives a withdrawal, and an asserted
# exception must stay visible to review even when a consent would also have served.
_RANK: dict[BasisKind, int] = {"statute": 0, "exception": 1, "consent": 2}
# Representatives' mandates that cover consenting for an adult (a guardian or attorney for personal matters);
# a custodian consents only for a minor, a relative never (flows.md, "Consent, as the law shapes it").
_ADULT_MANDATES = frozenset({"guardian_personal", "continuing_poa_personal"})
# Reasons and bases are immutable values that repeat from one decision to the next (same rule, code and words).
# Built once and shared, each costs a dictionary lookup instead of a frozen dataclass's __init__, which was most
# of a decision's time (bench/policy.py). Only those that name no consent are shared, and each table is
# emptied when it reaches _SHARED_MAX, so that unusual requests cannot grow it without limit.
_SHARED_MAX = 4096
_REASONS: dict[tuple[str, bool, str, str], Reason] = {}
_BASES: dict[tuple[str, str, str, str, str | None], Basis] = {}


def decide(request: DecisionRequest, facts: Facts, policy: Policy, now: datetime) -> Decision:
    try:
        return _decide(request, facts, policy, now)
    except Exception as error:  # invariant 5: whatever goes wrong, nothing is disclosed
        try:
            version = str(policy.version)
        except Exception:
            version = ""
        reason = Reason(NO_RULE, False, "engine_error", f"{type(error).__name__} during evaluation")
        return Decision("deny", None, (), (), (reason,), version)


# --- consents, indexed once per Facts -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConsentIndex:
    by_recipient_category: Mapping[tuple[str, str], tuple[ConsentFact, ...]]
    recipients: frozenset[str]


_INDEXES: dict[int, tuple[weakref.ref[Facts], ConsentIndex]] = {}


def index_facts(facts: Facts) -> ConsentIndex:
    """The person's consents by (recipient, category), so that a decision looks at the few consents that
    can matter, not at all of them. Cached per Facts object by identity: hashing a Facts would walk every
    consent."""
    key = id(facts)
    cached = _INDEXES.get(key)
    if cached is not None and cached[0]() is facts:
        return cached[1]
    found: dict[tuple[str, str], list[ConsentFact]] = {}
    for consent in facts.consents:
        for recipient in consent.recipients:
            for category in consent.categories:
                found.setdefault((recipient, category), []).append(consent)
    index = ConsentIndex(
        {k: tuple(v) for k, v in found.items()}, frozenset(r for c in facts.consents for r in c.recipients)
    )

    def forget(_: object) -> None:
        _INDEXES.pop(key, None)

    _INDEXES[key] = (weakref.ref(facts, forget), index)
    return index


# --- evaluation -----------------------------------------------------------------------------------------


class _Permit(NamedTuple):
    order: tuple[int, float, str, int]  # basis rank, consent recency, consent id, rule order: smallest wins
    rule: Rule
    basis: Basis
    extra: dict[str, object]


class _Failure(NamedTuple):
    stage: int  # how far the best consent got: the deepest failure explains the most
    code: str
    detail: str


def _decide(request: DecisionRequest, facts: Facts, policy: Policy, now: datetime) -> Decision:
    if now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")
    reasons: list[Reason] = []
    permits: list[_Permit] = []
    forbidden = False
    for rule in policy.candidates(request.category, request.purpose):
        reason, permit = _evaluate(rule, request, facts, policy, now)
        reasons.append(reason)
        if permit is not None:
            permits.append(permit)
        elif reason.code == "forbidden":
            forbidden = True
    if not permits and not forbidden:
        detail = f"no rule gives {request.category} for {request.purpose} to {request.requester_org_type}"
        reasons.append(_shared_reason(NO_RULE, False, "no_rule", detail))
    if forbidden or not permits:
        return Decision("deny", None, (), (), tuple(reasons), policy.version)

    best = min(permits, key=lambda p: p.order)
    obligations = best.rule.obligations
    if best.basis.kind == "exception":
        obligations += tuple(o for o in EXCEPTION_OBLIGATIONS if o not in obligations)
    return Decision(
        "permit",
        best.basis,
        best.rule.fields[request.category],
        obligations,
        tuple(reasons),
        policy.version,
        extra=best.extra,
    )


def _evaluate(
    rule: Rule, request: DecisionRequest, facts: Facts, policy: Policy, now: datetime
) -> tuple[Reason, _Permit | None]:
    mismatch = _mismatch(rule, request, facts, policy)
    if mismatch is not None:
        return _shared_reason(rule.id, False, *mismatch), None
    if rule.effect == "forbid":
        detail = f"never to {request.requester_org_type} ({rule.secrecy_ground})"
        return _shared_reason(rule.id, True, "forbidden", detail), None

    if rule.basis == "statute":
        return _permit(rule, "statute", rule.secrecy_ground)
    exception_failure: tuple[str, str] | None = None
    if rule.basis == "consent_or_exception" and request.exception is not None:
        ground = _exception(rule, request.exception, facts, policy)
        if isinstance(ground, ExceptionGround):
            return _permit(rule, "exception", f"exception {ground.id} ({ground.reference})", ground=ground)
        exception_failure = ground
    found = _consent(rule, request, facts, policy, now)
    if isinstance(found, _Failure):
        code, detail = exception_failure or (found.code, found.detail)
        return Reason(rule.id, False, code, detail), None
    consent, extra = found
    return _permit(rule, "consent", f"consent {consent.consent_id} v{consent.version}", consent, extra=extra)


def _permit(
    rule: Rule,
    kind: BasisKind,
    detail: str,
    consent: ConsentFact | None = None,
    ground: ExceptionGround | None = None,
    extra: dict[str, object] | None = None,
) -> tuple[Reason, _Permit]:
    # An asserted exception lifts secrecy by its own section; otherwise the rule's ground does.
    reference = ground.reference if ground else rule.secrecy_ground
    if consent is not None:
        basis = Basis(kind, rule.id, reference, rule.lawful_basis, consent.consent_id, consent.version)
        order = (_RANK[kind], -consent.valid_from.timestamp(), consent.consent_id, rule.order)
        return Reason(rule.id, True, "permit", detail), _Permit(order, rule, basis, extra or {})
    ground_id = ground.id if ground else None
    key = (kind, rule.id, reference, rule.lawful_basis, ground_id)
    shared = _BASES.get(key)
    if shared is None:
        if len(_BASES) >= _SHARED_MAX:
            _BASES.clear()
        shared = _BASES[key] = Basis(kind, rule.id, reference, rule.lawful_basis, exception_ground=ground_id)
    order = (_RANK[kind], 0.0, "", rule.order)
    return _shared_reason(rule.id, True, "permit", detail), _Permit(order, rule, shared, extra or {})


def _shared_reason(rule_id: str, applies: bool, code: str, detail: str) -> Reason:
    key = (rule_id, applies, code, detail)
    found = _REASONS.get(key)
    if found is None:
        if len(_REASONS) >= _SHARED_MAX:
            _REASONS.clear()
        found = _REASONS[key] = Reason(rule_id, applies, code, detail)
    return found


def _mismatch(rule: Rule, request: DecisionRequest, facts: Facts, policy: Policy) -> tuple[str, str] | None:
    org_type, role = request.requester_org_type, request.requester_role
    if org_type not in rule.requester_org_types or org_type in rule.except_org_types:
        return "wrong_org_type", f"not for {org_type}"
    # A permit also needs the role to be one the org type has; a forbid must not be escaped by an odd role.
    if (rule.requester_roles is not None and role not in rule.requester_roles) or (
        rule.effect == "permit" and role not in policy.roles_for(org_type)
    ):
        return "wrong_role", f"not for the role {role}"
    if request.source_org_type is not None and request.source_org_type not in rule.source_org_types:
        return "wrong_source", f"not for records from {request.source_org_type}"
    if rule.relationship_required and request.requester_org not in facts.relationships:
        return (
            "no_relationship",
            f"{request.requester_org} has no active service relationship with the person",
        )
    if rule.person_age_under is not None:
        # Only permits carry an age condition (the schema refuses it on a forbid), so an unknown age denies.
        if facts.person_age is None:
            return "person_age_unknown", f"only for a person under {rule.person_age_under}; the age is not known"
        if facts.person_age >= rule.person_age_under:
            return "person_too_old", f"only for a person under {rule.person_age_under}"
    return None


def _exception(
    rule: Rule, claim: StatutoryException, facts: Facts, policy: Policy
) -> ExceptionGround | tuple[str, str]:
    if claim.ground not in rule.exceptions:
        return "exception_not_listed", f"the exception {claim.ground} does not apply to this flow"
    ground = policy.exceptions[claim.ground]
    if not claim.justification.strip():
        return "exception_without_justification", "an asserted exception must be justified"
    if ground.requires_no_legal_representative and facts.has_legal_representative:
        return "exception_not_applicable", "the person has a legal representative who can consent"
    return ground


def _consent(
    rule: Rule, request: DecisionRequest, facts: Facts, policy: Policy, now: datetime
) -> tuple[ConsentFact, dict[str, object]] | _Failure:
    index = index_facts(facts)
    found = index.by_recipient_category.get((request.requester_org, request.category), ())
    if not found:
        if request.requester_org in index.recipients:
            return _Failure(0, "consent_missing_category", f"no consent covers {request.category}")
        if facts.consents:
            return _Failure(0, "consent_missing_recipient", f"no consent names {request.requester_org}")
        return _Failure(0, "no_consent", "the person has given no consent")

    # Special categories need explicit consent (GDPR 9(2)(a); 703/2023 53 §), some flows written consent too.
    explicit = rule.explicit or policy.is_special(request.category)
    valid: list[ConsentFact] = []
    failure = _Failure(-1, "no_consent", "")
    for consent in found:
        problem = _consent_problem(consent, request, facts, now, explicit, rule.written)
        if problem is None:
            valid.append(consent)
        elif problem.stage > failure.stage:
            failure = problem
    if not valid:
        return failure
    if rule.minor_needs_custodian and facts.person_is_minor:
        own = [c for c in valid if c.given_by == "person"]
        custodians = [c for c in valid if c.given_by == "representative"]  # for a minor only custodians are valid
        if not own:
            return _Failure(8, "minor_consent_missing", "the young person's own consent is needed too")
        if not custodians:
            return _Failure(8, "custodian_consent_missing", "a minor's custodian must consent too")
        custodian = _latest(custodians)
        return _latest(own), {
            "custodian_consent_id": custodian.consent_id,
            "custodian_consent_version": custodian.version,
        }
    return _latest(valid), {}


def _consent_problem(
    consent: ConsentFact, request: DecisionRequest, facts: Facts, now: datetime, explicit: bool, written: bool
) -> _Failure | None:
    cid = consent.consent_id
    if request.purpose not in consent.purposes:
        return _Failure(1, "consent_missing_purpose", f"consent {cid} does not cover {request.purpose}")
    if consent.status == "withdrawn" or consent.withdrawn_at is not None:
        return _Failure(2, "consent_withdrawn", f"consent {cid} was withdrawn")
    if consent.status == "expired" or (consent.valid_until is not None and now >= consent.valid_until):
        return _Failure(2, "consent_expired", f"consent {cid} has expired")
    if consent.status != "active":
        return _Failure(2, "consent_inactive", f"consent {cid} is {consent.status}")
    if now < consent.valid_from:
        return _Failure(2, "consent_not_yet_valid", f"consent {cid} is not valid yet")
    if consent.bound_to_org is not None and consent.bound_to_org not in facts.relationships:
        # A case-bound consent ends with the service relationship it was given for.
        return _Failure(3, "consent_relationship_ended", f"consent {cid} ended with {consent.bound_to_org}'s service")
    if explicit and not consent.explicit:
        return _Failure(4, "consent_not_explicit", f"{request.category} needs explicit consent")
    if written and not consent.written:
        return _Failure(5, "consent_not_written", "this flow needs written consent")
    if not _has_mandate(consent, facts):
        return _Failure(6, "representative_without_mandate", f"consent {cid} was given without a mandate")
    return None


def _has_mandate(consent: ConsentFact, facts: Facts) -> bool:
    if consent.given_by == "person":
        return True
    if consent.given_by != "representative":
        return False
    if consent.mandate == "custodian":
        return facts.person_is_minor
    return consent.mandate in _ADULT_MANDATES and not facts.person_is_minor


def _latest(consents: list[ConsentFact]) -> ConsentFact:
    """Deterministic choice: the latest valid_from, then the smallest consent id."""
    return min(consents, key=lambda c: (-c.valid_from.timestamp(), c.consent_id))
