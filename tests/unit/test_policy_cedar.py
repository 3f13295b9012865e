"""`decide` against an independent oracle (issue #3): the compiled policy and the facts translated to Cedar
(tests/oracle/cedar.py) must give the same decision on every generated request.

The CI run checks BROKER_SOAK_REQUESTS requests (10,000 unless set) from a fixed seed; `make soak` checks
200,000 from a fresh one. Request number i is generated from (seed, i) alone, so a disagreement is reproduced
from the two numbers it prints. Compared: the effect — and, for a permit, the basis (kind, rule, consent,
exception ground), the fields, the obligations and a minor's custodian consent; the rules that applied.
"""

from __future__ import annotations

import os
import random
import shutil
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import cedarpy
import pytest

from policies import ConsentFact, Decision, DecisionRequest, Facts, Policy, StatutoryException, decide, load_policy
from policies.cases import Case, load_cases
from policies.loader import RULES_DIR
from tests.oracle.cedar import CedarAnswer, CedarPolicy, TranslationError, evaluate, micros, translate_policy

POLICY = load_policy()
CEDAR = translate_policy(POLICY)
REQUESTS = int(os.environ.get("BROKER_SOAK_REQUESTS", "10000"))
SEED = int(os.environ.get("BROKER_SOAK_SEED", "20251127"))
SHOWN = 5  # disagreements printed in full

BASE_NOW = datetime(2025, 6, 1, 9, 0, tzinfo=UTC)
ZONES = (UTC, timezone(timedelta(hours=2)), timezone(timedelta(hours=3)), timezone(timedelta(hours=-5)))
# Moments around `now`, so that the ≤ / < at both ends of a consent's validity are exercised to the microsecond.
STARTS = (
    -timedelta(days=400),
    -timedelta(days=30),
    -timedelta(seconds=1),
    -timedelta(microseconds=1),
    timedelta(0),
    timedelta(microseconds=1),
    timedelta(days=1),
)
ENDS = (-timedelta(days=1), -timedelta(microseconds=1), timedelta(0), timedelta(microseconds=1), timedelta(days=30))
STATUSES = (("active", 14), ("withdrawn", 3), ("expired", 2), ("superseded", 1))
GIVEN_BY = (("person", 14), ("representative", 6), ("neighbour", 1))
MANDATES = (None, "custodian", "guardian_personal", "continuing_poa_personal", "guardian_financial", "relative")
AGES = (15, 17, 18, 19, 25, 28, 29, 30, 45, 67)  # around 18 and 29, where the flows change
JUSTIFICATIONS = ("", "   ", "collapsed at work, needs care today")


def orgs_of(policy: Policy) -> dict[str, str]:
    """Two organisations of every org type: one can be named in a consent while the other is not."""
    return {f"{org_type}-{n}": org_type for org_type in sorted(policy.org_types) for n in (1, 2)}


ORGS = orgs_of(POLICY)
ALL_ROLES = sorted({role for org_type in POLICY.org_types for role in POLICY.roles_for(org_type)})


# --- generating requests --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Example:
    number: int
    request: DecisionRequest
    facts: Facts
    now: datetime


def pick(rng: random.Random, weighted: tuple[tuple[Any, int], ...]) -> Any:
    return rng.choices([v for v, _ in weighted], [w for _, w in weighted])[0]


def some(rng: random.Random, values: list[str], most: int) -> set[str]:
    return set(rng.sample(values, rng.randint(0, most)))


def generate(seed: int, number: int, policy: Policy = POLICY) -> Example:
    rng = random.Random(f"{seed}:{number}")
    request = _request(rng, policy)
    now = (BASE_NOW + timedelta(days=rng.choice((0, 0, 180)))).astimezone(rng.choice(ZONES))
    return Example(number, request, _facts(rng, policy, request, now), now)


