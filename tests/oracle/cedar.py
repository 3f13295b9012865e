"""The compiled policy and the facts in Cedar: an independent oracle for `policies.decide` (issue #3).

Written from the rule files' meaning (policies/README.md, "A rule" and "How a decision is made"; flows.md,
"Consent, as the law shapes it"), not from policies/engine.py, so that a disagreement points at one of the two.
Cedar decides the effect; a forbid beats every permit and anything that errors is not satisfied (Cedar's
documented semantics, the same as the broker's).

The encoding
------------

- One action, `Broker::Action::"disclose"`. The principal is the requesting organisation (`Org`), the resource
  the person (`Person`). What else the request says is in the context: the requester's org type and role, the
  category, the source org type (absent for a dry run, which then matches any source), the purpose, and the
  clock (`now`, integer microseconds since the epoch). So the entities depend on the facts alone: a caller
  parses them once per Facts and sends only a context per decision.
- Vocabulary as entities: an `OrgType` carries its roles (a permit needs a role the org type has, so that an
  odd role never gains anything; a forbid does not, so that an odd role never escapes one), a `Category` whether
  it is special (GDPR Art. 9: consent to it must be explicit).
- The person is an entity: the organisations that serve them now (`relationships`), minor or not, whether they
  have a legal representative, and their age in whole years when known (a rule with `person_age_under` applies
  only to a person known to be younger).
- Consents stay entities (`Consent`), never policies (PITFALLS.md: ≈ 9,000 policies cost 25 ms a decision).
  Cedar has no "there is a consent such that …", so the candidate is passed in the context: `context.consent`,
  and — for a rule that needs a minor's custodian to consent too — `context.custodian_consent`. `evaluate`
  asks once with no consent and once per consent (per ordered pair of slots for a minor) and ORs the answers.
  That is exactly "exists": no policy reads a consent except through the context slots, so every satisfied
  policy is satisfied under some assignment of the slots, and every assignment is tried.
- A forbid rule becomes `forbid`; a statute rule `permit` on scope alone; a `consent` rule `permit` on scope
  and a valid `context.consent`; a `consent_or_exception` rule both that and a second `permit` on a listed,
  justified exception in the context. Each policy carries `@id("<rule>|<kind>")` so that the answer names
  which rules permitted on which basis.
- The exception's justification is passed as a flag, `justified` (it has non-blank text): Cedar has no
  string trimming.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import cedarpy

from policies import ConsentFact, DecisionRequest, Facts, Policy, Rule

NAMESPACE = "Broker"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ONE_MICROSECOND = timedelta(microseconds=1)
# Representatives' mandates (flows.md, "Who may consent for someone else"; policies/model.py names them):
# a custodian consents for a minor; for an adult a guardian or an attorney whose mandate covers personal
# matters; a relative never.
MINOR_MANDATES = ("custodian",)
ADULT_MANDATES = ("continuing_poa_personal", "guardian_personal")
# The Rule attributes this translation gives a meaning to. A rule file that grows a new kind of condition must
# be translated too, or the oracle would silently ignore it.
KNOWN_RULE_ATTRIBUTES = frozenset(
    {
        "id",
        "effect",
        "requester_org_types",
        "requester_roles",
        "except_org_types",
        "source_org_types",
        "categories",
        "purposes",
        "basis",
        "exceptions",
        "relationship_required",
        "explicit",
        "written",
        "minor_needs_custodian",
        "person_age_under",
        # What a decision carries, not when a rule applies:
        "flow",
        "lawful_basis",
        "secrecy_ground",
        "fields",
        "obligations",
        "explanation",
        "file",
        "order",
    }
)
_NAME = re.compile(r"[A-Za-z0-9_.:-]+")

SCHEMA = """
namespace Broker {
  entity OrgType = { "roles": Set<String> };
  entity Org;
  entity Category = { "special": Bool };
  entity Person = {
    "relationships": Set<Org>,
    "minor": Bool,
    "has_legal_representative": Bool,
    "age"?: Long,
  };
  entity Consent = {
    "status": String,
    "recipients": Set<Org>,
    "categories": Set<Category>,
    "purposes": Set<String>,
    "valid_from": Long,
    "valid_until"?: Long,
    "withdrawn_at"?: Long,
    "explicit": Bool,
    "written": Bool,
    "bound_to"?: Org,
    "given_by": String,
    "mandate"?: String,
  };
  type Claim = { "ground": String, "justified": Bool };
  action "disclose" appliesTo {
    principal: Org,
    resource: Person,
    context: {
      "now": Long,
      "org_type": OrgType,
      "role": String,
      "category": Category,
      "source_type"?: OrgType,
      "purpose": String,
      "consent"?: Consent,
      "custodian_consent"?: Consent,
      "exception"?: Claim,
    }
  };
}
"""

Kind = Literal["statute", "exception", "consent"]


class TranslationError(Exception):
    """The policy holds something this translation does not understand."""


# --- the policy -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CedarPolicy:
    text: str  # the Cedar policies, for reading and for `cedarpy.validate_policies`
    policies: cedarpy.PolicySet
    schema: cedarpy.Schema
    vocabulary: cedarpy.Entities  # OrgType and Category entities, shared by every request
    rules: Mapping[str, Rule]


def translate_policy(policy: Policy) -> CedarPolicy:
    text = "\n\n".join(_policies(rule, policy) for rule in policy.rules) + "\n"
    vocabulary = [
        _entity("OrgType", org_type, {"roles": sorted(policy.roles_for(org_type))})
        for org_type in sorted(policy.org_types)
    ] + [_entity("Category", name, {"special": policy.is_special(name)}) for name in sorted(policy.categories)]
    schema = cedarpy.Schema.from_str(SCHEMA)
    return CedarPolicy(
        text=text,
        policies=cedarpy.PolicySet.from_str(text),
        schema=schema,
        vocabulary=cedarpy.Entities.from_json_str(json.dumps(vocabulary), schema),
        rules={rule.id: rule for rule in policy.rules},
    )


def _policies(rule: Rule, policy: Policy) -> str:
    unknown = {f.name for f in fields(rule)} - KNOWN_RULE_ATTRIBUTES
    if unknown:
        raise TranslationError(f"rule {rule.id}: no Cedar translation for {sorted(unknown)}")
    if rule.effect == "forbid":
        return _policy("forbid", rule.id, "forbid", _scope(rule, permit=False))
    scope = _scope(rule, permit=True)
    if rule.basis == "statute":
        return _policy("permit", rule.id, "statute", scope)
    if rule.basis not in ("consent", "consent_or_exception"):
        raise TranslationError(f"rule {rule.id}: unknown basis {rule.basis!r}")
    parts = [_policy("permit", rule.id, "consent", [*scope, *_consent_conditions(rule)])]
    if rule.basis == "consent_or_exception":
        parts.append(_policy("permit", rule.id, "exception", [*scope, _exception_condition(rule, policy)]))
    return "\n\n".join(parts)


def _policy(effect: str, rule_id: str, kind: str, conditions: Sequence[str]) -> str:
    body = "\n  && ".join(conditions) or "true"
    return (
        f'@id("{_name(rule_id)}|{kind}")\n'
        f'{effect} (principal, action == {NAMESPACE}::Action::"disclose", resource)\n'
        f"when {{\n  {body}\n}};"
    )


def _scope(rule: Rule, *, permit: bool) -> list[str]:
    """When a rule applies at all (README step 2): the requester's org type and role, the record's source,
    the category and purpose and, if the rule says so, a service relationship with the person."""
    conditions = [f"{_refs('OrgType', rule.requester_org_types)}.contains(context.org_type)"]
    if rule.except_org_types:
        conditions.append(f"!{_refs('OrgType', rule.except_org_types)}.contains(context.org_type)")
    if permit:
        conditions.append("context.org_type.roles.contains(context.role)")
    if rule.requester_roles is not None:
        conditions.append(f"{_strings(rule.requester_roles)}.contains(context.role)")
    conditions += [
        # A request without a source (a dry run) asks whether any source would do.
        f"(if context has source_type then {_refs('OrgType', rule.source_org_types)}.contains(context.source_type)"
        " else true)",
        f"{_refs('Category', rule.categories)}.contains(context.category)",
        f"{_strings(rule.purposes)}.contains(context.purpose)",
    ]
    if rule.relationship_required:
        conditions.append("resource.relationships.contains(principal)")
    if rule.person_age_under is not None:
        # An age condition (Youth Act 11 § 4 mom.: under 29) never holds for a person of unknown age.
        conditions.append(f"resource has age && resource.age < {int(rule.person_age_under)}")
    return conditions


def _consent_conditions(rule: Rule) -> list[str]:
    conditions = ["context has consent", _valid("context.consent", rule)]
    if rule.minor_needs_custodian:
        # Youth Act 12 §: for a minor the young person's own consent and the custodian's.
        conditions.append(
            "(if resource.minor then"
            ' context.consent.given_by == "person"'
            " && context has custodian_consent"
            f" && {_valid('context.custodian_consent', rule)}"
            ' && context.custodian_consent.given_by == "representative"'
            " && context.custodian_consent has mandate"
            f" && {_strings(MINOR_MANDATES)}.contains(context.custodian_consent.mandate)"
            " else true)"
        )
    return conditions


def _valid(c: str, rule: Rule) -> str:
    """README step 3: a consent counts when it is active, within its dates, not withdrawn, names the
    requester, category and purpose, is explicit for special categories (and where the rule says so), written
    where the rule says so, was given by the person or by a representative whose mandate covers it, and — if
    case-bound — its relationship still exists."""
    conditions = [
        f'{c}.status == "active"',
        f"!({c} has withdrawn_at)",
        f"{c}.valid_from <= context.now",
        f"(if {c} has valid_until then context.now < {c}.valid_until else true)",
        f"{c}.recipients.contains(principal)",
        f"{c}.categories.contains(context.category)",
        f"{c}.purposes.contains(context.purpose)",
        f"(if {c} has bound_to then resource.relationships.contains({c}.bound_to) else true)",
        f"{c}.explicit" if rule.explicit else f"({c}.explicit || !context.category.special)",
    ]
    if rule.written:
        conditions.append(f"{c}.written")
    conditions.append(
        f'({c}.given_by == "person" || ({c}.given_by == "representative" && {c} has mandate'
        f" && (if resource.minor then {_strings(MINOR_MANDATES)}.contains({c}.mandate)"
        f" else {_strings(ADULT_MANDATES)}.contains({c}.mandate))))"
    )
    return "(" + "\n    && ".join(conditions) + ")"


def _exception_condition(rule: Rule, policy: Policy) -> str:
    """An asserted exception permits when the rule lists it and it is justified; the exceptions that presume
    the person has nobody to consent for them do not hold when they have a legal representative."""
    grounds = []
    for ground_id in sorted(rule.exceptions):
        ground = policy.exceptions[ground_id]
        condition = f'context.exception.ground == "{_name(ground_id)}"'
        if ground.requires_no_legal_representative:
            condition += " && !resource.has_legal_representative"
        grounds.append(f"({condition})")
    listed = " || ".join(grounds) or "false"
    return f"context has exception && context.exception.justified && ({listed})"


def _name(value: str) -> str:
    if not _NAME.fullmatch(value):
        raise TranslationError(f"{value!r} cannot be written into Cedar policy text unescaped")
    return value


def _strings(values: Iterable[str]) -> str:
    return "[" + ", ".join(f'"{_name(v)}"' for v in sorted(values)) + "]"


def _refs(entity_type: str, ids: Iterable[str]) -> str:
    return "[" + ", ".join(f'{NAMESPACE}::{entity_type}::"{_name(v)}"' for v in sorted(ids)) + "]"


# --- the facts and the request --------------------------------------------------------------------------


def micros(moment: datetime) -> int:
    """Integer microseconds since the epoch: exact, unlike a float timestamp."""
    if moment.utcoffset() is None:
        raise TranslationError(f"naive datetime {moment!r}")
    return (moment - EPOCH) // ONE_MICROSECOND


def _uid(entity_type: str, entity_id: str) -> dict[str, str]:
    return {"type": f"{NAMESPACE}::{entity_type}", "id": entity_id}


def _ref(entity_type: str, entity_id: str) -> dict[str, dict[str, str]]:
    return {"__entity": _uid(entity_type, entity_id)}


def _entity(entity_type: str, entity_id: str, attrs: Mapping[str, Any]) -> dict[str, Any]:
    return {"uid": _uid(entity_type, entity_id), "attrs": dict(attrs), "parents": []}


def consent_id(position: int) -> str:
    """A consent entity's id is its position in `Facts.consents`, so that repeated consent ids stay apart."""
    return f"#{position}"


