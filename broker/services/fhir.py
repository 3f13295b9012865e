"""FHIR R4 (4.0.1) views of the broker's consents and disclosures: for partner systems that speak FHIR, and for the
data-protection officer's export (`broker export fhir DIR`).

- A consent is a Consent resource (R4 consent.html): scope `patient-privacy`, the person as `patient`, one permit
  `provision` naming the recipients, categories, purposes and validity, the exact text shown as `sourceAttachment`.
- A decided request for records, permitted or refused, and a notice sent to an organisation are each an AuditEvent
  (R4 auditevent.html) shaped after IHE Basic Audit Log Patterns (BALP) 1.1, "Audit Event for Privacy Disclosure
  at Source" (profile IHE.BasicAudit.PrivacyDisclosure.Source): type DICOM 110106 "Export", subtype ISO 21089
  `disclose`, action R, the broker as source agent and observer, the recipient as destination agent, the patient
  and the disclosed data as entities. The profile is not claimed in `meta.profile`: it requires the recipient
  agent's network address, and the broker does not keep the addresses partners call from.
- Search results are a Bundle of type `searchset` (R4 bundle.html, search.html); an export is one Bundle of
  type `collection` per person. A read by id (R4 http.html#read) answers the resource a search's `fullUrl` names,
  with the search's visibility; `[base]/metadata` answers the server's CapabilityStatement.

The functions that make resources are pure (rows and values in, JSON-ready dicts out), so that tests can hold each
mapping to the specification without a database; the use cases at the end read the rows, and log the reads of the
disclosure log like every other read of it (`audit:query`).

Identifiers. A FHIR id is `[A-Za-z0-9\\-\\.]{1,64}` (R4 datatypes.html#id), and the broker's ids (`con_…`, `per_…`,
`dis_…`) hold an underscore: a resource's id is the broker's id with "-" for "_" (`con-…`), and the broker's own id
is kept beside it as an identifier. Codes the broker defines itself — its purposes, categories, roles — are in code
systems named under the issuer, `<issuer>/fhir/CodeSystem/<name>`; its extensions are
`<issuer>/fhir/StructureDefinition/<name>`.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import importlib.metadata
import json
import os
import re
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from sqlalchemy import or_, select

from broker.adapters.orm import (
    AuditEntryRow,
    AuditLeafRow,
    ConsentEventRow,
    ConsentRow,
    ConsentTextRow,
    DisclosureRow,
    OrganisationRow,
    PersonRow,
    RecordRow,
)
from broker.adapters.uow import UnitOfWork
from broker.domain.clock import utc
from broker.domain.errors import NotFoundError, UnknownPersonError
from broker.domain.model import Caller
from broker.services import Broker
from broker.services.audit_log import append_entry
from broker.services.consents import _involves
from policies import Policy

#: Whoever reads the log records it as the surface it read through (services/dpo.py names its own "dpo").
SURFACE = "fhir"

# --- code systems and codes --------------------------------------------------------------------------------------

LOINC = "http://loinc.org"
CONSENT_SCOPE = "http://terminology.hl7.org/CodeSystem/consentscope"
CONSENT_ACTION = "http://terminology.hl7.org/CodeSystem/consentaction"
PARTICIPATION_TYPE = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
DICOM = "http://dicom.nema.org/resources/ontology/DCM"
SNOMED = "http://snomed.info/sct"
LIFECYCLE = "http://terminology.hl7.org/CodeSystem/iso-21089-lifecycle"
ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
SOURCE_TYPE = "http://terminology.hl7.org/CodeSystem/security-source-type"
URI = "urn:ietf:rfc:3986"
#: The GDPR's articles as the W3C Data Privacy Vocabulary names them (w3id.org/dpv/legal/eu/gdpr): the same
#: concepts the ISO/IEC TS 27560 consent record uses (services/consent_record.py).
GDPR = "https://w3id.org/dpv/legal/eu/gdpr"


def coding(system: str, code: str, display: str | None = None) -> dict[str, str]:
    found = {"system": system, "code": code}
    if display is not None:
        found["display"] = display
    return found


# Consent.scope (R4 ValueSet consent-scope, required binding): a consent about sharing the person's information.
PRIVACY_SCOPE = coding(CONSENT_SCOPE, "patient-privacy", "Privacy Consent")
# Consent.category (R4 ValueSet consent-category, extensible), two classifications: LOINC 59284-0 "Patient Consent",
# the general class that consumers look for, and 64292-6 "Release of information consent", which says what these
# consents do — release the person's information to named recipients. Both LOINC codes are in the R4 value set;
# HL7's consentcategorycodes has no concept narrower and fitting.
CONSENT_CATEGORIES = (
    coding(LOINC, "59284-0", "Patient Consent"),
    coding(LOINC, "64292-6", "Release of information consent"),
)
# Consent.provision.action (R4 ValueSet consent-action): what the consent permits is disclosure to the recipients.
DISCLOSE_ACTION = coding(CONSENT_ACTION, "disclose", "Disclose")
# Consent.provision.actor.role (R4 ValueSet security-role-type): each recipient is an information recipient.
INFORMATION_RECIPIENT = coding(PARTICIPATION_TYPE, "IRCP", "information recipient")
AUTHOR = coding(PARTICIPATION_TYPE, "AUT", "author (originator)")

# AuditEvent, after BALP's IHE.BasicAudit.PrivacyDisclosure.Source.
EXPORT = coding(DICOM, "110106", "Export")
DISCLOSE = coding(LIFECYCLE, "disclose", "Disclose Record Lifecycle Event")
SOURCE_ROLE = coding(DICOM, "110153", "Source Role ID")
DESTINATION_ROLE = coding(DICOM, "110152", "Destination Role ID")
APPLICATION = coding(DICOM, "110150", "Application")
CUSTODIAN = coding(SNOMED, "159541003", "Record keeping/library clerk")
AUTHORIZER = coding(SNOMED, "429577009", "Patient advocate")
PERSON_ENTITY = coding(ENTITY_TYPE, "1", "Person")
SYSTEM_OBJECT = coding(ENTITY_TYPE, "2", "System Object")
PATIENT_ROLE = coding(OBJECT_ROLE, "1", "Patient")
REPORT_ROLE = coding(OBJECT_ROLE, "3", "Report")
SECURITY_RESOURCE_ROLE = coding(OBJECT_ROLE, "13", "Security Resource")
QUERY_ROLE = coding(OBJECT_ROLE, "24", "Query")
APPLICATION_SERVER = coding(SOURCE_TYPE, "4", "Application Server")
# AuditEvent.outcome (R4 ValueSet audit-event-outcome, required): 0 success; 4 minor failure, "often equivalent to
# an HTTP 400 response" — a request refused for want of a legal basis, answered 403, is one.
OUTCOME_SUCCESS = "0"
OUTCOME_MINOR_FAILURE = "4"
# AuditEvent.agent.network.type (R4 ValueSet network-type): 5 URI.
NETWORK_URI = "5"


@dataclass(frozen=True)
class Names:
    """The broker's own code systems, naming systems and extensions, all named under its issuer."""

    issuer: str

    @property
    def base(self) -> str:
        """The FHIR service base URL (R4 http.html#general): `[base]/[type]/[id]` reads a resource, `[base]/metadata`
        the capability statement."""
        return f"{self.issuer}/api/v1/fhir"

    def code_system(self, name: str) -> str:
        return f"{self.issuer}/fhir/CodeSystem/{name}"

    def naming_system(self, name: str) -> str:
        return f"{self.issuer}/fhir/NamingSystem/{name}"

    def extension(self, name: str) -> str:
        return f"{self.issuer}/fhir/StructureDefinition/{name}"

    def identifier(self, kind: str, value: str) -> dict[str, str]:
        return {"system": self.naming_system(kind), "value": value}

    def reference(self, resource_type: str, broker_id: str, kind: str, display: str | None = None) -> dict[str, Any]:
        """A reference to a resource this broker does not serve by itself (Patient, RelatedPerson): its logical
        id, and the broker's id as identifier so that the reader can ask the broker's API about it."""
        found: dict[str, Any] = {
            "reference": f"{resource_type}/{fhir_id(broker_id)}",
            "type": resource_type,
            "identifier": self.identifier(kind, broker_id),
        }
        if display is not None:
            found["display"] = display
        return found

    def organisation(self, organisation_id: str, names: Mapping[str, str]) -> dict[str, Any]:
        return {
            "reference": f"Organization/{fhir_id(organisation_id)}",
            "type": "Organization",
            "identifier": self.identifier("organisation-id", organisation_id),
            "display": names.get(organisation_id, organisation_id),
        }

    def broker(self) -> dict[str, Any]:
        """The broker itself, as a device identified by its issuer URL."""
        return {"type": "Device", "identifier": {"system": URI, "value": self.issuer}, "display": "Consent Broker"}


_FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
# The broker's opaque ids: a type prefix and 128 bits in hex (broker.services.new_id).
_BROKER_ID = re.compile(r"([a-z]{3})[_-]([0-9a-f]{32})")
_RESOURCE_ID = re.compile(r"([a-z]{3})-([0-9a-f]{32})")


def fhir_id(broker_id: str) -> str:
    """The FHIR id of the broker's id: "-" for "_", which an id may not hold (R4 datatypes.html#id)."""
    found = broker_id.replace("_", "-")
    if not _FHIR_ID.fullmatch(found):
        raise ValueError("an id that FHIR cannot carry")
    return found


def person_from_search(value: str) -> str:
    """The person id a `patient` search parameter names. A reference parameter may be given as `[type]/[id]` or as
    the bare id (R4 search.html#reference); the id is the FHIR id (`per-…`) or the broker's own (`per_…`)."""
    if value.startswith("Patient/"):
        value = value.removeprefix("Patient/")
    found = _BROKER_ID.fullmatch(value)
    if found is None:
        return value  # no person has it: the search answers 404 naming the parameter
    return f"{found.group(1)}_{found.group(2)}"


def broker_id(resource_id: str) -> str | None:
    """The broker's id behind the FHIR id of one of its resources (`con-…` → `con_…`, `dis-…` → `dis_…`), or None
    when `resource_id` is no id the broker gives (and so names no resource)."""
    found = _RESOURCE_ID.fullmatch(resource_id)
    return None if found is None else f"{found.group(1)}_{found.group(2)}"


def _unknown_resource(resource_type: str, resource_id: str, code: str, caller: Caller) -> NotFoundError:
    detail = f"no {resource_type} '{resource_id}' visible to organisation '{caller.organisation_id}'"
    if _BROKER_ID.fullmatch(resource_id) and "_" in resource_id:
        # The broker's own id where the FHIR id belongs: say which one is meant.
        detail += f"; a resource's FHIR id has '-' where the broker's id has '_': {fhir_id(resource_id)}"
    return NotFoundError(detail, extra={"code": code})


def instant(moment: datetime) -> str:
    """An R4 `instant` or `dateTime` with its time: UTC, with a zone, as precise as stored."""
    return utc(moment).isoformat().replace("+00:00", "Z")


def compact(value: Any) -> Any:
    """`value` without the members FHIR's JSON may not carry: null, empty arrays and empty objects (R4 json.html,
    "JSON representation of Resources": an element present has a value)."""
    if isinstance(value, dict):
        found = {k: compact(v) for k, v in value.items()}
        return {k: v for k, v in found.items() if v is not None and v != [] and v != {}}
    if isinstance(value, list):
        items = [compact(v) for v in value]
        return [v for v in items if v is not None and v != [] and v != {}]
    return value


def special_categories(policy: Policy, categories: Iterable[str]) -> list[str]:
    """The categories that are GDPR Art. 9 data (or may hold it) by the running policy; a category the policy no
    longer knows counts as special, as in the portal (services/person_portal.py)."""
    return [c for c in categories if c not in policy.categories or policy.is_special(c)]


