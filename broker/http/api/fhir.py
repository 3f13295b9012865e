"""Consents and disclosures in standard forms: FHIR R4 Consent and AuditEvent — searches answered as Bundles, reads
by id, and the server's capability statement — and a consent's ISO/IEC TS 27560 consent record (docs/api.md, "FHIR"
and "Consent records").

FHIR answers are `application/fhir+json` (R4 http.html#mime-type). Errors stay RFC 9457 problem documents with a
stable `code`, like every other answer of the API, whatever the request's `Accept`: R4 lets an error carry an
OperationOutcome but does not require one (http.html, "HTTP Status Codes"), and RFC 9110 §12.5.1 lets a server
disregard `Accept` rather than answer 406. One error format keeps the broker's own client (broker/client), which asks
for FHIR's media type and reads the problem's `code` — to renew a token, to use a DPoP nonce — working unchanged."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from flask import Response
from flask.views import MethodView
from marshmallow import RAISE

from broker.http.api import current_broker, current_caller
from broker.http.api.views import _responses, blp
from broker.oauth import require_scope
from broker.oauth.metadata import METADATA_PATH, TOKEN_PATH
from broker.services import consent_record, fhir
from schemas import consent_record as r
from schemas import fhir as f


def _fhir_response(document: dict[str, Any]) -> Response:
    return Response(json.dumps(document, ensure_ascii=False, separators=(",", ":")), mimetype=f.MEDIA_TYPE)


@blp.route("/fhir/Consent")
class FhirConsents(MethodView):
    @require_scope("consents")
    @blp.arguments(f.FhirSearchQuerySchema(), location="query", unknown=RAISE)
    @blp.response(200, f.BundleSchema, content_type=f.MEDIA_TYPE)
    @_responses(400, 401, 403, 404)
    def get(self, query: dict[str, Any]) -> Response:
        """The person's consents in which the calling organisation is requester or recipient, as FHIR R4 Consent
        resources in a searchset Bundle."""
        return _fhir_response(fhir.search_consents(current_broker(), current_caller(), query["patient"]))


@blp.route("/fhir/AuditEvent")
class FhirAuditEvents(MethodView):
    @require_scope("audit:read", "disclosures")
    @blp.arguments(f.FhirSearchQuerySchema(), location="query", unknown=RAISE)
    @blp.response(200, f.BundleSchema, content_type=f.MEDIA_TYPE)
    @_responses(400, 401, 403, 404)
    def get(self, query: dict[str, Any]) -> Response:
        """The person's disclosures and refused requests as FHIR R4 AuditEvent resources (IHE BALP, privacy
        disclosure) in a searchset Bundle: all of them for a data-protection officer's system (scope `audit:read`),
        for a partner (scope `disclosures`) those made to its organisation or by its system. The read is logged."""
        return _fhir_response(fhir.search_audit_events(current_broker(), current_caller(), query["patient"]))


# The id of a read is the resource's FHIR id, as the Bundles' `fullUrl`s end with it.
_RESOURCE_ID = {
    "in": "path",
    "name": "resource_id",
    "description": "the resource's FHIR id: the broker's id with `-` for `_` (`con-…`, `dis-…`, `not-…`)",
}


@blp.route("/fhir/Consent/<resource_id>", parameters=[_RESOURCE_ID])
class FhirConsent(MethodView):
    @require_scope("consents")
    @blp.response(
        200,
        f.FhirConsentSchema,
        content_type=f.MEDIA_TYPE,
        headers={
            "ETag": {"description": 'the consent\'s version, `W/"<meta.versionId>"`', "schema": {"type": "string"}},
            "Last-Modified": {"description": "`meta.lastUpdated`", "schema": {"type": "string"}},
        },
    )
    @_responses(401, 403, 404)
    def get(self, resource_id: str) -> Response:
        """A consent in which the calling organisation is requester or recipient, as a FHIR R4 Consent (the read
        interaction); any other id is 404."""
        resource = fhir.read_consent(current_broker(), current_caller(), resource_id)
        response = _fhir_response(resource)
        # R4 http.html#read: "Servers SHOULD return an ETag header with the versionId of the resource (if versioning
        # is supported) and a Last-Modified header"; the ETag is weak, W/"<versionId>" (http.html#versioning).
        response.set_etag(resource["meta"]["versionId"], weak=True)
        response.last_modified = datetime.fromisoformat(resource["meta"]["lastUpdated"])
        return response


@blp.route("/fhir/AuditEvent/<resource_id>", parameters=[_RESOURCE_ID])
class FhirAuditEvent(MethodView):
    @require_scope("audit:read", "disclosures")
    @blp.response(200, f.FhirAuditEventSchema, content_type=f.MEDIA_TYPE)
    @_responses(401, 403, 404)
    def get(self, resource_id: str) -> Response:
        """One disclosure or refused request as a FHIR R4 AuditEvent (the read interaction): any, for a
        data-protection officer's system (scope `audit:read`); for a partner (scope `disclosures`) one made to its
        organisation or by its system, any other id being 404. The read is logged."""
        return _fhir_response(fhir.read_audit_event(current_broker(), current_caller(), resource_id))


@blp.route("/fhir/metadata")
class FhirMetadata(MethodView):
    # FHIR servers publish their capability statement to anyone (R4 http.html#capabilities): it says how to
    # authenticate, so asking for it cannot need a token. A token sent anyway is not looked at.
    @blp.doc(security=[])
    @blp.response(200, f.CapabilityStatementSchema, content_type=f.MEDIA_TYPE)
    @_responses()
    def get(self) -> Response:
        """The FHIR R4 CapabilityStatement of this server: the resources, interactions and search parameters it
        supports, and how to authenticate. No token needed."""
        issuer = current_broker().settings.issuer
        statement = fhir.capability_statement(
            fhir.Names(issuer),
            token_endpoint=issuer + TOKEN_PATH,
            server_metadata=issuer + METADATA_PATH,
            software_version=fhir.software_version(),
        )
        response = _fhir_response(statement)
        # The same for everyone and nothing about a person: cacheable, like the OAuth metadata and the JWKS.
        response.headers["Cache-Control"] = "public, max-age=300"
        return response


@blp.route("/consents/<consent_id>/record")
class ConsentRecord(MethodView):
    @require_scope("consents")
    @blp.response(200, r.ConsentRecordSchema)
    @_responses(401, 403, 404)
    def get(self, consent_id: str) -> dict[str, Any]:
        """The consent as an ISO/IEC TS 27560:2023 consent record, and the same record signed (compact JWS, typ
        consent-record+jws, verifiable with /.well-known/jwks.json)."""
        return consent_record.consent_record(current_broker(), current_caller(), consent_id)