def facts_entities(person_id: str, facts: Facts) -> list[dict[str, Any]]:
    """The person and their consents: everything a decision reads that is not vocabulary or request."""
    person: dict[str, Any] = {
        "relationships": [_ref("Org", org) for org in sorted(facts.relationships)],
        "minor": facts.person_is_minor,
        "has_legal_representative": facts.has_legal_representative,
    }
    if facts.person_age is not None:
        person["age"] = facts.person_age
    return [
        _entity("Person", person_id, person),
        *(_consent(consent_id(i), c) for i, c in enumerate(facts.consents)),
    ]


def _consent(entity_id: str, consent: ConsentFact) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        "status": consent.status,
        "recipients": [_ref("Org", org) for org in sorted(consent.recipients)],
        "categories": [_ref("Category", name) for name in sorted(consent.categories)],
        "purposes": sorted(consent.purposes),
        "valid_from": micros(consent.valid_from),
        "explicit": consent.explicit,
        "written": consent.written,
        "given_by": consent.given_by,
    }
    if consent.valid_until is not None:
        attrs["valid_until"] = micros(consent.valid_until)
    if consent.withdrawn_at is not None:
        attrs["withdrawn_at"] = micros(consent.withdrawn_at)
    if consent.bound_to_org is not None:
        attrs["bound_to"] = _ref("Org", consent.bound_to_org)
    if consent.mandate is not None:
        attrs["mandate"] = consent.mandate
    return _entity("Consent", entity_id, attrs)