def lawful_bases(special: bool) -> list[dict[str, str]]:
    """The GDPR articles a consent rests on: Art. 6(1)(a); with Art. 9(2)(a), explicit consent, when it covers
    special categories of data."""
    bases = [coding(GDPR, "A6-1-a", "GDPR Art. 6(1)(a): consent")]
    if special:
        bases.append(coding(GDPR, "A9-2-a", "GDPR Art. 9(2)(a): explicit consent to special categories"))
    return bases


# --- Consent -------------------------------------------------------------------------------------------------------


def consent_state(status: str, valid_until: datetime | None, now: datetime) -> str:
    """The R4 consent-state-codes value (required binding) of a consent's status. `active` while it is; every end —
    withdrawn, expired (also one whose end has passed before a job has marked it), superseded — is `inactive`,
    which R4 defines as "the consent is terminated or replaced". `rejected` and `proposed` belong to consent
    requests, which are not consents yet."""
    if status == "active" and (valid_until is None or now < utc(valid_until)):
        return "active"
    return "inactive"


def consent_resource(
    consent: ConsentRow,
    text: ConsentTextRow | None,
    events: Sequence[ConsentEventRow],
    *,
    names: Names,
    organisations: Mapping[str, str],
    special: Sequence[str],
    now: datetime,
) -> dict[str, Any]:
    """The Consent resource of a consent. `special` are its categories that are special categories of data."""
    extensions: list[dict[str, Any]] = [
        # How it was given and whether it was explicit and written: what makes it valid for a special category
        # (703/2023 53 §; GDPR 9(2)(a)); R4 Consent has no element for them.
        {"url": names.extension("consent-method"), "valueCode": consent.method},
        {"url": names.extension("explicit"), "valueBoolean": consent.explicit},
        {"url": names.extension("written"), "valueBoolean": consent.written},
    ]
    if consent.bound_to_org is not None:
        # It ends with this organisation's service relationship (one given before the relationship began waits for it).
        extensions.append(
            {
                "url": names.extension("bound-to-relationship"),
                "valueReference": names.organisation(consent.bound_to_org, organisations),
            }
        )
    if consent.withdrawn_at is not None:
        # The withdrawal's moment is said by an extension, not by ending provision.period: the period is the term
        # the person agreed to, as the stored text says it (the text's hash is in sourceAttachment), and the two
        # ways a consent ends — its term runs out, the person withdraws it — stay apart (GDPR 7(3)).
        extensions.append({"url": names.extension("withdrawn-at"), "valueDateTime": instant(consent.withdrawn_at)})
    period = {"start": instant(consent.valid_from)}
    if consent.valid_until is not None:
        period["end"] = instant(consent.valid_until)
    updated = max([utc(consent.created_at), *(utc(e.at) for e in events)])
    resource: dict[str, Any] = {
        "resourceType": "Consent",
        "id": fhir_id(consent.id),
        "meta": {"versionId": str(consent.version), "lastUpdated": instant(updated)},
        "extension": extensions,
        "identifier": [names.identifier("consent-id", consent.id)],
        "status": consent_state(consent.status, consent.valid_until, now),
        "scope": {"coding": [PRIVACY_SCOPE]},
        "category": [{"coding": [category]} for category in CONSENT_CATEGORIES],
        "patient": names.reference("Patient", consent.person_id, "person-id"),
        "dateTime": instant(consent.created_at),
        "performer": [_consenter(consent, names)],
        # R4: "the organization that manages the consent, and the framework within which it is executed" — the
        # organisation that asked for it or recorded it. It is not an actor of the provision: the actors of a
        # permit are those it permits, and the requester receives nothing unless it is also a recipient.
        "organization": [names.organisation(consent.requester_org, organisations)],
        "policyRule": {
            "coding": lawful_bases(bool(special)),
            "text": "GDPR Art. 6(1)(a)" + (" and 9(2)(a)" if special else "") + "; Client Data Act 703/2023",
        },
        "provision": {
            "type": "permit",
            "period": period,
            "actor": [
                {"role": {"coding": [INFORMATION_RECIPIENT]}, "reference": names.organisation(r, organisations)}
                for r in consent.recipients
            ],
            "action": [{"coding": [DISCLOSE_ACTION]}],
            "purpose": [coding(names.code_system("purpose"), p) for p in consent.purposes],
            "class": [coding(names.code_system("category"), c) for c in consent.categories],
        },
    }
    if text is not None:
        resource["sourceAttachment"] = _text_attachment(text, names)
    found: dict[str, Any] = compact(resource)
    return found


def _consenter(consent: ConsentRow, names: Names) -> dict[str, Any]:
    """Who agreed (R4 Consent.performer): the person, or the representative who gave it under a mandate."""
    if consent.given_by == "representative" and consent.representative_id:
        display = f"legal representative ({consent.mandate})" if consent.mandate else "legal representative"
        return names.reference("RelatedPerson", consent.representative_id, "person-id", display)
    return names.reference("Patient", consent.person_id, "person-id")


def _text_attachment(text: ConsentTextRow, names: Names) -> dict[str, Any]:
    """The exact text shown to the person (GDPR 7(1)): the broker stores it once, by its SHA-256. R4 defines
    Attachment.hash as SHA-1 (datatypes.html#Attachment), so that is given for readers that check it; the SHA-256
    the broker, its receipts and the ISO/IEC TS 27560 record name the text by is an extension."""
    data = text.text.encode("utf-8")
    return {
        "extension": [{"url": names.extension("sha256"), "valueString": text.sha256}],
        "contentType": "text/plain; charset=utf-8",
        "language": text.language,
        "data": base64.b64encode(data).decode("ascii"),
        "size": len(data),
        "hash": base64.b64encode(hashlib.sha1(data, usedforsecurity=False).digest()).decode("ascii"),
        "title": f"Consent text, version {text.version}",
        "creation": instant(text.created_at),
    }