def _request(rng: random.Random, policy: Policy) -> DecisionRequest:
    org_types, categories, purposes = sorted(policy.org_types), sorted(policy.categories), sorted(policy.purposes)
    rule = None
    if rng.random() < 0.6:
        # Near a rule, so that the conditions deep inside it are reached, not just the scope.
        # Consent rules twice as often: most of the conditions are theirs.
        rule = rng.choices(policy.rules, [1 if r.basis in (None, "statute") else 2 for r in policy.rules])[0]
        org_type = rng.choice(sorted(rule.requester_org_types - rule.except_org_types) or org_types)
        roles = sorted(policy.roles_for(org_type))
        if rule.requester_roles is not None and rng.random() < 0.8:
            roles = sorted(rule.requester_roles & set(roles)) or roles
        role = rng.choice(roles if rng.random() < 0.9 else ALL_ROLES)
        category, purpose = rng.choice(sorted(rule.categories)), rng.choice(sorted(rule.purposes))
        draw = rng.random()
        source_type = (
            rng.choice(sorted(rule.source_org_types)) if draw < 0.75 else None if draw < 0.85 else rng.choice(org_types)
        )
    else:
        org_type = rng.choice(org_types)
        roles = sorted(policy.roles_for(org_type))
        role = rng.choice(roles if roles and rng.random() < 0.8 else ALL_ROLES)
        category, purpose = rng.choice(categories), rng.choice(purposes)
        source_type = rng.choice([None, *org_types])
    claim = None
    if rng.random() < 0.3:
        grounds = [*sorted(policy.exceptions), "not_a_ground"]
        if rule is not None and rule.exceptions and rng.random() < 0.6:
            grounds = sorted(rule.exceptions)
        claim = StatutoryException(rng.choice(grounds), pick(rng, tuple(zip(JUSTIFICATIONS, (1, 1, 4), strict=True))))
    return DecisionRequest(
        requester_org=f"{org_type}-{rng.randint(1, 2)}",
        requester_org_type=org_type,
        requester_role=role,
        person_id="person-1",
        category=category,
        purpose=purpose,
        source_org=None if source_type is None else f"{source_type}-{rng.randint(1, 2)}",
        source_org_type=source_type,
        exception=claim,
    )


def _facts(rng: random.Random, policy: Policy, request: DecisionRequest, now: datetime) -> Facts:
    orgs = sorted(ORGS)
    relationships = {o for o in orgs if rng.random() < 0.1}
    if rng.random() < 0.6:
        relationships.add(request.requester_org)
    count = rng.choices(range(6), [2, 4, 3, 2, 1, 1])[0]
    ids = rng.sample(range(10), count)  # consent ids not in the consents' order, for the tie-break by id
    consents = tuple(_consent(rng, policy, request, now, f"c-{i}", sorted(relationships)) for i in ids)
    # Mostly a consistent person (a minor is under 18); sometimes the age is unknown, or the two disagree.
    age = None if rng.random() < 0.2 else rng.choice(AGES)
    minor = rng.random() < 0.3 if age is None or rng.random() < 0.05 else age < 18
    return Facts(
        relationships=frozenset(relationships),
        consents=consents,
        person_is_minor=minor,
        has_legal_representative=rng.random() < 0.3,
        person_age=age,
    )


def _consent(
    rng: random.Random, policy: Policy, request: DecisionRequest, now: datetime, consent_id: str, related: list[str]
) -> ConsentFact:
    """Mostly a consent that would count for the request with a few flaws, each breaking one condition
    (so that every condition is met alone, at its edges); sometimes one drawn at random."""
    zone = rng.choice(ZONES)
    if rng.random() < 0.15:
        return _random_consent(rng, policy, request, now, consent_id, related)
    consent = ConsentFact(
        consent_id=consent_id,
        version=rng.randint(1, 3),
        status="active",
        recipients=frozenset({request.requester_org} | some(rng, sorted(ORGS), 1)),
        categories=frozenset({request.category} | some(rng, sorted(policy.categories), 1)),
        purposes=frozenset({request.purpose} | some(rng, sorted(policy.purposes), 1)),
        # Few distinct starts, so that consents tie on recency and the tie-break is exercised.
        valid_from=(now + rng.choice(STARTS[:3])).astimezone(zone),
        valid_until=None if rng.random() < 0.6 else (now + timedelta(days=30)).astimezone(zone),
        explicit=True,
        written=True,
    )
    flaws = rng.choices(range(4), [3, 4, 2, 1])[0]
    for _ in range(flaws):
        consent = replace(consent, **rng.choice(FLAWS)(rng, consent, request, now, related))
    return consent


