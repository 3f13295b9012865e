"""Webhook endpoints and the event feed (scope `webhooks`), and the delivery status for the data-protection
officer's systems (scope `audit:read`). docs/webhooks.md; the use cases are broker/services/webhooks.py."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from marshmallow import RAISE

from broker.domain.errors import InvalidRequestError
from broker.http.api import current_broker, current_caller
from broker.http.api.views import _responses, blp, idempotent
from broker.oauth import require_scope
from broker.services import webhooks
from schemas import api as s


def _position(query: dict[str, Any], name: str) -> int | None:
    """A cursor the schema has checked to be digits, as a number the database can compare (a signed 64-bit one)."""
    value = query.get(name)
    if value is None:
        return None
    if int(value) > s.MAX_INDEX:
        raise InvalidRequestError("not a cursor from a previous page", field=name)
    return int(value)


@blp.route("/webhooks")
class Webhooks(MethodView):
    @require_scope("webhooks")
    @idempotent
    @blp.arguments(s.WebhookCreateSchema())
    @blp.response(201, s.WebhookSchema)
    @_responses(400, 401, 403, 409)  # 400: invalid_webhook_url, unknown_event_type; 409: too_many_webhooks, url taken
    def post(self, body: dict[str, Any]) -> dict[str, Any]:
        """Register an endpoint for the organisation's events: each is POSTed to it as a signed Security Event Token
        (RFC 8417, RFC 8935). Logged."""
        return webhooks.register_endpoint(current_broker(), current_caller(), body["url"], body["events"])

    @require_scope("webhooks")
    @blp.response(200, s.WebhookSchema(many=True))
    @_responses(401, 403)
    def get(self) -> list[dict[str, Any]]:
        """The organisation's endpoints, active and disabled, with their delivery counts."""
        return webhooks.list_endpoints(current_broker(), current_caller())


@blp.route("/webhooks/<webhook_id>")
class Webhook(MethodView):
    @require_scope("webhooks")
    @blp.response(200, s.WebhookSchema)
    @_responses(401, 403, 404)
    def get(self, webhook_id: str) -> dict[str, Any]:
        """One of the organisation's endpoints."""
        return webhooks.get_endpoint(current_broker(), current_caller(), webhook_id)

    @require_scope("webhooks")
    @blp.response(204)
    @_responses(401, 403, 404)
    def delete(self, webhook_id: str) -> None:
        """Disable the endpoint: no new events go to it, and its pending deliveries become `failed` ("endpoint
        disabled"). Kept, with its deliveries, for their history. Logged."""
        webhooks.disable_endpoint(current_broker(), current_caller(), webhook_id)


# No Idempotency-Key here: the test call changes nothing in the broker, so a retry is harmless as it is — and an
# idempotent request runs inside a transaction, which must not be held open across a request to the receiver.
@blp.route("/webhooks/<webhook_id>/test")
class WebhookTest(MethodView):
    @require_scope("webhooks")
    @blp.response(200, s.WebhookTestSchema)
    @_responses(401, 403, 404, 409)  # 409: the endpoint is disabled
    def post(self, webhook_id: str) -> dict[str, Any]:
        """Send a signed `webhook.test` token to the endpoint now and say how it went (200 whatever the receiver
        answered). Nothing is stored."""
        return webhooks.test_endpoint(current_broker(), current_caller(), webhook_id)


@blp.route("/webhooks/<webhook_id>/deliveries")
class WebhookDeliveries(MethodView):
    @require_scope("webhooks")
    @blp.arguments(s.DeliveryQuerySchema(), location="query", unknown=RAISE)
    @blp.response(200, s.DeliveryPageSchema)
    @_responses(400, 401, 403, 404)
    def get(self, query: dict[str, Any], webhook_id: str) -> dict[str, Any]:
        """The endpoint's deliveries, newest first; pass `next_cursor` back as `cursor` for the next page."""
        return webhooks.list_deliveries(
            current_broker(),
            current_caller(),
            webhook_id,
            status=query.get("status"),
            cursor=_position(query, "cursor"),
            limit=query["limit"],
        )


@blp.route("/events")
class Events(MethodView):
    @require_scope("webhooks")
    @blp.arguments(s.EventQuerySchema(), location="query", unknown=RAISE)
    @blp.response(200, s.EventPageSchema)
    @_responses(400, 401, 403)
    def get(self, query: dict[str, Any]) -> dict[str, Any]:
        """The organisation's events in the order they were written: the same events the endpoints get, to read
        instead of (or after) a push. Pass `next_cursor` back as `after` to read on."""
        return webhooks.events_feed(
            current_broker(),
            current_caller(),
            after=_position(query, "after"),
            limit=query["limit"],
            tokens=query["tokens"],
        )


@blp.route("/audit/webhooks")
class AuditWebhooks(MethodView):
    @require_scope("audit:read")
    @blp.response(200, s.WebhookSchema(many=True))
    @_responses(401, 403)
    def get(self) -> list[dict[str, Any]]:
        """Every organisation's webhook endpoints (their URLs without the query) with their delivery counts."""
        return webhooks.all_endpoints(current_broker())


@blp.route("/audit/webhook-deliveries")
class AuditWebhookDeliveries(MethodView):
    @require_scope("audit:read")
    @blp.arguments(s.AuditDeliveryQuerySchema(), location="query", unknown=RAISE)
    @blp.response(200, s.DeliveryPageSchema)
    @_responses(400, 401, 403)
    def get(self, query: dict[str, Any]) -> dict[str, Any]:
        """Deliveries of every organisation (by default the failed ones), newest first."""
        return webhooks.all_deliveries(
            current_broker(),
            status=query["status"],
            organisation=query.get("organisation"),
            cursor=_position(query, "cursor"),
            limit=query["limit"],
        )