def context(
    request: DecisionRequest, now: datetime, consent: int | None = None, custodian_consent: int | None = None
) -> dict[str, Any]:
    """The context for one evaluation; `consent` and `custodian_consent` are positions in `Facts.consents`."""
    found: dict[str, Any] = {
        "now": micros(now),
        "org_type": _ref("OrgType", request.requester_org_type),
        "role": request.requester_role,
        "category": _ref("Category", request.category),
        "purpose": request.purpose,
    }
    if request.source_org_type is not None:
        found["source_type"] = _ref("OrgType", request.source_org_type)
    if consent is not None:
        found["consent"] = _ref("Consent", consent_id(consent))
    if custodian_consent is not None:
        found["custodian_consent"] = _ref("Consent", consent_id(custodian_consent))
    if request.exception is not None:
        found["exception"] = {
            "ground": request.exception.ground,
            "justified": bool(request.exception.justification.strip()),
        }
    return found


def cedar_request(request: DecisionRequest, ctx: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "principal": _uid("Org", request.requester_org),
        "action": _uid("Action", "disclose"),
        "resource": _uid("Person", request.person_id),
        "context": ctx,
    }


# --- asking -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CedarPermit:
    rule_id: str
    kind: Kind
    consent: int | None  # position in Facts.consents
    custodian_consent: int | None