def _random_consent(
    rng: random.Random, policy: Policy, request: DecisionRequest, now: datetime, consent_id: str, related: list[str]
) -> ConsentFact:
    def with_the_asked(asked: str, values: list[str], chance: float) -> frozenset[str]:
        found = some(rng, values, 2)
        if rng.random() < chance:
            found.add(asked)
        return frozenset(found)

    status = pick(rng, STATUSES)
    valid_from = now + rng.choice(STARTS)
    withdrawn_at = None
    if (status == "withdrawn" and rng.random() < 0.8) or rng.random() < 0.03:
        withdrawn_at = valid_from + timedelta(days=rng.randint(0, 10))
    given_by = pick(rng, GIVEN_BY)
    bound_to = None
    if rng.random() < 0.3:
        bound_to = rng.choice([request.requester_org, *related, rng.choice(sorted(ORGS))])
    zone = rng.choice(ZONES)
    return ConsentFact(
        consent_id=consent_id,
        version=rng.randint(1, 3),
        status=status,
        recipients=with_the_asked(request.requester_org, sorted(ORGS), 0.65),
        categories=with_the_asked(request.category, sorted(policy.categories), 0.65),
        purposes=with_the_asked(request.purpose, sorted(policy.purposes), 0.7),
        valid_from=valid_from.astimezone(zone),
        valid_until=None if rng.random() < 0.5 else (now + rng.choice(ENDS)).astimezone(zone),
        explicit=rng.random() < 0.75,
        written=rng.random() < 0.5,
        bound_to_org=bound_to,
        given_by=given_by,
        mandate=rng.choice(MANDATES) if given_by == "representative" or rng.random() < 0.1 else None,
        withdrawn_at=withdrawn_at,
    )


Flaw = Callable[[random.Random, ConsentFact, DecisionRequest, datetime, list[str]], dict[str, Any]]


def _withdrawn(rng: random.Random, c: ConsentFact, *_: Any) -> dict[str, Any]:
    at = c.valid_from + timedelta(days=rng.randint(0, 3)) if rng.random() < 0.8 else None
    return {"status": "withdrawn", "withdrawn_at": at}


FLAWS: tuple[Flaw, ...] = (
    _withdrawn,
    lambda rng, c, *_: {"status": rng.choice(["expired", "superseded", "pending"])},
    lambda rng, c, *_: {"withdrawn_at": c.valid_from},  # still marked active: the timestamp alone counts
    lambda rng, c, r, now, _: {"valid_from": now + rng.choice(STARTS[2:])},
    lambda rng, c, r, now, _: {"valid_until": now + rng.choice(ENDS)},
    lambda rng, c, r, *_: {"recipients": c.recipients - {r.requester_org} | some(rng, sorted(ORGS), 2)},
    lambda rng, c, r, *_: {"categories": c.categories - {r.category}},
    lambda rng, c, r, *_: {"purposes": c.purposes - {r.purpose}},
    lambda rng, c, *_: {"explicit": False},
    lambda rng, c, *_: {"written": False},
    lambda rng, c, r, now, related: {"bound_to_org": rng.choice([r.requester_org, *related, *sorted(ORGS)])},
    lambda rng, c, *_: {"given_by": "representative", "mandate": rng.choice(MANDATES)},
    lambda rng, c, *_: {"given_by": "representative", "mandate": "custodian"},
    lambda rng, c, *_: {"given_by": rng.choice(["relative", "neighbour"])},
)


def examples(seed: int, count: int) -> Iterator[Example]:
    return (generate(seed, number) for number in range(count))


# --- comparing ------------------------------------------------------------------------------------------

_RANK = {"statute": 0, "exception": 1, "consent": 2}
EXCEPTION_OBLIGATIONS = ("dpo_review", "notify_person")  # vocabulary.yaml: added to a decision on an exception


