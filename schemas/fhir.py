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