# --- AuditEvent ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Authorizer:
    """Who gave the consent a disclosure rested on: BALP's "authorizer that represented the patient"."""

    given_by: str  # person | representative
    representative_id: str | None = None
    mandate: str | None = None


@dataclass(frozen=True)
class DisclosureContext:
    """What an AuditEvent needs from beside the disclosure's own row."""

    entry_id: int  # the audit entry's append id
    index: int | None  # its position in the log's Merkle tree; None until the sequencer has placed it
    acting_org: str | None  # the organisation whose partner system asked (a request) or sent (a notice)
    actor_role: str | None  # the acting professional's role
    actor_commitment: str | None  # the salted commitment to the professional's id, as the log holds it
    custodians: tuple[str, ...] = ()  # the organisations that deposited the disclosed records
    authorizer: Authorizer | None = None  # set when the basis was a consent


def audit_event_resource(
    disclosure: DisclosureRow,
    context: DisclosureContext,
    *,
    names: Names,
    organisations: Mapping[str, str],
) -> dict[str, Any]:
    """The AuditEvent of one disclosure, after BALP's Privacy Disclosure at Source: what was asked for or sent,
    to whom, by which system and professional, on what basis, and where the log holds its entry."""
    permitted = disclosure.effect == "permit"
    event: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "id": fhir_id(disclosure.id),
        "type": EXPORT,
        "subtype": [DISCLOSE, coding(names.code_system("disclosure-kind"), disclosure.kind)],
        "action": "R",
        "recorded": instant(disclosure.created_at),
        "outcome": OUTCOME_SUCCESS if permitted else OUTCOME_MINOR_FAILURE,
        "purposeOfEvent": [{"coding": [coding(names.code_system("purpose"), disclosure.purpose)]}],
        "agent": _agents(disclosure, context, names, organisations),
        "source": {
            "site": urlsplit(names.issuer).netloc or names.issuer,
            "observer": names.broker(),
            "type": [APPLICATION_SERVER],
        },
        "entity": _entities(disclosure, context, names),
    }
    if not permitted:
        event["outcomeDesc"] = "refused: no statute or consent permits the disclosure"
    found: dict[str, Any] = compact(event)
    return found


def _agents(
    disclosure: DisclosureRow, context: DisclosureContext, names: Names, organisations: Mapping[str, str]
) -> list[dict[str, Any]]:
    agents: list[dict[str, Any]] = [
        # The source is the broker, and it is the observer too (BALP invariant val-audit-source).
        {
            "type": {"coding": [SOURCE_ROLE]},
            "who": names.broker(),
            "requestor": False,
            "network": {"address": names.issuer, "type": NETWORK_URI},
        },
        {
            "type": {"coding": [DESTINATION_ROLE]},
            "who": names.organisation(disclosure.recipient_org, organisations),
            "requestor": False,
        },
    ]
    # The custodians that released the data: the organisations whose records went out; for a notice, its sender.
    custodians = list(context.custodians)
    if disclosure.kind == "notice" and context.acting_org and context.acting_org not in custodians:
        custodians.append(context.acting_org)
    agents += [
        {"type": {"coding": [CUSTODIAN]}, "who": names.organisation(org, organisations), "requestor": False}
        for org in custodians
    ]
    if context.authorizer is not None:
        agents.append(
            {
                "type": {"coding": [AUTHORIZER]},
                "who": _authorizer(disclosure.person_id, context.authorizer, names),
                "requestor": False,
            }
        )
    # The partner system and the professional acting through it (BALP's security token pattern: the client as
    # DICOM "Application", the user as the information recipient — or, for a notice, as its author). The
    # professional is named by the salted commitment the log holds, never by id: the data-protection officer can
    # open it (docs/dpo.md), nobody else.
    agents.append(
        {
            "type": {"coding": [APPLICATION]},
            "who": {"identifier": names.identifier("partner-id", disclosure.partner)},
            "requestor": False,
        }
    )
    if context.actor_commitment is not None:
        professional: dict[str, Any] = {
            "type": {"coding": [INFORMATION_RECIPIENT if disclosure.kind == "request" else AUTHOR]},
            "who": {"identifier": names.identifier("actor-commitment", context.actor_commitment)},
            "requestor": True,
        }
        if context.actor_role is not None:
            professional["role"] = [{"coding": [coding(names.code_system("role"), context.actor_role)]}]
        agents.append(professional)
    return agents


def _authorizer(person_id: str, authorizer: Authorizer, names: Names) -> dict[str, Any]:
    if authorizer.given_by == "representative" and authorizer.representative_id:
        display = f"legal representative ({authorizer.mandate})" if authorizer.mandate else "legal representative"
        return names.reference("RelatedPerson", authorizer.representative_id, "person-id", display)
    return names.reference("Patient", person_id, "person-id")


def _detail(**values: str | None) -> list[dict[str, str]]:
    return [{"type": name, "valueString": value} for name, value in values.items() if value]


def _entities(disclosure: DisclosureRow, context: DisclosureContext, names: Names) -> list[dict[str, Any]]:
    entities: list[dict[str, Any]] = [
        {
            "what": names.reference("Patient", disclosure.person_id, "person-id"),
            "type": PERSON_ENTITY,
            "role": PATIENT_ROLE,
        },
        # What was asked for (a request) or sent (a notice): the category, and the fields the purpose let through.
        {
            "type": SYSTEM_OBJECT,
            "role": QUERY_ROLE if disclosure.kind == "request" else REPORT_ROLE,
            "name": disclosure.category,
            "detail": _detail(
                category=disclosure.category,
                fields=",".join(disclosure.fields),
                payload_sha256=disclosure.payload_sha256,
            ),
        },
    ]
    entities += [
        {
            "what": {"identifier": names.identifier("record-id", record_id)},
            "type": SYSTEM_OBJECT,
            "role": REPORT_ROLE,
            "name": disclosure.category,
            "detail": _detail(category=disclosure.category),
        }
        for record_id in disclosure.record_ids
    ]
    entities.append(_basis_entity(disclosure, names))
    # The log entry that records the decision: its tree position once sequenced, which an inclusion proof against
    # a signed checkpoint starts from (GET /api/v1/audit/proofs/inclusion), and its append id before that.
    log_entry = (
        names.identifier("audit-log-index", str(context.index))
        if context.index is not None
        else names.identifier("audit-entry-id", str(context.entry_id))
    )
    entities.append(
        {
            "what": {"identifier": log_entry},
            "type": SYSTEM_OBJECT,
            "name": "audit log entry",
            "description": "the entry of the broker's tamper-evident log (RFC 9162 Merkle tree) recording this",
            "detail": _detail(
                entry_id=str(context.entry_id), index=str(context.index) if context.index is not None else None
            ),
        }
    )
    return entities


