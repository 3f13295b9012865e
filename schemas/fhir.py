"""The FHIR API's query and the shape of its answers as the OpenAPI document describes them (broker/http/api/fhir.py).

An answer is a FHIR R4 Bundle (media type application/fhir+json, R4 http.html#mime-type); the resources in it are
FHIR's own Consent and AuditEvent (R4 consent.html, auditevent.html), described by the FHIR specification rather
than here. The views answer the Bundle as the service made it; these schemas document it."""

from __future__ import annotations

from marshmallow import fields, validate

from schemas.api import StrictSchema

#: The media type of FHIR's JSON (R4 http.html#mime-type).
MEDIA_TYPE = "application/fhir+json"


class FhirSearchQuerySchema(StrictSchema):
    # R4 search.html#reference: a reference parameter takes `[type]/[id]` or the id alone. The id may be the
    # resource's (`per-…`) or the broker's (`per_…`); "Patient/" and a 32-digit id fit in 60 characters.
    patient = fields.String(
        required=True,
        validate=validate.Length(min=1, max=60),
        metadata={"description": "the person: `Patient/per-…`, `per-…` or the broker's `per_…`"},
    )


class BundleLinkSchema(StrictSchema):
    relation = fields.String()
    url = fields.String()


class BundleSearchSchema(StrictSchema):
    mode = fields.String(metadata={"description": "`match`: the entry matched the search"})


class BundleEntrySchema(StrictSchema):
    full_url = fields.String(data_key="fullUrl")
    resource = fields.Dict(metadata={"description": "a FHIR R4 Consent or AuditEvent resource"})
    search = fields.Nested(BundleSearchSchema)


class BundleSchema(StrictSchema):
    resource_type = fields.String(data_key="resourceType", metadata={"description": "`Bundle`"})
    type = fields.String(metadata={"description": "`searchset`"})
    timestamp = fields.String(metadata={"description": "when the Bundle was assembled (FHIR instant)"})
    total = fields.Integer(metadata={"description": "how many resources matched; all are in `entry`"})
    link = fields.List(fields.Nested(BundleLinkSchema))
    entry = fields.List(fields.Nested(BundleEntrySchema))


# A resource's members are documented one level deep: each is a FHIR R4 element, whose datatype (CodeableConcept,
# Reference, Period, …) the specification describes (R4 datatypes.html). Every member the broker fills in is named,
# so that a member it does not document cannot appear.


class FhirConsentSchema(StrictSchema):
    """A FHIR R4 Consent (R4 consent.html)."""

    resource_type = fields.String(data_key="resourceType", metadata={"description": "`Consent`"})
    id = fields.String(metadata={"description": "the consent id with `-` for `_` (`con-…`)"})
    meta = fields.Dict(metadata={"description": "`versionId`: the consent's version; `lastUpdated`: its last change"})
    extension = fields.List(
        fields.Dict(),
        metadata={"description": "`withdrawn-at`, `consent-method`, `explicit`, `written`, `bound-to-relationship`"},
    )
    identifier = fields.List(fields.Dict(), metadata={"description": "the broker's consent id (`con_…`)"})
    status = fields.String(metadata={"description": "`active` or `inactive` (R4 consent-state-codes)"})
    scope = fields.Dict(metadata={"description": "`patient-privacy`"})
    category = fields.List(fields.Dict(), metadata={"description": "LOINC 59284-0 and 64292-6"})
    patient = fields.Dict(metadata={"description": "the person: `Patient/per-…`, with the broker's id"})
    date_time = fields.String(data_key="dateTime", metadata={"description": "when it was given"})
    performer = fields.List(fields.Dict(), metadata={"description": "who agreed: the person or a representative"})
    organization = fields.List(fields.Dict(), metadata={"description": "the organisation that asked or recorded it"})
    source_attachment = fields.Dict(data_key="sourceAttachment", metadata={"description": "the exact text shown"})
    policy_rule = fields.Dict(data_key="policyRule", metadata={"description": "the GDPR articles it rests on"})
    provision = fields.Dict(
        metadata={"description": "one `permit`: the term, the recipients, `disclose`, the purposes and categories"}
    )


class FhirAuditEventSchema(StrictSchema):
    """A FHIR R4 AuditEvent (R4 auditevent.html), after IHE BALP's Privacy Disclosure at Source."""

    resource_type = fields.String(data_key="resourceType", metadata={"description": "`AuditEvent`"})
    id = fields.String(metadata={"description": "the disclosure's id with `-` for `_` (`dis-…`, `not-…`)"})
    type = fields.Dict(metadata={"description": "DICOM 110106 Export"})
    subtype = fields.List(fields.Dict(), metadata={"description": "ISO 21089 `disclose`, and `request` or `notice`"})
    action = fields.String(metadata={"description": "`R`"})
    recorded = fields.String(metadata={"description": "when the broker decided"})
    outcome = fields.String(metadata={"description": "`0` permitted, `4` refused"})
    outcome_desc = fields.String(data_key="outcomeDesc", metadata={"description": "why it was refused"})
    purpose_of_event = fields.List(fields.Dict(), data_key="purposeOfEvent", metadata={"description": "the purpose"})
    agent = fields.List(
        fields.Dict(),
        metadata={
            "description": "the broker, the recipient, the custodians, the authorizer, the partner system and the "
            "professional (as the log's commitment)"
        },
    )
    source = fields.Dict(metadata={"description": "the broker as observer"})
    entity = fields.List(
        fields.Dict(),
        metadata={"description": "the patient, what was asked for or sent, the records, the basis, the log entry"},
    )


class CapabilityStatementSchema(StrictSchema):
    """A FHIR R4 CapabilityStatement (R4 capabilitystatement.html) of kind `instance`."""

    resource_type = fields.String(data_key="resourceType", metadata={"description": "`CapabilityStatement`"})
    url = fields.String()
    version = fields.String(metadata={"description": "the broker's version"})
    name = fields.String()
    title = fields.String()
    status = fields.String(metadata={"description": "`active`"})
    date = fields.String(metadata={"description": "when the statement last changed"})
    description = fields.String()
    kind = fields.String(metadata={"description": "`instance`"})
    software = fields.Dict()
    implementation = fields.Dict(metadata={"description": "`url`: the FHIR base URL"})
    fhir_version = fields.String(data_key="fhirVersion", metadata={"description": "`4.0.1`"})
    format = fields.List(fields.String(), metadata={"description": "`json`"})
    rest = fields.List(
        fields.Dict(),
        metadata={
            "description": "one `server`: its security (OAuth) and its resources, Consent and AuditEvent, each with "
            "`read`, `search-type` and the search parameter `patient`"
        },
    )
