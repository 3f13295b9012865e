"""A consent as an ISO/IEC TS 27560:2023 consent record ("Privacy technologies — Consent record information
structure"), and that record signed.

The record keeps 27560's sections and field names (clause 6.3): the header (`schema_version`, `record_id`,
`pii_principal_id`), the processing (`pii_processing`: the notice, its language, and per purpose its lawful basis,
PII, controllers and recipients), the parties (`party_identification`) and the events (`event`). Values are the
Data Privacy Vocabulary's concepts where the W3C DPVCG guide "Consent Records and Receipts as per ISO/IEC TS
27560:2023 using DPV" (w3id.org/dpv/guides/consent-27560) maps a field to one — `dpv:` for w3id.org/dpv#,
`eu-gdpr:` for w3id.org/dpv/legal/eu/gdpr# — and the broker's own codes (organisations, categories, purposes)
otherwise. Members 27560 does not have are the broker's profile of it, which 27560 allows: the consent's type
(explicit, written) and how it was given (the Kantara Consent Receipt v1.1 `collectionMethod` 27560 grew from),
its validity and current status.

27560's storage locations and retention period describe what the controllers do with the data, not the consent,
and are not here: the broker's retention of records is its own schedule (docs/retention.md). Parties' postal
addresses and contacts are not kept by the broker either.

The existing signed receipt (`consents.consent_receipt`, typ `consent-receipt+jws`) is unchanged; this record is
offered signed beside it as a JWS of type `consent-record+jws` (RFC 8725 §3.11: its own type, so that neither can
be taken for the other).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select

from broker.adapters.orm import ConsentEventRow, ConsentRow, ConsentTextRow, OrganisationRow
from broker.adapters.signing import sign_jws
from broker.domain.clock import utc
from broker.domain.model import Caller
from broker.services import Broker
from broker.services.consents import documented_consent
from broker.services.fhir import instant, special_categories

#: The version of this profile of ISO/IEC TS 27560:2023; changed whenever a member changes meaning.
SCHEMA_VERSION = "consent-broker/iso-27560-record/1"
#: The JWS "typ" of a signed record.
RECORD_TYP = "consent-record+jws"
#: The law the broker's consents are given under (703/2023 and the GDPR as applied in Finland).
JURISDICTION = "FI"

# The consent's state after each kind of event (27560 6.3.7.6 event_state), as DPV's ConsentStatus concepts.
EVENT_STATES = {
    "grant": "dpv:ConsentGiven",
    "withdraw": "dpv:ConsentWithdrawn",
    "expire": "dpv:ConsentExpired",
}
# The events after which the consent no longer permits anything.
ENDING = frozenset({"withdraw", "expire"})


def consent_type(explicit: bool) -> str:
    """27560 3.4 consent type, as DPV's consent types: a consent for special categories must be explicit (GDPR
    9(2)(a)); every consent the broker records is expressed by the person, never implied."""
    return "dpv:ExplicitlyExpressedConsent" if explicit else "dpv:ExpressedConsent"


def lawful_basis(special: bool) -> list[str]:
    """27560 6.3.4.6 lawful_basis: GDPR 6(1)(a), and 9(2)(a) when special categories are covered."""
    return ["eu-gdpr:A6-1-a", "eu-gdpr:A9-2-a"] if special else ["eu-gdpr:A6-1-a"]


def record_status(consent: ConsentRow, now: datetime) -> str:
    """The consent's status now: one whose end has passed is expired even before a job marks it so."""
    if consent.status == "active" and consent.valid_until is not None and now >= utc(consent.valid_until):
        return "expired"
    return consent.status


def consent_record_document(
    consent: ConsentRow,
    text: ConsentTextRow | None,
    events: Sequence[ConsentEventRow],
    *,
    issuer: str,
    organisations: Mapping[str, tuple[str, str]],
    special: Sequence[str],
    now: datetime,
) -> dict[str, Any]:
    """The 27560 record of a consent, JSON-ready. `organisations` maps id → (name, type); `special` are the
    consent's categories that are special categories of data."""
    processing = {
        "lawful_basis": lawful_basis(bool(special)),
        "pii_information": [
            {
                "pii_type": category,
                "special_pii_category": "dpv:SpecialCategoryPersonalData" if category in special else None,
            }
            for category in consent.categories
        ],
        "pii_controllers": [consent.requester_org],
        "recipient_third_parties": list(consent.recipients),
        "jurisdiction": JURISDICTION,
        # GDPR 7(3): withdrawing is as easy as giving (DESIGN.md invariant 3).
        "withdrawal_method": (
            f"in the client portal, {issuer}/portal/, or by telling any organisation named in the consent, "
            "which records the withdrawal at once"
        ),
    }
    return {
        "schema_version": SCHEMA_VERSION,
        "record_id": consent.id,
        "pii_principal_id": consent.person_id,
        "pii_processing": {
            "privacy_notice": {
                "notice_id": f"sha256:{consent.text_sha256}",
                "sha256": consent.text_sha256,
                "version": text.version if text is not None else None,
                "language": consent.language,
            },
            "language": consent.language,
            "purposes": [{"purpose": purpose, **processing} for purpose in consent.purposes],
        },
        "party_identification": _parties(consent, issuer, organisations),
        "event": [_event(consent, e, issuer) for e in events],
        "consent_type": consent_type(consent.explicit),
        "explicit": consent.explicit,
        "written": consent.written,
        "collection_method": {
            "method": consent.method,
            "given_by": consent.given_by,
            "mandate": consent.mandate,
            "witness": consent.witness,
            "recorded_by": consent.recorded_by_org,
        },
        "status": record_status(consent, now),
        "version": consent.version,
        "valid_from": instant(consent.valid_from),
        "valid_until": instant(consent.valid_until) if consent.valid_until else None,
        "bound_to_relationship": consent.bound_to_org,
        "created_at": instant(consent.created_at),
        "withdrawn_at": instant(consent.withdrawn_at) if consent.withdrawn_at else None,
    }


