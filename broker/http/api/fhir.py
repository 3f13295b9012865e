"""Consents and disclosures in standard forms: FHIR R4 searches (Consent, AuditEvent) answered as Bundles, and a
consent's ISO/IEC TS 27560 consent record (docs/api.md, "FHIR" and "Consent records").

FHIR answers are `application/fhir+json` (R4 http.html#mime-type); errors stay RFC 9457 problem documents with a
stable `code`, like every other answer of the API."""

from __future__ import annotations

import json
from typing import Any

from flask import Response
from flask.views import MethodView
from marshmallow import RAISE

from broker.http.api import current_broker, current_caller
from broker.http.api.views import _responses, blp
from broker.oauth import require_scope
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


@blp.route("/consents/<consent_id>/record")
class ConsentRecord(MethodView):
    @require_scope("consents")
    @blp.response(200, r.ConsentRecordSchema)
    @_responses(401, 403, 404)
    def get(self, consent_id: str) -> dict[str, Any]:
        """The consent as an ISO/IEC TS 27560:2023 consent record, and the same record signed (compact JWS, typ
        consent-record+jws, verifiable with /.well-known/jwks.json)."""
        return consent_record.consent_record(current_broker(), current_caller(), consent_id)
