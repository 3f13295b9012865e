"""Routes of the partner API. Each view checks the token's scope, calls one use case and dumps its result.

Request schemas are given to `blp.arguments` as instances, built once here: given a class, webargs builds a new
schema (a deep copy of every field) for each request. A marshmallow schema keeps no state between `load` calls —
`unknown`, `partial` and `many` are passed per call or fixed at construction — so one instance serves them all.
(`blp.response` builds its schema once either way.)"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

from flask import Response, request
from flask.views import MethodView
from flask_smorest import Api, Blueprint
from marshmallow import RAISE
from webargs.flaskparser import FlaskParser

from broker.domain.errors import NotFoundError
from broker.http.api import current_broker, current_caller, disclosure_io
from broker.http.api.idempotency import idempotent_for
from broker.oauth import require_scope
from broker.services import consents, disclosures, notices, persons, records
from schemas import api as s


class _Parser(FlaskParser):
    # A request that fails its schema is answered 400 (broker/http/errors.py), so that is the status flask-smorest
    # documents for it too, not webargs' default 422 (which the broker answers only to an Idempotency-Key reused
    # with another request).
    DEFAULT_VALIDATION_STATUS = 400


class ApiBlueprint(Blueprint):
    ARGUMENTS_PARSER = _Parser()


class PartnerApi(Api):
    """flask-smorest's Api without its catch-all `default` response, which would promise flask-smorest's own error
    body (the broker answers problem documents) and would cover any status: each operation lists every status it
    answers (`_responses`), so one it does not list is a documentation bug that the API fuzz reports
    (tests/integration/test_api_fuzz.py)."""

    DEFAULT_ERROR_RESPONSE_NAME = None


blp = ApiBlueprint("api", __name__, url_prefix="/api/v1", description="Consent Broker partner API")

PROBLEMS = {
    "400": "invalid request",
    "401": "no valid access token",
    "403": "forbidden",
    "404": "not found",
    "409": "the object's state does not allow it, or a request with this Idempotency-Key is still being processed "
    "(the problem's `code` says which)",
    "413": "the request body is larger than the broker accepts",
    "414": "the request line is too long",
    "429": "too many requests from this partner (or, unauthenticated, this address); see Retry-After",
    "431": "too many header fields, or too large ones",
    "503": "the broker cannot serve the request now (its database, or the audit log's anchoring); see Retry-After",
}
# What any operation may answer besides its own outcomes (docs/api.md, "Errors"): the abuse limits
# (broker/http/limits.py) and an unavailable database or audit anchor (broker/http/errors.py).
EVERY_OPERATION = (413, 414, 429, 431, 503)
# Every write accepts an Idempotency-Key (broker/http/api/idempotency.py): a retry gets the first answer back.
idempotent = idempotent_for(blp)

View = TypeVar("View", bound=Callable[..., Any])


@blp.before_request
def _refuse_nul_in_path() -> None:
    """An id with U+0000 names no object, and PostgreSQL's text cannot hold it (bodies and query strings are refused
    by their schemas, schemas/api.py)."""
    if any(isinstance(value, str) and s.NUL in value for value in (request.view_args or {}).values()):
        raise NotFoundError("no object has an id with the character U+0000")


def _documented(*decorators: Callable[[Any], Any]) -> Callable[[View], View]:
    """The OpenAPI documentation that flask-smorest's `decorators` would give the view (listed top to bottom, as they
    would be stacked), without their wrappers: the view itself is returned, carrying their `_apidoc`.

    Each flask-smorest decorator wraps the view in a function that calls `current_app.ensure_sync` and so
    `inspect.iscoroutinefunction` on every request, and keeps its documentation in the wrapper's `_apidoc` — which
    the next decorator (through `functools.wraps`) and `Blueprint.route` read. Applying them to the view and keeping
    only that attribute gives the same document, and no call at run time. Use it only for decorators that document
    (`alt_response`, `doc`), or for a view that does the work of the others itself (`Disclosures.post`)."""

    def decorate(view: View) -> View:
        documented: Any = view
        for decorator in reversed(decorators):
            documented = decorator(documented)
        view._apidoc = documented._apidoc  # type: ignore[attr-defined]
        return view

    return decorate


def _responses(*codes: int) -> Callable[[View], View]:
    """Document the problem responses of an operation (`codes`, then EVERY_OPERATION's, in the order the document
    lists them), with no wrapper at run time (`_documented`)."""
    problems = [
        blp.alt_response(
            code,
            schema=s.ProblemSchema,
            description=PROBLEMS.get(str(code), ""),
            content_type="application/problem+json",
        )
        for code in (*codes, *EVERY_OPERATION)
    ]
    # As stacked decorators the first code was applied first, innermost: it is the last one listed.
    return _documented(*reversed(problems))


@blp.route("/persons/resolve")
class PersonResolve(MethodView):
    @require_scope("persons")
    @idempotent
    @blp.arguments(s.PersonResolveSchema())
    @blp.response(200, s.PersonSchema)
    @_responses(400, 401, 403)
    def post(self, body: dict[str, Any]) -> dict[str, Any]:
        """Find a person by identity code; the person is created on first sight."""
        return {"person_id": persons.resolve_person(current_broker(), current_caller(), body["hetu"])}


@blp.route("/persons/<person_id>/relationships")
class RelationshipStart(MethodView):
    @require_scope("persons")
    @idempotent
    @blp.response(200, s.RelationshipSchema)
    @_responses(400, 401, 403, 404)  # 400: a malformed Idempotency-Key
    def post(self, person_id: str) -> dict[str, Any]:
        """The calling organisation starts serving the person (a service relationship)."""
        return persons.start_relationship(current_broker(), current_caller(), person_id)


@blp.route("/persons/<person_id>/relationships/end")
class RelationshipEnd(MethodView):
    @require_scope("persons")
    @idempotent
    @blp.response(200, s.RelationshipSchema)
    @_responses(400, 401, 403, 404, 409)  # 400: a malformed Idempotency-Key; 409: no relationship to end
    def post(self, person_id: str) -> dict[str, Any]:
        """The calling organisation stops serving the person; consents bound to the relationship end."""
        return persons.end_relationship(current_broker(), current_caller(), person_id)


@blp.route("/persons/<person_id>/representatives")
class Representatives(MethodView):
    @require_scope("persons")
    @idempotent
    @blp.arguments(s.RepresentativeCreateSchema())
    @blp.response(201, s.RepresentationSchema)
    @_responses(400, 401, 403, 404, 409)  # 409: the organisation does not serve the person
    def post(self, body: dict[str, Any], person_id: str) -> dict[str, Any]:
        """Register a mandate the calling organisation has verified: the person with identity code `hetu` (created
        on first sight) may act for this person in the portal — a custodian for a minor, a guardian or attorney for
        personal matters for an adult."""
        return persons.register_representative(
            current_broker(),
            current_caller(),
            person_id,
            hetu=body["hetu"],
            mandate=body["mandate"],
            valid_until=body["valid_until"],
        )


@blp.route("/consent-requests")
class ConsentRequests(MethodView):
    @require_scope("consents")
    @idempotent
    @blp.arguments(s.ConsentRequestCreateSchema())
    @blp.response(201, s.ConsentRequestSchema)
    @_responses(400, 401, 403, 404)
    def post(self, body: dict[str, Any]) -> dict[str, Any]:
        """Ask the person for a consent; the person answers in the portal."""
        return consents.request_consent(
            current_broker(),
            current_caller(),
            body["person_id"],
            recipients=body["recipients"],
            categories=body["categories"],
            purposes=body["purposes"],
            valid_days=body["valid_days"],
            reason=body["reason"],
        )


@blp.route("/consents")
class Consents(MethodView):
    @require_scope("consents")
    @idempotent
    @blp.arguments(s.ConsentCreateSchema())
    @blp.response(201, s.ConsentSchema)
    @_responses(400, 401, 403, 404)
    def post(self, body: dict[str, Any]) -> dict[str, Any]:
        """Record a consent the person gave in person (with a witness) or on paper."""
        terms = consents.ConsentTerms(
            recipients=body["recipients"],
            categories=body["categories"],
            purposes=body["purposes"],
            valid_until=body["valid_until"],
            bound_to_relationship=body["bound_to_relationship"],
            explicit=body["explicit"],
            written=body["written"],
            language=body["language"],
        )
        return consents.record_consent(
            current_broker(), current_caller(), body["person_id"], terms, method=body["method"], witness=body["witness"]
        )

    @require_scope("consents")
    @blp.arguments(s.ConsentListQuerySchema(), location="query", unknown=RAISE)
    @blp.response(200, s.ConsentSchema(many=True))
    @_responses(400, 401, 403, 404)
    def get(self, query: dict[str, Any]) -> list[dict[str, Any]]:
        """Consents of the person in which the calling organisation is requester or recipient."""
        return consents.list_consents(current_broker(), current_caller(), query["person_id"])


@blp.route("/consents/<consent_id>/withdraw")
class ConsentWithdraw(MethodView):
    @require_scope("consents")
    @idempotent
    @blp.arguments(s.ConsentWithdrawSchema())
    @blp.response(200, s.ConsentSchema)
    @_responses(400, 401, 403, 404, 409)  # 409: the consent is no longer active
    def post(self, body: dict[str, Any], consent_id: str) -> dict[str, Any]:
        """Record a withdrawal the person made to a professional; effective for every later request."""
        return consents.withdraw_consent(current_broker(), current_caller(), consent_id, reason=body["reason"])


@blp.route("/consents/<consent_id>/receipt")
class ConsentReceipt(MethodView):
    @require_scope("consents")
    @blp.response(200, s.ConsentReceiptSchema)
    @_responses(401, 403, 404)
    def get(self, consent_id: str) -> dict[str, Any]:
        """The signed consent receipt: a compact JWS (Ed25519) verifiable with /.well-known/jwks.json."""
        return {
            "consent_id": consent_id,
            "receipt": consents.consent_receipt(current_broker(), current_caller(), consent_id),
        }


@blp.route("/records")
class Records(MethodView):
    @require_scope("records")
    @idempotent
    @blp.arguments(s.RecordCreateSchema())
    @blp.response(201, s.RecordSchema)
    @_responses(400, 401, 403, 404)
    def post(self, body: dict[str, Any]) -> dict[str, Any]:
        """Deposit a record; its content is validated by the category's schema and encrypted at rest."""
        return records.deposit_record(
            current_broker(), current_caller(), body["person_id"], body["category"], body["content"]
        )