def _parties(consent: ConsentRow, issuer: str, organisations: Mapping[str, tuple[str, str]]) -> list[dict[str, Any]]:
    """27560 6.3.6: the person, their representative when one gave the consent, the organisations named in it, and
    the broker that keeps the record. Persons are named by their opaque ids only (DESIGN.md invariant 6)."""
    parties: list[dict[str, Any]] = [
        {"party_id": consent.person_id, "party_name": None, "party_role": ["dpv:DataSubject"], "party_type": "person"}
    ]
    if consent.given_by == "representative" and consent.representative_id:
        # Who gave a minor's or a ward's consent must be shown years later (GDPR 7(1), 8(1)): by the opaque id.
        parties.append(
            {
                "party_id": consent.representative_id,
                "party_name": None,
                "party_role": ["dpv:Representative"],
                "party_type": "person",
            }
        )
    roles: dict[str, list[str]] = {consent.requester_org: ["dpv:DataController"]}
    for recipient in consent.recipients:
        roles.setdefault(recipient, []).append("dpv:Recipient")
    for org, org_roles in roles.items():
        name, org_type = organisations.get(org, (org, "organisation"))
        parties.append({"party_id": org, "party_name": name, "party_role": org_roles, "party_type": org_type})
    parties.append({"party_id": issuer, "party_name": "Consent Broker", "party_role": [], "party_type": "broker"})
    return parties


def _event(consent: ConsentRow, event: ConsentEventRow, issuer: str) -> dict[str, Any]:
    """27560 6.3.7: when, for how long from then, by whom, what type of consent, and the state it left."""
    if event.action in ENDING:
        validity = "PT0S"  # nothing is permitted from this event on
    else:
        # An ISO 8601 interval from the consent's start; open-ended ("..", ISO 8601-2) until withdrawn.
        end = instant(consent.valid_until) if consent.valid_until else ".."
        validity = f"{instant(consent.valid_from)}/{end}"
    return {
        "event_time": instant(event.at),
        "validity_duration": validity,
        "entity_id": _entity(consent, event, issuer),
        "event_type": consent_type(consent.explicit),
        "event_state": EVENT_STATES.get(event.action, event.action),
        "version": event.version,
        "by": event.by_kind,
    }


def _entity(consent: ConsentRow, event: ConsentEventRow, issuer: str) -> str:
    """Who made the event: the person or their representative by opaque id, a professional by organisation (the
    professional's own id is never shown), the broker by its issuer."""
    if event.by_kind in ("person", "representative") and event.by_actor:
        return event.by_actor
    if event.by_kind == "person":
        return consent.person_id
    return event.by_org or issuer


def consent_record(broker: Broker, caller: Caller, consent_id: str) -> dict[str, Any]:
    """`GET /api/v1/consents/{id}/record`: the 27560 record of a consent in which the caller's organisation is
    requester or recipient (404 otherwise), and the same record signed with the broker's Ed25519 key (verifiable
    with /.well-known/jwks.json)."""
    with broker.uow(write=False) as uow:
        consent, text, events = documented_consent(uow, caller, consent_id)
        organisations = {
            row.id: (row.name, row.org_type)
            for row in uow.session.execute(select(OrganisationRow.id, OrganisationRow.name, OrganisationRow.org_type))
        }
        now = broker.clock.now()
        record = consent_record_document(
            consent,
            text,
            events,
            issuer=broker.settings.issuer,
            organisations=organisations,
            special=special_categories(broker.policy, consent.categories),
            now=now,
        )
    signed = sign_jws(
        {"iss": broker.settings.issuer, "iat": int(now.timestamp()), "record": record}, broker.keys, typ=RECORD_TYP
    )
    return {"consent_id": consent.id, "record": record, "signed_record": signed}
