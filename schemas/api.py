"""API payload schemas (v1). All strict: unknown fields are rejected, in bodies and in query strings."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from marshmallow import INCLUDE, RAISE, Schema, ValidationError, fields, pre_load, validate

ID = validate.Length(min=1, max=40)
NAME = validate.Length(min=1, max=40)
NUL = "\x00"


def _nul_in(value: Any) -> bool:
    if isinstance(value, str):
        return NUL in value
    if isinstance(value, Mapping):
        return any(_nul_in(key) or _nul_in(item) for key, item in value.items())
    if isinstance(value, list | tuple):
        return any(_nul_in(item) for item in value)
    return False


class StrictSchema(Schema):
    class Meta:
        unknown = RAISE

    @pre_load
    def _refuse_nul(self, data: Any, **_: Any) -> Any:
        """No text of the API has a use for U+0000, and PostgreSQL's text cannot hold it: a string that carries it,
        anywhere in the input, is refused here and named, rather than failing in the database."""
        if isinstance(data, Mapping):
            for name in data:
                if _nul_in(name):
                    raise ValidationError("a member name must not contain the character U+0000")
                values = data.getlist(name) if hasattr(data, "getlist") else [data[name]]  # a query string's repeats
                if _nul_in(values):
                    raise ValidationError("must not contain the character U+0000", field_name=name)
        return data


class PersonResolveSchema(StrictSchema):
    # load_only: the identity code is never echoed back (DESIGN.md invariant 6).
    hetu = fields.String(required=True, load_only=True, validate=validate.Length(min=1, max=20))


class PersonSchema(StrictSchema):
    person_id = fields.String(required=True)


class RelationshipSchema(StrictSchema):
    relationship_id = fields.String()
    person_id = fields.String()
    organisation = fields.String()
    started_at = fields.DateTime()
    ended_at = fields.DateTime(allow_none=True)
    active = fields.Boolean()
    created = fields.Boolean()


class RepresentativeCreateSchema(StrictSchema):
    # load_only: the representative's identity code is never echoed back (DESIGN.md invariant 6).
    hetu = fields.String(required=True, load_only=True, validate=validate.Length(min=1, max=20))
    mandate = fields.String(
        required=True,
        validate=validate.OneOf(["custodian", "guardian_personal", "continuing_poa_personal"]),
        metadata={
            "description": "custodian (of a minor); guardian_personal (a guardian whose court order covers personal "
            "matters); continuing_poa_personal (a continuing power of attorney covering personal matters)"
        },
    )
    valid_until = fields.AwareDateTime(load_default=None, allow_none=True, default_timezone=None)


class RepresentationSchema(StrictSchema):
    representation_id = fields.String()
    person_id = fields.String()
    representative_id = fields.String()
    mandate = fields.String()
    valid_from = fields.DateTime()
    valid_until = fields.DateTime(allow_none=True)
    registered_by = fields.String()


class _ConsentTermsSchema(StrictSchema):
    person_id = fields.String(required=True, validate=ID)
    recipients = fields.List(fields.String(validate=ID), required=True, validate=validate.Length(min=1, max=20))
    categories = fields.List(fields.String(validate=NAME), required=True, validate=validate.Length(min=1, max=20))
    purposes = fields.List(fields.String(validate=NAME), required=True, validate=validate.Length(min=1, max=10))


class ConsentRequestCreateSchema(_ConsentTermsSchema):
    valid_days = fields.Integer(load_default=None, allow_none=True, validate=validate.Range(min=1, max=3650))
    reason = fields.String(required=True, validate=validate.Length(min=1, max=1000))


class ConsentRequestSchema(StrictSchema):
    consent_request_id = fields.String()
    person_id = fields.String()
    requester = fields.String()
    recipients = fields.List(fields.String())
    categories = fields.List(fields.String())
    purposes = fields.List(fields.String())
    valid_days = fields.Integer(allow_none=True)
    reason = fields.String()
    status = fields.String()
    created_at = fields.DateTime()
    expires_at = fields.DateTime()
    consent_id = fields.String(allow_none=True)


class ConsentCreateSchema(_ConsentTermsSchema):
    valid_until = fields.AwareDateTime(load_default=None, allow_none=True, default_timezone=None)
    method = fields.String(required=True, validate=validate.OneOf(["in_person", "paper"]))
    witness = fields.String(load_default=None, allow_none=True, validate=validate.Length(min=1, max=200))
    explicit = fields.Boolean(load_default=True)
    written = fields.Boolean(load_default=False)
    bound_to_relationship = fields.Boolean(load_default=False)
    language = fields.String(load_default="fi", validate=validate.OneOf(["fi", "sv", "en"]))


class ConsentSchema(StrictSchema):
    consent_id = fields.String()
    person_id = fields.String()
    version = fields.Integer()
    status = fields.String()
    requester = fields.String()
    recipients = fields.List(fields.String())
    categories = fields.List(fields.String())
    purposes = fields.List(fields.String())
    valid_from = fields.DateTime()
    valid_until = fields.DateTime(allow_none=True)
    bound_to_relationship = fields.Boolean()
    explicit = fields.Boolean()
    written = fields.Boolean()
    method = fields.String()
    given_by = fields.String()
    mandate = fields.String(allow_none=True)
    witness = fields.String(allow_none=True)
    language = fields.String()
    text_sha256 = fields.String()
    created_at = fields.DateTime()
    withdrawn_at = fields.DateTime(allow_none=True)


class ConsentListQuerySchema(StrictSchema):
    person_id = fields.String(required=True, validate=ID)


class ConsentWithdrawSchema(StrictSchema):
    reason = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=1000))


class ConsentReceiptSchema(StrictSchema):
    consent_id = fields.String()
    receipt = fields.String(metadata={"description": "compact JWS (alg Ed25519), verifiable with the JWKS"})


class RecordCreateSchema(StrictSchema):
    person_id = fields.String(required=True, validate=ID)
    category = fields.String(required=True, validate=NAME)
    content = fields.Dict(required=True, metadata={"description": "validated by the category's schema"})


class RecordSchema(StrictSchema):
    record_id = fields.String()
    person_id = fields.String()
    category = fields.String()
    source_organisation = fields.String()
    deposited_at = fields.DateTime()


class ExceptionAssertionSchema(StrictSchema):
    ground = fields.String(required=True, validate=NAME)
    justification = fields.String(required=True, validate=validate.Length(min=10, max=2000))


class DisclosureRequestSchema(StrictSchema):
    person_id = fields.String(required=True, validate=ID)
    category = fields.String(required=True, validate=NAME)
    purpose = fields.String(required=True, validate=NAME)
    exception = fields.Nested(ExceptionAssertionSchema, load_default=None, allow_none=True)


class BasisSchema(StrictSchema):
    kind = fields.String()
    rule = fields.String()
    reference = fields.String()
    lawful_basis = fields.String()
    consent_id = fields.String(allow_none=True)
    consent_version = fields.Integer(allow_none=True)
    exception_ground = fields.String(allow_none=True)


class DisclosedRecordSchema(StrictSchema):
    record_id = fields.String()
    category = fields.String()
    source_organisation = fields.String()
    deposited_at = fields.String()
    basis = fields.Nested(BasisSchema, allow_none=True)
    content = fields.Dict()


class DisclosureSchema(StrictSchema):
    disclosure_id = fields.String()
    person_id = fields.String()
    category = fields.String()
    purpose = fields.String()
    basis = fields.Nested(BasisSchema, allow_none=True)
    obligations = fields.List(fields.String())
    policy_version = fields.String()
    # The append id of the audit entry recording this disclosure; its tree index and inclusion proof follow once
    # the sequencer has integrated it (GET /api/v1/audit/entries?entry_id=…).
    audit_entry_id = fields.Integer()
    records = fields.List(fields.Nested(DisclosedRecordSchema))


class ReasonSchema(StrictSchema):
    rule = fields.String()
    applies = fields.Boolean()
    code = fields.String()
    detail = fields.String()


class DecisionSchema(StrictSchema):
    effect = fields.String()
    basis = fields.Nested(BasisSchema, allow_none=True)
    fields_ = fields.List(fields.String(), data_key="fields", attribute="fields")
    obligations = fields.List(fields.String())
    reasons = fields.List(fields.Nested(ReasonSchema))
    policy_version = fields.String()


class NoticeCreateSchema(StrictSchema):
    person_id = fields.String(required=True, validate=ID)
    kind = fields.String(required=True, validate=NAME)
    recipient = fields.String(required=True, validate=ID)
    purpose = fields.String(load_default=None, allow_none=True, validate=NAME)
    content = fields.Dict(required=True)


class NoticeSentSchema(StrictSchema):
    notice_id = fields.String()
    person_id = fields.String()
    kind = fields.String()
    recipient = fields.String()
    basis = fields.Nested(BasisSchema, allow_none=True)
    fields_ = fields.List(fields.String(), data_key="fields", attribute="fields")
    created_at = fields.DateTime()


class NoticeSchema(StrictSchema):
    notice_id = fields.String()
    person_id = fields.String()
    kind = fields.String()
    sender = fields.String(allow_none=True, metadata={"description": "null when the broker itself sent it"})
    basis = fields.Nested(BasisSchema, allow_none=True)
    content = fields.Dict()
    created_at = fields.DateTime()
    acknowledged_at = fields.DateTime(allow_none=True)


class InboxQuerySchema(StrictSchema):
    include_acknowledged = fields.Boolean(load_default=False)
    limit = fields.Integer(load_default=100, validate=validate.Range(min=1, max=500))


# -- the audit log (scope audit:read) -----------------------------------------------------------------------------


class CheckpointSchema(StrictSchema):
    origin = fields.String()
    tree_size = fields.Integer()
    root_hash = fields.String(metadata={"description": "standard base64 of the RFC 9162 root hash"})
    note = fields.String(metadata={"description": "the C2SP signed-note holding the C2SP tlog-checkpoint"})
    signed_at = fields.DateTime()
    exported_at = fields.DateTime(allow_none=True)
    verifier_keys = fields.List(fields.String(), metadata={"description": "note verifier keys, oldest first"})


# Tree sizes and indices are stored as signed 64-bit integers (PostgreSQL bigint, SQLite INTEGER).
MAX_INDEX = 2**63 - 1


class InclusionQuerySchema(StrictSchema):
    index = fields.Integer(required=True, validate=validate.Range(min=0, max=MAX_INDEX))
    tree_size = fields.Integer(required=True, validate=validate.Range(min=1, max=MAX_INDEX))


class InclusionProofSchema(StrictSchema):
    index = fields.Integer()
    tree_size = fields.Integer()
    leaf_hash = fields.String()
    inclusion_path = fields.List(fields.String(), metadata={"description": "RFC 9162 §2.1.3.1, base64"})


class ConsistencyQuerySchema(StrictSchema):
    first = fields.Integer(required=True, validate=validate.Range(min=1, max=MAX_INDEX))
    second = fields.Integer(required=True, validate=validate.Range(min=1, max=MAX_INDEX))


class ConsistencyProofSchema(StrictSchema):
    first = fields.Integer()
    second = fields.Integer()
    consistency_path = fields.List(fields.String(), metadata={"description": "RFC 9162 §2.1.4.1, base64"})


class EntryQuerySchema(StrictSchema):
    person_id = fields.String(validate=ID)
    organisation = fields.String(validate=ID)
    event = fields.String(validate=validate.Length(min=1, max=40))
    category = fields.String(validate=NAME)
    purpose = fields.String(validate=NAME)
    effect = fields.String(validate=validate.OneOf(["permit", "deny"]))
    basis_kind = fields.String(validate=validate.Length(min=1, max=20))
    since = fields.AwareDateTime()
    until = fields.AwareDateTime()
    # A search is itself logged with its filters, and log entries are I-JSON, whose integers stay within
    # ±(2**53 - 1) (RFC 7493 §2.2); no entry id the log can name lies beyond that either.
    entry_id = fields.Integer(validate=validate.Range(min=1, max=2**53 - 1))
    cursor = fields.String(validate=validate.Regexp(r"^[0-9]{1,19}$", error="not a cursor from a previous page"))
    limit = fields.Integer(load_default=100, validate=validate.Range(min=1, max=500))


class AuditEntrySchema(StrictSchema):
    entry_id = fields.Integer()
    index = fields.Integer(allow_none=True, metadata={"description": "tree index; null until sequenced"})
    leaf_hash = fields.String(allow_none=True)
    canonical = fields.String(metadata={"description": "the RFC 8785 bytes the leaf hashes"})
    entry = fields.Dict()


class AuditEntryPageSchema(StrictSchema):
    entries = fields.List(fields.Nested(AuditEntrySchema))
    next_cursor = fields.String(allow_none=True)


class ProblemSchema(Schema):
    """RFC 9457 problem details, with the broker's stable `code`. A problem type may carry extension members
    (RFC 9457 §3.2): a refused disclosure names its `disclosure_id` and `decision`, for one."""

    class Meta:
        unknown = INCLUDE  # documented as `additionalProperties: true`: extension members are allowed

    type = fields.String()
    title = fields.String()
    status = fields.Integer()
    detail = fields.String()
    code = fields.String()
    field = fields.String()
    errors = fields.Dict()
    request_id = fields.String(metadata={"description": "the request's X-Request-Id, to quote when reporting it"})


# -- withdrawal attestations (scope consents; docs/withdrawal.md) -------------------------------------------------


class AttestationCreateSchema(StrictSchema):
    outcome = fields.String(required=True, validate=validate.OneOf(["deleted", "retained"]))
    # Checked by the use case against the statutes that require keeping client records, so that a wrong one is
    # answered with the accepted values (code `unknown_statute`).
    statute = fields.String(
        load_default=None,
        allow_none=True,
        validate=validate.Length(min=1, max=200),
        metadata={
            "description": "required with `retained`, and only then: the statute that requires keeping the data, as "
            "its number in the statute book — 703/2023, 380/2023, 381/2023, 785/1992, 94/2022 or 831/1994"
        },
    )
    note = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=2000))


class AttestationSchema(StrictSchema):
    attestation_id = fields.String()
    consent_id = fields.String()
    person_id = fields.String()
    organisation = fields.String()
    event_id = fields.String(allow_none=True, metadata={"description": "the consent.withdrawn event that asked"})
    requested_at = fields.DateTime()
    due_at = fields.DateTime()
    status = fields.String(metadata={"description": "pending | overdue | deleted | retained"})
    outcome = fields.String(allow_none=True)
    statute = fields.String(allow_none=True)
    note = fields.String(allow_none=True)
    answered_at = fields.DateTime(allow_none=True)
    late = fields.Boolean(metadata={"description": "answered after the due date"})


class AttestationListQuerySchema(StrictSchema):
    status = fields.String(load_default="open", validate=validate.OneOf(["open", "answered", "all"]))
    limit = fields.Integer(load_default=100, validate=validate.Range(min=1, max=500))


# -- events and webhook endpoints (scope webhooks; docs/webhooks.md) -------------------------------------------------

CURSOR = validate.Regexp(r"^[0-9]{1,19}$", error="not a cursor from a previous page")
DELIVERY_STATUS = validate.OneOf(["pending", "delivered", "failed"])


class WebhookCreateSchema(StrictSchema):
    url = fields.String(
        required=True,
        validate=validate.Length(min=1, max=2000),
        metadata={
            "description": "where events are POSTed: an https URL without user name, password or fragment; plain http "
            "only to a loopback host in demo and test mode"
        },
    )
    events = fields.List(
        fields.String(validate=validate.Length(min=1, max=40)),
        required=True,
        validate=validate.Length(min=1, max=20),
        metadata={"description": "the event types to send here (docs/webhooks.md); duplicates are ignored"},
    )


class DeliveryCountsSchema(StrictSchema):
    pending = fields.Integer()
    delivered = fields.Integer()
    failed = fields.Integer()


class WebhookSchema(StrictSchema):
    webhook_id = fields.String()
    organisation = fields.String()
    url = fields.String()
    events = fields.List(fields.String())
    active = fields.Boolean()
    registered_by = fields.String(metadata={"description": "the partner system that registered it"})
    created_at = fields.DateTime()
    disabled_at = fields.DateTime(allow_none=True)
    deliveries = fields.Nested(DeliveryCountsSchema)


class WebhookTestSchema(StrictSchema):
    event_id = fields.String(metadata={"description": "the `jti` of the `webhook.test` token sent"})
    delivered = fields.Boolean()
    status = fields.Integer(allow_none=True, metadata={"description": "the receiver's HTTP status; null: no answer"})
    error = fields.String(allow_none=True)
    elapsed_ms = fields.Integer()


class DeliveryQuerySchema(StrictSchema):
    status = fields.String(validate=DELIVERY_STATUS)
    cursor = fields.String(validate=CURSOR)
    limit = fields.Integer(load_default=100, validate=validate.Range(min=1, max=500))


class AuditDeliveryQuerySchema(DeliveryQuerySchema):
    status = fields.String(load_default="failed", validate=DELIVERY_STATUS)
    organisation = fields.String(validate=ID)


class DeliverySchema(StrictSchema):
    delivery_id = fields.String()
    webhook_id = fields.String()
    event_id = fields.String()
    type = fields.String()
    organisation = fields.String()
    status = fields.String(metadata={"description": "pending | delivered | failed"})
    attempts = fields.Integer()
    next_attempt_at = fields.DateTime(allow_none=True)
    last_attempt_at = fields.DateTime(allow_none=True)
    last_status = fields.Integer(allow_none=True)
    last_error = fields.String(allow_none=True)
    delivered_at = fields.DateTime(allow_none=True)
    created_at = fields.DateTime()


class DeliveryPageSchema(StrictSchema):
    deliveries = fields.List(fields.Nested(DeliverySchema))
    next_cursor = fields.String(allow_none=True)


class EventQuerySchema(StrictSchema):
    after = fields.String(validate=CURSOR, metadata={"description": "a `next_cursor` from an earlier page"})
    limit = fields.Integer(load_default=100, validate=validate.Range(min=1, max=500))
    tokens = fields.Boolean(load_default=False, metadata={"description": "add each event's signed token"})


class EventSchema(StrictSchema):
    event_id = fields.String(metadata={"description": "the token's `jti`: de-duplicate on it"})
    type = fields.String()
    organisation = fields.String()
    person_id = fields.String(allow_none=True)
    data = fields.Dict()
    occurred_at = fields.DateTime()
    token = fields.String(metadata={"description": "the Security Event Token (RFC 8417), with `tokens=true`"})


class EventPageSchema(StrictSchema):
    events = fields.List(fields.Nested(EventSchema))
    next_cursor = fields.String(allow_none=True, metadata={"description": "pass as `after` to read on"})
    has_more = fields.Boolean()
