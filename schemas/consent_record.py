"""A consent as an ISO/IEC TS 27560:2023 consent record (broker/services/consent_record.py): the answer of
`GET /api/v1/consents/{consent_id}/record`. Field names are 27560's (clause 6.3); values are DPV concepts
(`dpv:` = w3id.org/dpv#, `eu-gdpr:` = w3id.org/dpv/legal/eu/gdpr#) or the broker's own codes. Times are the
strings the signed record holds, so that the record and its signed copy are the same JSON."""

from __future__ import annotations

from marshmallow import fields

from schemas.api import StrictSchema


class PrivacyNoticeSchema(StrictSchema):
    notice_id = fields.String(metadata={"description": "`sha256:` and the SHA-256 of the exact text shown"})
    sha256 = fields.String()
    version = fields.String(allow_none=True)
    language = fields.String()


class PiiInformationSchema(StrictSchema):
    pii_type = fields.String(
        metadata={"description": "a record category of the policy (policies/rules/vocabulary.yaml)"}
    )
    special_pii_category = fields.String(
        allow_none=True, metadata={"description": "`dpv:SpecialCategoryPersonalData` for GDPR Art. 9 data"}
    )


class ProcessingPurposeSchema(StrictSchema):
    purpose = fields.String()
    lawful_basis = fields.List(fields.String(), metadata={"description": "`eu-gdpr:A6-1-a`, with `eu-gdpr:A9-2-a`"})
    pii_information = fields.List(fields.Nested(PiiInformationSchema))
    pii_controllers = fields.List(fields.String())
    recipient_third_parties = fields.List(fields.String())
    jurisdiction = fields.String()
    withdrawal_method = fields.String()


class PiiProcessingSchema(StrictSchema):
    privacy_notice = fields.Nested(PrivacyNoticeSchema)
    language = fields.String()
    purposes = fields.List(fields.Nested(ProcessingPurposeSchema))


class PartySchema(StrictSchema):
    party_id = fields.String()
    party_name = fields.String(allow_none=True)
    party_role = fields.List(fields.String())
    party_type = fields.String()


class ConsentRecordEventSchema(StrictSchema):
    event_time = fields.String()
    validity_duration = fields.String(metadata={"description": "an ISO 8601 interval, or PT0S after the end"})
    entity_id = fields.String()
    event_type = fields.String()
    event_state = fields.String(metadata={"description": "`dpv:ConsentGiven`, `dpv:ConsentWithdrawn`, …"})
    version = fields.Integer()
    by = fields.String(metadata={"description": "person, representative, professional or system"})


class CollectionMethodSchema(StrictSchema):
    method = fields.String(metadata={"description": "portal, in_person or paper"})
    given_by = fields.String()
    mandate = fields.String(allow_none=True)
    witness = fields.String(allow_none=True)
    recorded_by = fields.String(allow_none=True)


class ConsentRecordDocumentSchema(StrictSchema):
    schema_version = fields.String()
    record_id = fields.String()
    pii_principal_id = fields.String()
    pii_processing = fields.Nested(PiiProcessingSchema)
    party_identification = fields.List(fields.Nested(PartySchema))
    event = fields.List(fields.Nested(ConsentRecordEventSchema))
    consent_type = fields.String()
    explicit = fields.Boolean()
    written = fields.Boolean()
    collection_method = fields.Nested(CollectionMethodSchema)
    status = fields.String()
    version = fields.Integer()
    valid_from = fields.String()
    valid_until = fields.String(allow_none=True)
    bound_to_relationship = fields.String(allow_none=True)
    created_at = fields.String()
    withdrawn_at = fields.String(allow_none=True)


class ConsentRecordSchema(StrictSchema):
    consent_id = fields.String()
    record = fields.Nested(ConsentRecordDocumentSchema)
    signed_record = fields.String(
        metadata={"description": "the same record signed: compact JWS (alg Ed25519, typ consent-record+jws)"}
    )