def expected(answer: CedarAnswer, example: Example, policy: Policy = POLICY) -> dict[str, Any]:
    """The decision the README describes, from what Cedar permitted: deny unless something permits and
    nothing forbids; of several permits the statute wins, then an exception, then the latest consent (then the
    smaller consent id), then the earlier rule; the fields and obligations are the winner's."""
    request, facts = example.request, example.facts
    if answer.effect == "deny":
        return {"effect": "deny"}

    def latest(position: int | None) -> tuple[int, str]:
        if position is None:
            return (0, "")
        consent = facts.consents[position]
        return (-micros(consent.valid_from), consent.consent_id)

    best = min(answer.permits, key=lambda p: (_RANK[p.kind], *latest(p.consent), policy.rule(p.rule_id).order))
    rule = policy.rule(best.rule_id)
    obligations = rule.obligations
    if best.kind == "exception":
        obligations += tuple(o for o in EXCEPTION_OBLIGATIONS if o not in obligations)
    custodians = [
        p.custodian_consent
        for p in answer.permits
        if (p.rule_id, p.kind, p.consent) == (best.rule_id, best.kind, best.consent) and p.custodian_consent is not None
    ]
    custodian = min(custodians, key=latest) if custodians else None
    return {
        "effect": "permit",
        "basis": best.kind,
        "rule": best.rule_id,
        "consent_id": None if best.consent is None else facts.consents[best.consent].consent_id,
        "exception_ground": request.exception.ground if best.kind == "exception" and request.exception else None,
        "fields": rule.fields[request.category],
        "obligations": obligations,
        "custodian_consent_id": None if custodian is None else facts.consents[custodian].consent_id,
    }


def actual(decision: Decision) -> dict[str, Any]:
    basis = decision.basis
    if decision.effect == "deny":
        return {"effect": "deny"}
    assert basis is not None
    return {
        "effect": "permit",
        "basis": basis.kind,
        "rule": basis.rule_id,
        "consent_id": basis.consent_id,
        "exception_ground": basis.exception_ground,
        "fields": decision.fields,
        "obligations": decision.obligations,
        "custodian_consent_id": decision.extra.get("custodian_consent_id"),
    }


def differences(example: Example, cedar: CedarPolicy = CEDAR, policy: Policy = POLICY) -> list[str]:
    return compare(example, cedar, policy)[0]


def compare(example: Example, cedar: CedarPolicy = CEDAR, policy: Policy = POLICY) -> tuple[list[str], Decision]:
    """What differs between decide() and Cedar on one example, and decide()'s decision."""
    decision = decide(example.request, example.facts, policy, example.now)
    answer = evaluate(cedar, example.request, example.facts, example.now)
    found = []
    if answer.errors:
        found.append(f"Cedar reported errors: {answer.errors}")
    if "engine_error" in {r.code for r in decision.reasons}:
        found.append("decide() had an engine error")
    wanted, got = expected(answer, example, policy), actual(decision)
    found += [
        f"{key}: cedar {wanted.get(key)!r}, decide {got.get(key)!r}" for key in wanted if wanted[key] != got.get(key)
    ]
    forbidden = {r.rule_id for r in decision.reasons if r.code == "forbidden"}
    if forbidden != answer.forbids:
        found.append(f"forbids applying: cedar {sorted(answer.forbids)}, decide {sorted(forbidden)}")
    elif not forbidden:
        permitting = {r.rule_id for r in decision.reasons if r.code == "permit"}
        if permitting != {p.rule_id for p in answer.permits}:
            found.append(
                f"rules permitting: cedar {sorted({p.rule_id for p in answer.permits})}, decide {sorted(permitting)}"
            )
    return found, decision


def report(example: Example, found: list[str], seed: int) -> str:
    decision = decide(example.request, example.facts, POLICY, example.now)
    answer = evaluate(CEDAR, example.request, example.facts, example.now)
    consents = "\n".join(f"      {i}: {c!r}" for i, c in enumerate(example.facts.consents)) or "      (none)"
    return (
        f"--- request #{example.number} (BROKER_SOAK_SEED={seed}): {'; '.join(found)}\n"
        f"  now:      {example.now.isoformat()}\n"
        f"  request:  {example.request!r}\n"
        f"  facts:    relationships={sorted(example.facts.relationships)} minor={example.facts.person_is_minor} "
        f"legal_representative={example.facts.has_legal_representative} age={example.facts.person_age}\n"
        f"    consents:\n{consents}\n"
        f"  decide(): {decision.effect} {decision.basis.as_dict() if decision.basis else None}\n"
        f"            reasons {[(r.rule_id, r.code) for r in decision.reasons]}\n"
        f"  cedar:    {answer.effect}; permits {sorted((p.rule_id, p.kind, p.consent) for p in answer.permits)} "
        f"(consents by position); forbids {sorted(answer.forbids)}"
    )