# -- POST /disclosures, the broker's hot path (disclosure_io.py) ------------------------------------------------------


def _disclosure_request() -> Any:
    """The request's body as `blp.arguments(DisclosureRequestSchema())` gives it to a view — or the same 400."""
    # webargs reads a body only when its media type is JSON (application/json, or application/*+json, which is left
    # to it) and decodes it as here: UTF-8, then the standard library's parser.
    if request.mimetype == "application/json":
        try:
            data = json.loads(request.get_data(cache=True).decode("utf-8"))
        except ValueError:  # not UTF-8, not JSON, or empty: webargs answers each in its own way
            data = None
        body = disclosure_io.well_formed_disclosure_request(data)
        if body is not None:
            return body
    return blp.ARGUMENTS_PARSER.parse(disclosure_io.DISCLOSURE_REQUEST, request, location="json")


@blp.route("/disclosures")
class Disclosures(MethodView):
    @require_scope("disclosures")
    @idempotent
    @_documented(
        blp.arguments(disclosure_io.DISCLOSURE_REQUEST),
        blp.response(200, s.DisclosureSchema),
        _responses(400, 401, 403, 404),
    )
    def post(self) -> Response:
        """Ask for the person's records of a category for a purpose. 403 `no_legal_basis` when no statute or
        consent permits it; the answer holds only the fields the purpose allows."""
        # The body read, the answer dumped and written as `blp.arguments` and `blp.response` would (disclosure_io.py).
        # (`response` also keeps the dump in `g` for flask-smorest's ETag support, which this operation has not.)
        body = _disclosure_request()
        ask = disclosures.DisclosureAsk(
            body["person_id"], body["category"], body["purpose"], disclosures.parse_exception(body["exception"])
        )
        answer = disclosures.request_disclosure(current_broker(), current_caller(), ask)
        return disclosure_io.json_response(disclosure_io.dump_disclosure(answer))


