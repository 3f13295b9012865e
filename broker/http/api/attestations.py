"""Withdrawal attestations (scope `consents`, docs/withdrawal.md): what an organisation that received data under a
withdrawn consent did with it — `deleted`, or `retained` under a statute that requires keeping it."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from marshmallow import RAISE

from broker.http.api import current_broker, current_caller
from broker.http.api.views import _responses, blp, idempotent
from broker.oauth import require_scope
from broker.services import attestations
from schemas import api as s


@blp.route("/attestations")
class Attestations(MethodView):
    @require_scope("consents")
    @blp.arguments(s.AttestationListQuerySchema(), location="query", unknown=RAISE)
    @blp.response(200, s.AttestationSchema(many=True))
    @_responses(400, 401, 403)
    def get(self, query: dict[str, Any]) -> list[dict[str, Any]]:
        """The attestations asked of the calling organisation after withdrawals, oldest first: `open` (not
        answered yet, the default), `answered` or `all`."""
        return attestations.list_attestations(
            current_broker(), current_caller(), status=query["status"], limit=query["limit"]
        )


@blp.route("/consents/<consent_id>/attestation")
class ConsentAttestation(MethodView):
    @require_scope("consents")
    @idempotent
    @blp.arguments(s.AttestationCreateSchema())
    @blp.response(200, s.AttestationSchema)
    # 400: `retained` without a statute, a statute that is not one requiring the data be kept (`unknown_statute`);
    # 404: `unknown_consent`, or `unknown_attestation` when the organisation was not asked; 409: `already_attested`.
    @_responses(400, 401, 403, 404, 409)
    def post(self, body: dict[str, Any], consent_id: str) -> dict[str, Any]:
        """Say what the calling organisation did with the data it received under a consent the person withdrew:
        `deleted`, or `retained` with the statute that requires keeping it. Answered once; an answer after the
        due date is recorded and marked late."""
        return attestations.attest(
            current_broker(),
            current_caller(),
            consent_id,
            outcome=body["outcome"],
            statute=body["statute"],
            note=body["note"],
        )