# --- the tests ------------------------------------------------------------------------------------------


def test_the_translated_policy_validates_against_its_schema() -> None:
    result = cedarpy.validate_policies(CEDAR.text, CEDAR.schema)
    assert result.validation_passed, [str(e) for e in result.errors]
    kinds = {"statute": 1, "consent": 1, "consent_or_exception": 2, None: 1}
    assert len(CEDAR.policies) == sum(kinds[rule.basis] for rule in POLICY.rules)


def test_a_rule_with_a_condition_the_translation_does_not_know_is_refused() -> None:
    from tests.oracle import cedar

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cedar, "KNOWN_RULE_ATTRIBUTES", cedar.KNOWN_RULE_ATTRIBUTES - {"written"})
        with pytest.raises(TranslationError, match="written"):
            translate_policy(POLICY)


@pytest.mark.parametrize("case", load_cases(), ids=lambda c: c.name)
def test_the_oracle_agrees_with_the_decision_tables(case: Case) -> None:
    # The hand-written tables are the oracle's own check: its effect must be the one the DPO's case expects.
    answer = evaluate(CEDAR, case.request, case.facts, case.now)
    assert not answer.errors
    assert answer.effect == case.expect["effect"], f"{case.file} ({case.flow}, {case.statute})"


def test_decide_and_cedar_agree_on_generated_requests() -> None:
    disagreements: list[str] = []
    seen: Counter[str] = Counter()
    for example in examples(SEED, REQUESTS):
        request = example.request
        seen.update(
            (
                f"requester {request.requester_org_type}/{request.requester_role}",
                f"source {request.source_org_type}",
                f"category {request.category}",
                f"purpose {request.purpose}",
            )
        )
        found, decision = compare(example)
        if found:
            disagreements.append(report(example, found, SEED) if len(disagreements) < SHOWN else "")
            continue
        seen[f"effect {decision.effect}"] += 1
        if decision.basis is not None:
            seen[f"basis {decision.basis.kind}"] += 1
            seen[f"rule {decision.basis.rule_id}"] += 1
        if any(r.code == "forbidden" for r in decision.reasons):
            seen["forbidden"] += 1

    assert not disagreements, (
        f"{len(disagreements)} of {REQUESTS} requests disagree; the first {min(SHOWN, len(disagreements))}:\n"
        + "\n".join(d for d in disagreements if d)
    )
    # The generator reached everything it should: every org type with each of its roles, every source (and
    # the dry run), category and purpose, every basis, every permit rule winning, a forbid applying.
    wanted = {f"requester {t}/{r}" for t in POLICY.org_types for r in POLICY.roles_for(t)}
    wanted |= {f"source {t}" for t in [*POLICY.org_types, None]}
    wanted |= {f"category {c}" for c in POLICY.categories} | {f"purpose {p}" for p in POLICY.purposes}
    wanted |= {"effect permit", "effect deny", "basis statute", "basis exception", "basis consent", "forbidden"}
    wanted |= {f"rule {r.id}" for r in POLICY.rules if r.effect == "permit"}
    if REQUESTS >= 10_000:
        assert wanted <= set(seen), sorted(wanted - set(seen))


def test_decide_and_cedar_agree_when_no_rule_asks_for_explicit_consent(tmp_path: Path) -> None:
    # Every shipped consent rule asks for explicit consent, which hides the rule that special categories need
    # it anyway (README step 3). Without the flag, only the category decides.
    folder = tmp_path / "rules"
    shutil.copytree(RULES_DIR, folder)
    for path in folder.glob("*.yaml"):
        path.write_text(path.read_text(encoding="utf-8").replace("explicit: true", "explicit: false"), "utf-8")
    policy = load_policy(folder)
    assert not any(rule.explicit for rule in policy.rules)
    cedar = translate_policy(policy)
    count = max(REQUESTS // 5, 1)
    found = [(n, d) for n in range(count) if (d := differences(generate(SEED, n, policy), cedar, policy))]
    assert not found, found[:SHOWN]