@dataclass(frozen=True)
class CedarAnswer:
    effect: Literal["permit", "deny"]
    permits: frozenset[CedarPermit]  # every (rule, basis, consent) that permitted, when no forbid applied
    forbids: frozenset[str]  # the forbid rules that applied
    errors: tuple[str, ...]  # Cedar's evaluation errors; a well-formed request has none
    evaluations: int


def slots(facts: Facts) -> list[tuple[int | None, int | None]]:
    """Every assignment of the context's consent slots: none, or each consent; for a minor also each consent
    as the custodian's (only the rules that need a custodian read that slot)."""
    candidates: list[int | None] = [None, *range(len(facts.consents))]
    if not facts.person_is_minor:
        return [(c, None) for c in candidates]
    return [(c, d) for c in candidates for d in candidates]


def evaluate(cedar: CedarPolicy, request: DecisionRequest, facts: Facts, now: datetime) -> CedarAnswer:
    """Cedar's answer: permit when some assignment of the consent slots is allowed."""
    entities = cedar.vocabulary.with_added_json_str(json.dumps(facts_entities(request.person_id, facts)), cedar.schema)
    assignments = slots(facts)
    results = cedarpy.is_authorized_batch(
        [cedar_request(request, context(request, now, c, d)) for c, d in assignments],
        cedar.policies,
        entities,
        cedar.schema,
    )
    permits: set[CedarPermit] = set()
    forbids: set[str] = set()
    errors: list[str] = []
    allowed = False
    for (c, d), result in zip(assignments, results, strict=True):
        errors += [str(e) for e in result.diagnostics.errors]
        allowed |= result.allowed
        names = result.diagnostics.id_annotations_by_reason
        for policy_id in result.diagnostics.reasons:
            rule_id, _, kind = names[policy_id].partition("|")
            if kind == "forbid":
                forbids.add(rule_id)
            else:
                uses_consent = kind == "consent"
                custodian = d if uses_consent and cedar.rules[rule_id].minor_needs_custodian else None
                permits.add(CedarPermit(rule_id, kind, c if uses_consent else None, custodian))  # type: ignore[arg-type]
    return CedarAnswer(
        "permit" if allowed else "deny", frozenset(permits), frozenset(forbids), tuple(errors), len(assignments)
    )