def _basis_entity(disclosure: DisclosureRow, names: Names) -> dict[str, Any]:
    """The legal basis the decision named (DESIGN.md invariant 1) — a consent, a statute or a statutory exception —
    or, for a refusal, the policy version that found none."""
    basis = disclosure.basis or {}
    kind = basis.get("kind")
    entity: dict[str, Any] = {"type": SYSTEM_OBJECT, "role": SECURITY_RESOURCE_ROLE}
    if kind == "consent" and basis.get("consent_id"):
        consent_id = str(basis["consent_id"])
        entity["what"] = {
            "reference": f"Consent/{fhir_id(consent_id)}",
            "type": "Consent",
            "identifier": names.identifier("consent-id", consent_id),
        }
        entity["name"] = "consent"
    elif kind:
        entity["what"] = {"identifier": names.identifier("policy-rule", str(basis.get("rule")))}
        entity["name"] = str(kind)
    else:
        entity["what"] = {"identifier": names.identifier("policy-version", disclosure.policy_version)}
        entity["name"] = "no legal basis"
    if basis.get("reference"):
        entity["description"] = str(basis["reference"])
    entity["detail"] = _detail(
        basis=str(kind) if kind else None,
        rule=_text(basis.get("rule")),
        reference=_text(basis.get("reference")),
        lawful_basis=_text(basis.get("lawful_basis")),
        consent_version=_text(basis.get("consent_version")),
        exception_ground=_text(basis.get("exception_ground")),
        policy_version=disclosure.policy_version,
    )
    return entity


def _text(value: object) -> str | None:
    return None if value is None else str(value)


# --- Bundle --------------------------------------------------------------------------------------------------------


def searchset(resources: Sequence[dict[str, Any]], *, names: Names, self_url: str, now: datetime) -> dict[str, Any]:
    """A search's results (R4 bundle.html, type `searchset`): every match, with its total and the search's own URL.
    One page holds them all: a person has tens of consents and disclosures, not thousands."""
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": "searchset",
        "timestamp": instant(now),
        "total": len(resources),
        "link": [{"relation": "self", "url": self_url}],
        "entry": [
            {"fullUrl": _full_url(resource, names), "resource": resource, "search": {"mode": "match"}}
            for resource in resources
        ],
    }
    found: dict[str, Any] = compact(bundle)  # no `entry` when nothing matched
    return found


def collection(resources: Sequence[dict[str, Any]], *, names: Names, now: datetime) -> dict[str, Any]:
    """A set of resources kept together (R4 bundle.html, type `collection`): one person's export."""
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": "collection",
        "timestamp": instant(now),
        "entry": [{"fullUrl": _full_url(resource, names), "resource": resource} for resource in resources],
    }
    found: dict[str, Any] = compact(bundle)
    return found


def _full_url(resource: dict[str, Any], names: Names) -> str:
    # The RESTful form ending in the resource's id, as R4 bundle.html requires of a fullUrl that looks like one: for
    # Consent and AuditEvent, the URL their read answers (GET [base]/[type]/[id], R4 http.html#read).
    return f"{names.base}/{resource['resourceType']}/{resource['id']}"


def patient_resource(person_id: str, names: Names) -> dict[str, Any]:
    """The person as a Patient with nothing but the broker's id (an export's references resolve to it). No name,
    birth date or identity code: a reader who needs them asks the organisation that serves the person."""
    return {
        "resourceType": "Patient",
        "id": fhir_id(person_id),
        "identifier": [names.identifier("person-id", person_id)],
    }


# --- reading ------------------------------------------------------------------------------------------------------

_CHUNK = 500