@blp.route("/decisions")
class Decisions(MethodView):
    @require_scope("disclosures")
    @idempotent
    @blp.arguments(s.DisclosureRequestSchema())
    @blp.response(200, s.DecisionSchema)
    @_responses(400, 401, 403, 404)
    def post(self, body: dict[str, Any]) -> dict[str, Any]:
        """Dry run: would the request be permitted, on what basis? Audited; discloses nothing."""
        ask = disclosures.DisclosureAsk(
            body["person_id"], body["category"], body["purpose"], disclosures.parse_exception(body["exception"])
        )
        return disclosures.query_decision(current_broker(), current_caller(), ask)


@blp.route("/notices")
class Notices(MethodView):
    @require_scope("notices")
    @idempotent
    @blp.arguments(s.NoticeCreateSchema())
    @blp.response(201, s.NoticeSentSchema)
    @_responses(400, 401, 403, 404)
    def post(self, body: dict[str, Any]) -> dict[str, Any]:
        """Send a statutory notice (e.g. an interruption notice) to one organisation."""
        return notices.send_notice(
            current_broker(),
            current_caller(),
            body["person_id"],
            body["kind"],
            body["recipient"],
            body["content"],
            body["purpose"],
        )


@blp.route("/inbox")
class Inbox(MethodView):
    @require_scope("notices")
    @blp.arguments(s.InboxQuerySchema(), location="query", unknown=RAISE)
    @blp.response(200, s.NoticeSchema(many=True))
    @_responses(400, 401, 403)
    def get(self, query: dict[str, Any]) -> list[dict[str, Any]]:
        """Notices addressed to the calling organisation (unacknowledged unless asked)."""
        return notices.read_inbox(
            current_broker(), current_caller(), include_acknowledged=query["include_acknowledged"], limit=query["limit"]
        )


@blp.route("/inbox/<notice_id>/ack")
class InboxAck(MethodView):
    @require_scope("notices")
    @idempotent
    @blp.response(200, s.NoticeSchema)
    @_responses(400, 401, 403, 404)  # 400: a malformed Idempotency-Key
    def post(self, notice_id: str) -> dict[str, Any]:
        """Acknowledge a notice."""
        return notices.acknowledge_notice(current_broker(), current_caller(), notice_id)
