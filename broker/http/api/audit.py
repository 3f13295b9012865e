"""The audit log's API (scope `audit:read`, for the data-protection officer's systems): the newest signed
checkpoint, inclusion and consistency proofs (RFC 9162 §2.1.3, §2.1.4), and the entries themselves."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from marshmallow import RAISE

from broker.domain.errors import InvalidRequestError
from broker.http.api import current_broker, current_caller
from broker.http.api.views import _responses, blp
from broker.oauth import require_scope
from broker.services import audit_read
from schemas import api as s


@blp.route("/audit/checkpoint")
class AuditCheckpoint(MethodView):
    @require_scope("audit:read")
    @blp.response(200, s.CheckpointSchema)
    @_responses(401, 403, 404)
    def get(self) -> dict[str, Any]:
        """The newest signed checkpoint (C2SP tlog-checkpoint in a C2SP signed-note) and the keys to check it."""
        return audit_read.latest_checkpoint(current_broker())


@blp.route("/audit/proofs/inclusion")
class AuditInclusion(MethodView):
    @require_scope("audit:read")
    @blp.arguments(s.InclusionQuerySchema(), location="query", unknown=RAISE)
    @blp.response(200, s.InclusionProofSchema)
    @_responses(400, 401, 403)
    def get(self, query: dict[str, Any]) -> dict[str, Any]:
        """The inclusion proof of entry `index` in the tree of `tree_size` entries (RFC 9162 §2.1.3.1)."""
        return audit_read.inclusion(current_broker(), query["index"], query["tree_size"])


@blp.route("/audit/proofs/consistency")
class AuditConsistency(MethodView):
    @require_scope("audit:read")
    @blp.arguments(s.ConsistencyQuerySchema(), location="query", unknown=RAISE)
    @blp.response(200, s.ConsistencyProofSchema)
    @_responses(400, 401, 403)
    def get(self, query: dict[str, Any]) -> dict[str, Any]:
        """The consistency proof between the trees of `first` and `second` entries (RFC 9162 §2.1.4.1)."""
        return audit_read.consistency(current_broker(), query["first"], query["second"])


@blp.route("/audit/entries")
class AuditEntries(MethodView):
    @require_scope("audit:read")
    @blp.arguments(s.EntryQuerySchema(), location="query", unknown=RAISE)
    @blp.response(200, s.AuditEntryPageSchema)
    @_responses(400, 401, 403)
    def get(self, query: dict[str, Any]) -> dict[str, Any]:
        """Search the entries, oldest first; pass `next_cursor` back as `cursor` for the next page. Searches
        are themselves logged."""
        cursor = query.pop("cursor", None)
        after = int(cursor) if cursor is not None else None
        if after is not None and after > s.MAX_INDEX:
            raise InvalidRequestError("not a cursor from a previous page", field="cursor")
        return audit_read.search_entries(
            current_broker(), current_caller(), audit_read.EntryQuery(after=after, **query)
        )


@blp.route("/audit/entries/<int:index>")
class AuditEntry(MethodView):
    @require_scope("audit:read")
    @blp.response(200, s.AuditEntrySchema)
    @_responses(401, 403, 404)
    def get(self, index: int) -> dict[str, Any]:
        """The entry at tree index `index`."""
        return audit_read.entry_at(current_broker(), current_caller(), index)