def _chunks(values: Sequence[Any], size: int = _CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def organisation_names(uow: UnitOfWork) -> dict[str, str]:
    """Every registered organisation's name (tens of rows): the displays of references."""
    return {row.id: row.name for row in uow.session.execute(select(OrganisationRow.id, OrganisationRow.name))}


def _known_person(uow: UnitOfWork, person_id: str) -> None:
    if uow.session.scalar(select(PersonRow.id).where(PersonRow.id == person_id)) is None:
        raise UnknownPersonError(f"no person with id '{person_id}'", field="patient")


def load_consents(
    broker: Broker, uow: UnitOfWork, person_ids: Sequence[str], *, visible_to: str | None = None
) -> dict[str, list[dict[str, Any]]]:
    """The Consent resources of the persons, by person, oldest first; only those in which organisation
    `visible_to` is requester or recipient when it is given (the visibility of services.consents.list_consents)."""
    rows: list[ConsentRow] = []
    for chunk in _chunks(person_ids):
        rows += uow.session.scalars(
            select(ConsentRow).where(ConsentRow.person_id.in_(chunk)).order_by(ConsentRow.created_at, ConsentRow.id)
        )
    if visible_to is not None:
        rows = [row for row in rows if _involves(row, visible_to)]
    found: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row, resource in zip(rows, consent_resources(broker, uow, rows), strict=True):
        found[row.person_id].append(resource)
    return found


def consent_resources(broker: Broker, uow: UnitOfWork, rows: Sequence[ConsentRow]) -> list[dict[str, Any]]:
    """The Consent resources of the consents, in their order, with their texts and histories read a chunk at a
    time."""
    names = Names(broker.settings.issuer)
    now = broker.clock.now()
    texts: dict[str, ConsentTextRow] = {}
    for chunk in _chunks(sorted({row.text_sha256 for row in rows})):
        texts.update(
            (t.sha256, t) for t in uow.session.scalars(select(ConsentTextRow).where(ConsentTextRow.sha256.in_(chunk)))
        )
    events: dict[str, list[ConsentEventRow]] = defaultdict(list)
    for chunk in _chunks([row.id for row in rows]):
        for event in uow.session.scalars(
            select(ConsentEventRow).where(ConsentEventRow.consent_id.in_(chunk)).order_by(ConsentEventRow.id)
        ):
            events[event.consent_id].append(event)
    organisations = organisation_names(uow)
    return [
        consent_resource(
            row,
            texts.get(row.text_sha256),
            events[row.id],
            names=names,
            organisations=organisations,
            special=special_categories(broker.policy, row.categories),
            now=now,
        )
        for row in rows
    ]


#: A disclosure as its AuditEvent needs it: the row, the log entry's bytes, and the entry's tree index once the
#: sequencer has placed it.
LoggedDisclosure = tuple[DisclosureRow, bytes, int | None]


def _logged_disclosures(uow: UnitOfWork, caller: Caller | None, *where: Any) -> list[LoggedDisclosure]:
    """The disclosures matching `where`, oldest first, with their log entries: all of them, or — for a partner
    `caller` — those whose recipient is its organisation or that its partner system made."""
    stmt = (
        select(DisclosureRow, AuditEntryRow.entry, AuditLeafRow.idx)
        .join(AuditEntryRow, AuditEntryRow.id == DisclosureRow.audit_entry_id)
        .outerjoin(AuditLeafRow, AuditLeafRow.entry_id == DisclosureRow.audit_entry_id)
        .where(*where)
        .order_by(DisclosureRow.created_at, DisclosureRow.id)
    )
    if caller is not None:
        stmt = stmt.where(
            or_(DisclosureRow.recipient_org == caller.organisation_id, DisclosureRow.partner == caller.partner_id)
        )
    return [(r[0], bytes(r[1]), r[2]) for r in uow.session.execute(stmt)]


def load_audit_events(
    broker: Broker, uow: UnitOfWork, person_ids: Sequence[str], *, caller: Caller | None = None
) -> dict[str, list[dict[str, Any]]]:
    """The AuditEvent resources of the persons' disclosures, by person, oldest first: all of them, or — for a
    partner `caller` — those whose recipient is its organisation or that its partner system made."""
    found_rows: list[LoggedDisclosure] = []
    for chunk in _chunks(person_ids):
        found_rows += _logged_disclosures(uow, caller, DisclosureRow.person_id.in_(chunk))
    found: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for (row, _, _), resource in zip(found_rows, audit_event_resources(broker, uow, found_rows), strict=True):
        found[row.person_id].append(resource)
    return found


def audit_event_resources(
    broker: Broker, uow: UnitOfWork, found_rows: Sequence[LoggedDisclosure]
) -> list[dict[str, Any]]:
    """The AuditEvent resources of the disclosures, in their order, with the records' custodians and the consents'
    authorizers read a chunk at a time."""
    names = Names(broker.settings.issuer)
    sources: dict[str, str] = {}
    for chunk in _chunks(sorted({rid for row, _, _ in found_rows for rid in row.record_ids})):
        for record_id, source in uow.session.execute(
            select(RecordRow.id, RecordRow.source_org).where(RecordRow.id.in_(chunk))
        ):
            sources[record_id] = source
    consent_ids = sorted({cid for row, _, _ in found_rows if (cid := _basis_consent(row)) is not None})
    authorizers: dict[str, Authorizer] = {}
    for chunk in _chunks(consent_ids):
        for consent in uow.session.execute(
            select(ConsentRow.id, ConsentRow.given_by, ConsentRow.representative_id, ConsentRow.mandate).where(
                ConsentRow.id.in_(chunk)
            )
        ):
            authorizers[consent.id] = Authorizer(consent.given_by, consent.representative_id, consent.mandate)
    organisations = organisation_names(uow)
    found: list[dict[str, Any]] = []
    for row, entry, index in found_rows:
        logged = json.loads(entry)
        context = DisclosureContext(
            entry_id=row.audit_entry_id,
            index=index,
            acting_org=logged.get("organisation"),
            actor_role=logged.get("actor_role"),
            actor_commitment=logged.get("actor_commitment"),
            custodians=tuple(sorted({sources[r] for r in row.record_ids if r in sources})),
            authorizer=authorizers.get(_basis_consent(row) or ""),
        )
        found.append(audit_event_resource(row, context, names=names, organisations=organisations))
    return found


def _basis_consent(row: DisclosureRow) -> str | None:
    """The id of the consent a disclosure rested on, if it rested on one."""
    basis = row.basis or {}
    consent_id = basis.get("consent_id")
    return str(consent_id) if basis.get("kind") == "consent" and consent_id else None


def _self_url(names: Names, resource_type: str, person_id: str) -> str:
    return f"{names.base}/{resource_type}?patient={quote(person_id, safe='')}"


def search_consents(broker: Broker, caller: Caller, patient: str) -> dict[str, Any]:
    """`GET /api/v1/fhir/Consent?patient=`: the person's consents in which the caller's organisation is requester or
    recipient, as a searchset Bundle. Not logged, like the consent list it is another form of."""
    person_id = person_from_search(patient)
    names = Names(broker.settings.issuer)
    with broker.uow(write=False) as uow:
        _known_person(uow, person_id)
        consents = load_consents(broker, uow, [person_id], visible_to=caller.organisation_id)[person_id]
    return searchset(consents, names=names, self_url=_self_url(names, "Consent", person_id), now=broker.clock.now())


def search_audit_events(broker: Broker, caller: Caller, patient: str) -> dict[str, Any]:
    """`GET /api/v1/fhir/AuditEvent?patient=`: the person's disclosures as a searchset Bundle — every one for a
    data-protection officer's system (scope `audit:read`), a partner's own for a partner (scope `disclosures`).
    Reading the log is processing the personal data in it: the read is logged (`audit:query`) in the same
    transaction, before the answer leaves."""
    person_id = person_from_search(patient)
    names = Names(broker.settings.issuer)
    officer = "audit:read" in caller.scopes
    with broker.uow() as uow:
        _known_person(uow, person_id)
        events = load_audit_events(broker, uow, [person_id], caller=None if officer else caller)[person_id]
        now = broker.clock.now()
        append_entry(
            uow,
            event="audit:query",
            now=now,
            caller=caller,
            person_id=person_id,
            detail={
                "surface": SURFACE,
                "filters": {"resource": "AuditEvent", "patient": person_id, "scope": "all" if officer else "own"},
                "returned": len(events),
            },
        )
        uow.commit()
    return searchset(events, names=names, self_url=_self_url(names, "AuditEvent", person_id), now=now)


def read_consent(broker: Broker, caller: Caller, resource_id: str) -> dict[str, Any]:
    """`GET /api/v1/fhir/Consent/{id}` (R4 http.html#read): the Consent, if the caller's organisation is its
    requester or a recipient — what the search shows it. Any other id is 404 `unknown_consent`, whether or not the
    consent exists, as for every consent operation. Not logged, like the search."""
    consent_id = broker_id(resource_id)
    with broker.uow(write=False) as uow:
        row = uow.session.get(ConsentRow, consent_id) if consent_id is not None else None
        if row is None or not _involves(row, caller.organisation_id):
            raise _unknown_resource("Consent", resource_id, "unknown_consent", caller)
        [resource] = consent_resources(broker, uow, [row])
    return resource


def read_audit_event(broker: Broker, caller: Caller, resource_id: str) -> dict[str, Any]:
    """`GET /api/v1/fhir/AuditEvent/{id}` (R4 http.html#read): one disclosure as an AuditEvent, for a
    data-protection officer's system (scope `audit:read`) any, for a partner (scope `disclosures`) one made to its
    organisation or by its system — what the search shows it; any other id is 404. Reading the log is processing
    the personal data in it: the read is logged (`audit:query`, in the person's log) in the same transaction,
    before the answer leaves."""
    disclosure_id = broker_id(resource_id)
    officer = "audit:read" in caller.scopes
    with broker.uow() as uow:
        found = (
            _logged_disclosures(uow, None if officer else caller, DisclosureRow.id == disclosure_id)
            if disclosure_id is not None
            else []
        )
        if not found:
            raise _unknown_resource("AuditEvent", resource_id, "not_found", caller)
        [resource] = audit_event_resources(broker, uow, found)
        append_entry(
            uow,
            event="audit:query",
            now=broker.clock.now(),
            caller=caller,
            person_id=found[0][0].person_id,
            detail={
                "surface": SURFACE,
                "filters": {"resource": "AuditEvent", "id": resource_id, "scope": "all" if officer else "own"},
                "returned": 1,
            },
        )
        uow.commit()
    return resource


# --- the capability statement -------------------------------------------------------------------------------------

#: When the capability statement last changed. R4 CapabilityStatement.date "should change when the substantive
#: content of the capability statement changes": change it with `capability_statement`.
CAPABILITY_DATE = "2026-12-06"
RESTFUL_SECURITY_SERVICE = "http://terminology.hl7.org/CodeSystem/restful-security-service"
# The search parameters' definitions in R4 (searchparameter-registry.html): Consent's `patient` is the shared
# clinical-patient (Consent.patient), AuditEvent's its own (the agents' and entities' Patient references).
CONSENT_PATIENT = "http://hl7.org/fhir/SearchParameter/clinical-patient"
AUDIT_EVENT_PATIENT = "http://hl7.org/fhir/SearchParameter/AuditEvent-patient"
_PATIENT_PARAMETER_HELP = (
    "Required, and the only parameter accepted. The person as `Patient/per-…`, `per-…` or the broker's `per_…`; an "
    "unknown person is 404 `unknown_person`."
)


def capability_statement(
    names: Names, *, token_endpoint: str, server_metadata: str, software_version: str | None
) -> dict[str, Any]:
    """What this FHIR server does (R4 capabilitystatement.html, kind `instance`): Consent and AuditEvent, each read
    by id and searched by patient, in JSON, behind OAuth 2.0. `GET [base]/metadata` answers it (R4
    http.html#capabilities)."""
    statement: dict[str, Any] = {
        "resourceType": "CapabilityStatement",
        "url": f"{names.base}/metadata",
        "version": software_version,
        "name": "ConsentBroker",
        "title": "Consent Broker FHIR R4 server",
        "status": "active",
        "date": CAPABILITY_DATE,
        "description": "Consents and the disclosures made under them, as FHIR R4 Consent and AuditEvent resources, "
        "for the partner systems of the Consent Broker and for data-protection officers.",
        # R4 cpb-14: a statement of kind `instance` describes one installation and has `implementation`.
        "kind": "instance",
        "software": {"name": "Consent Broker", "version": software_version},
        "implementation": {"description": f"Consent Broker at {names.issuer}", "url": names.base},
        "fhirVersion": "4.0.1",
        "format": ["json"],
        "rest": [
            {
                "mode": "server",
                "documentation": "Read-only. Answers are `application/fhir+json`; errors are RFC 9457 problem "
                "documents (`application/problem+json`) with a stable `code`, as everywhere in the broker's API, "
                "not OperationOutcome resources.",
                "security": {
                    "cors": False,
                    "service": [{"coding": [coding(RESTFUL_SECURITY_SERVICE, "OAuth", "OAuth")], "text": "OAuth 2.0"}],
                    "description": (
                        "OAuth 2.0 client credentials grant (RFC 6749 §4.4). The partner system authenticates at "
                        f"the token endpoint {token_endpoint} with `private_key_jwt`: a JWT signed with its "
                        "registered key (RFC 7523 §2.2, OpenID Connect Core 1.0 §9). Access tokens are bound to the "
                        "client's key with DPoP (RFC 9449): send `Authorization: DPoP <token>` and a fresh `DPoP` "
                        "proof with every request. The authorization server's metadata (RFC 8414) is at "
                        f"{server_metadata}. Scopes: `consents` for Consent; for AuditEvent `disclosures` (the "
                        "disclosures made to your organisation or by your system) or `audit:read` (all of them, for "
                        "a data-protection officer's system). This statement needs no token."
                    ),
                },
                "resource": [
                    {
                        "type": "Consent",
                        "documentation": "The consents in which the calling organisation is requester or recipient; "
                        "any other is 404 to it. Scope `consents`.",
                        "interaction": [{"code": "read"}, {"code": "search-type"}],
                        # meta.versionId is the consent's version; earlier versions are not served (no vread).
                        "versioning": "versioned",
                        "readHistory": False,
                        "conditionalRead": "not-supported",
                        "searchParam": [
                            {
                                "name": "patient",
                                "definition": CONSENT_PATIENT,
                                "type": "reference",
                                "documentation": _PATIENT_PARAMETER_HELP,
                            }
                        ],
                    },
                    {
                        "type": "AuditEvent",
                        "documentation": "Decided requests for records and notices sent, permitted or refused, "
                        "shaped after IHE BALP's Privacy Disclosure at Source. With scope `disclosures` those made "
                        "to the calling organisation or by its system, with `audit:read` all; any other is 404. "
                        "Every read and search is itself recorded in the broker's audit log.",
                        "interaction": [{"code": "read"}, {"code": "search-type"}],
                        "versioning": "no-version",
                        "readHistory": False,
                        "conditionalRead": "not-supported",
                        "searchParam": [
                            {
                                "name": "patient",
                                "definition": AUDIT_EVENT_PATIENT,
                                "type": "reference",
                                "documentation": _PATIENT_PARAMETER_HELP,
                            }
                        ],
                    },
                ],
            }
        ],
    }
    found: dict[str, Any] = compact(statement)  # no `version` when the package's version is unknown
    return found


@functools.cache
def software_version() -> str | None:
    """The installed broker's version, or None when it runs from a source tree that is not installed."""
    try:
        return importlib.metadata.version("consent-broker")
    except importlib.metadata.PackageNotFoundError:
        return None


# --- the export ------------------------------------------------------------------------------------------------


class ExportError(Exception):
    pass


#: Who the export's log entries name: the command itself, run by an operator for the data-protection officer.
EXPORT_ACTOR = ("broker export fhir", "system")


@dataclass(frozen=True)
class ExportSummary:
    persons: int
    consents: int
    audit_events: int
    directory: Path

    def line(self) -> str:
        return (
            f"exported {self.persons} person{'' if self.persons == 1 else 's'}: {self.consents} Consent and "
            f"{self.audit_events} AuditEvent resources, one FHIR R4 Bundle per person, to {self.directory}"
        )


def export_fhir(broker: Broker, directory: Path, *, person_id: str | None = None) -> ExportSummary:
    """Write, per person (every person, or the one named), `DIR/<person_id>.json`: a FHIR R4 Bundle of type
    collection with the person as Patient and all of their consents and disclosures — what a data-protection
    officer sees. `DIR` must be new or empty, so that the files in it are this export's and no other's.

    Persons go a chunk at a time, in the order of their ids, so that an export of millions holds only a chunk in
    memory. Each person's export is logged (`audit:query`, in the person's own log, where the DPO's report shows
    it) in the transaction that read it, committed before the file is written."""
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise ExportError(f"{directory} is not a new or empty folder")
    if person_id is not None:
        with broker.uow(write=False) as uow:
            if uow.session.scalar(select(PersonRow.id).where(PersonRow.id == person_id)) is None:
                raise ExportError(f"no person with id '{person_id}'")
    names = Names(broker.settings.issuer)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)  # personal data: the owner's only
    persons = consents = audit_events = 0
    for chunk in _person_chunks(broker, person_id):
        with broker.uow() as uow:
            by_person = load_consents(broker, uow, chunk)
            events_by_person = load_audit_events(broker, uow, chunk)
            now = broker.clock.now()
            for person in chunk:
                append_entry(
                    uow,
                    event="audit:query",
                    now=now,
                    actor=EXPORT_ACTOR,
                    person_id=person,
                    detail={
                        "surface": "cli",
                        "filters": {"export": "fhir", "patient": person},
                        "returned": len(by_person[person]) + len(events_by_person[person]),
                    },
                )
            uow.commit()
        for person in chunk:
            resources = [patient_resource(person, names), *by_person[person], *events_by_person[person]]
            _write_json(directory / f"{person}.json", collection(resources, names=names, now=now))
            consents += len(by_person[person])
            audit_events += len(events_by_person[person])
        persons += len(chunk)
    return ExportSummary(persons=persons, consents=consents, audit_events=audit_events, directory=directory)


def _person_chunks(broker: Broker, person_id: str | None) -> Iterator[list[str]]:
    """The persons to export, a chunk at a time: the one named, or every person by id (keyset pagination)."""
    if person_id is not None:
        yield [person_id]
        return
    after = ""
    while True:
        with broker.uow(write=False) as uow:
            chunk = list(
                uow.session.scalars(
                    select(PersonRow.id).where(PersonRow.id > after).order_by(PersonRow.id).limit(_CHUNK)
                )
            )
        if not chunk:
            return
        yield chunk
        after = chunk[-1]


def _write_json(path: Path, document: dict[str, Any]) -> None:
    """Written whole or not at all: to a temporary name, then renamed (POSIX rename is atomic)."""
    partial = path.with_name(path.name + ".partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # personal data: owner only
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(document, handle, ensure_ascii=False, indent=2)
        handle.write("\n")
    os.replace(partial, path)
