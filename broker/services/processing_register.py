"""The record of processing activities (GDPR Art. 30(1)), generated from what the broker runs on: the policy
files (`broker.policy`: flows, purposes, categories, recipients, legal bases), the retention schedule
(`policies/retention.yaml`, through broker.services.retention) and the registered organisations (the
controllers). Nothing is typed in twice, so the record cannot drift from the rules that decide.

Art. 30(1) asks for (a) the controllers and the DPO, (b) the purposes, (c) the categories of data subjects and of
personal data, (d) the categories of recipients, (e) transfers to third countries, (f) the time limits for
erasure, (g) the technical and organisational measures of Art. 32(1). The legal bases per flow are not in the
list, but the DPO needs them beside it (Art. 5(2), accountability), so each flow carries its lawful basis (Art. 6
and 9) and the statute that lifts secrecy.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from broker.adapters.orm import OrganisationRow
from broker.domain import labels
from broker.services import Broker
from policies import PolicyError
from policies.register import flow_key

#: Data subjects the broker keeps data about, beside the clients themselves (ids; the page words them).
SUBJECTS_ALWAYS = ("clients", "representatives", "professionals")
#: The technical and organisational measures (Art. 32(1)); docs/architecture.md describes each.
MEASURES = (
    "deny_by_default",
    "minimum_necessary",
    "encryption_at_rest",
    "identity_code_sealed",
    "tamper_evident_log",
    "staff_pseudonymised",
    "partner_authentication",
    "person_authentication",
    "dpo_review",
    "retention_erasure",
)
#: Retention of what is not a record category (flows.md, "Retention"; 703/2023 annex).
OTHER_RETENTION = ("logs", "consents")


def _ordered(values: frozenset[str] | set[str], order: dict[str, str]) -> list[str]:
    position = {key: i for i, key in enumerate(order)}
    return sorted(values, key=lambda v: (position.get(v, len(position)), v))


def _retention(broker: Broker) -> dict[str, Any] | None:
    """The retention schedule per category, or None when the schedule is not available (then the page shows the
    periods of flows.md in words)."""
    try:
        from broker.services.retention import load_retention_schedule
    except ImportError:
        return None
    try:
        schedule = load_retention_schedule(broker.policy)
    except PolicyError:
        return None
    categories = []
    for category in _ordered(set(broker.policy.categories), labels.CATEGORIES):
        entry = schedule.categories.get(category)
        rule = entry.rule if entry is not None else None
        categories.append(
            {
                "category": category,
                "years": rule.years if rule is not None else None,
                "after": rule.after if rule is not None else None,
                "reference": rule.reference if rule is not None else None,
                "by_source": [
                    {
                        "org_type": org_type,
                        "years": other.years if other is not None else None,
                        "reference": other.reference if other is not None else None,
                    }
                    for org_type, other in sorted((entry.by_source if entry is not None else {}).items())
                ],
                "note": entry.note if entry is not None else "",
            }
        )
    return {"categories": categories}


def processing_register(broker: Broker) -> dict[str, Any]:
    policy = broker.policy
    with broker.uow(write=False) as uow:
        controllers = [
            {"id": row.id, "name": row.name, "org_type": row.org_type}
            for row in uow.session.execute(
                select(OrganisationRow.id, OrganisationRow.name, OrganisationRow.org_type).order_by(
                    OrganisationRow.name
                )
            )
        ]
    permits = [r for r in policy.rules if r.effect == "permit"]
    flows = []
    for rule in sorted(policy.rules, key=lambda r: (flow_key(r.flow), flow_key(r.id))):
        flows.append(
            {
                "flow": rule.flow,
                "rule": rule.id,
                "effect": rule.effect,
                "recipients": _ordered(set(rule.requester_org_types), labels.ORG_TYPES),
                "except_recipients": _ordered(set(rule.except_org_types), labels.ORG_TYPES),
                "sources": _ordered(set(rule.source_org_types), labels.ORG_TYPES),
                "categories": _ordered(set(rule.categories), labels.CATEGORIES),
                "purposes": _ordered(set(rule.purposes), labels.PURPOSES),
                "basis": rule.basis,
                "exceptions": [
                    {"ground": ground, "reference": policy.exceptions[ground].reference}
                    for ground in sorted(rule.exceptions)
                ],
                "lawful_basis": rule.lawful_basis,
                "secrecy_ground": rule.secrecy_ground,
                "obligations": list(rule.obligations),
                "relationship_required": rule.relationship_required,
                "explicit": rule.explicit,
                "written": rule.written,
                "every_org_type": rule.requester_org_types == policy.org_types,
                "every_source": rule.source_org_types == policy.org_types,
                "every_category": rule.categories == policy.categories,
                "every_purpose": rule.purposes == policy.purposes,
            }
        )
    portal = [
        {
            "flow": entry.flow,
            "rule": entry.id,
            "lawful_basis": entry.lawful_basis,
            "secrecy_ground": entry.secrecy_ground,
            "shows": entry.shows,
        }
        for entry in policy.portal
    ]
    purposes = []
    for purpose in _ordered(set(policy.purposes), labels.PURPOSES):
        used = sorted({r.flow for r in permits if purpose in r.purposes}, key=flow_key)
        purposes.append({"id": purpose, "flows": used})
    minors = any(r.person_age_under is not None or r.minor_needs_custodian for r in permits)
    recipients = []
    for org_type in _ordered(set().union(*(r.requester_org_types for r in permits)), labels.ORG_TYPES):
        used = sorted({r.flow for r in permits if org_type in r.requester_org_types}, key=flow_key)
        recipients.append({"org_type": org_type, "flows": used})
    categories = [
        {
            "id": category,
            "special": policy.is_special(category),
            "fields": list(policy.category_fields(category)),
        }
        for category in _ordered(set(policy.categories), labels.CATEGORIES)
    ]
    return {
        "policy_version": policy.version,
        "controllers": controllers,
        "purposes": purposes,
        "subjects": [*SUBJECTS_ALWAYS[:1], *(["minors"] if minors else []), *SUBJECTS_ALWAYS[1:]],
        "categories": categories,
        "recipients": recipients,
        "flows": flows,
        "portal": portal,
        "retention": _retention(broker),
        "other_retention": list(OTHER_RETENTION),
        "measures": list(MEASURES),
        "third_countries": False,
    }
