"""Domain values shared by the services and the HTTP layer."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Caller:
    """An authenticated partner system and the professional acting through it (the assertion's `act` claim)."""

    partner_id: str
    organisation_id: str
    org_type: str
    actor_id: str
    actor_role: str
    scopes: frozenset[str]
    request_id: str | None = None


@dataclass(frozen=True)
class PortalUser:
    """Who is using the client portal, and whose data they see: the logged-in person themself, or the person a
    representative acts for under a registered mandate (docs/portal.md, "Representation")."""

    login_person_id: str | None  # the logged-in person (None for a DPO persona with no person record)
    subject_id: str | None  # whose data is shown: the person themself, or whom they act for
    representative_id: str | None = None  # set when acting for someone else (== login_person_id)
    mandate: str | None = None
    roles: frozenset[str] = frozenset()  # e.g. {"dpo"}
    language: str = "fi"


# OAuth scopes a partner may be granted. A partner asking for one it was not granted gets `invalid_scope`.
SCOPES: dict[str, str] = {
    "persons": "resolve persons and manage service relationships",
    "consents": "request, record, read and withdraw consents",
    "records": "deposit records",
    "disclosures": "request records for a purpose and ask for decisions",
    "notices": "send statutory notices and read the inbox",
    "webhooks": "register endpoints for events and read their delivery status",
    "audit:read": "read the audit log (data-protection officer systems only)",
}
PARTNER_SCOPES = tuple(s for s in SCOPES if s != "audit:read")
# A data-protection officer's system holds `audit:read` and nothing else, and acts for the DPO: its assertions
# name this role, which belongs to no organisation type of the policy (a DPO sees the log, not records).
DPO_SCOPES = ("audit:read",)
DPO_ROLE = "data_protection_officer"
