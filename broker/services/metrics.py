"""What an operator watches: the state of the log, the event deliveries and the scheduled work, read from the
database, so that every broker process reports the same figures however many run (docs/operations.md, "Metrics").

Every figure is a count or an age — never a person, an organisation's data or an identifier — and every query is
served by an index, so that a scrape costs the same at a million persons as at a hundred.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from broker.adapters.orm import (
    AuditCheckpointRow,
    AuditHeadRow,
    AuditPendingRow,
    ConsentRequestRow,
    ConsentRow,
    WebhookDeliveryRow,
    WithdrawalAttestationRow,
)
from broker.domain.clock import utc
from broker.services import Broker

#: Counting stops here: past it the figure says "at least this many", which is all an alert needs, and the count
#: stays an index range scan of bounded length.
COUNT_CAP = 10_000


@dataclass(frozen=True)
class Gauge:
    name: str
    help: str
    value: float
    labels: tuple[tuple[str, str], ...] = ()


def gauges(broker: Broker) -> list[Gauge]:
    now = broker.clock.now()
    with broker.uow(write=False) as uow:
        session = uow.session
        head = session.execute(select(AuditHeadRow.size, AuditHeadRow.exported_size)).first()
        size = head.size if head else 0
        exported = (head.exported_size or 0) if head else 0
        pending = _capped(session, select(AuditPendingRow.entry_id))
        newest_checkpoint = session.scalar(select(func.max(AuditCheckpointRow.signed_at)))
        deliveries = {
            status: _capped(session, select(WebhookDeliveryRow.id).where(WebhookDeliveryRow.status == status))
            for status in ("pending", "failed")
        }
        oldest_due = session.scalar(
            select(func.min(WebhookDeliveryRow.next_attempt_at)).where(
                WebhookDeliveryRow.status == "pending", WebhookDeliveryRow.next_attempt_at <= now
            )
        )
        overdue_attestations = _capped(
            session,
            select(WithdrawalAttestationRow.id).where(
                WithdrawalAttestationRow.outcome.is_(None), WithdrawalAttestationRow.due_at < now
            ),
        )
        requests_past_deadline = _capped(
            session,
            select(ConsentRequestRow.id).where(
                ConsentRequestRow.status == "pending", ConsentRequestRow.expires_at <= now
            ),
        )
        consents_past_end = _capped(
            session, select(ConsentRow.id).where(ConsentRow.status == "active", ConsentRow.valid_until <= now)
        )
    result = [
        Gauge("broker_audit_log_entries", "Entries in the audit log's Merkle tree (RFC 9162).", size),
        Gauge(
            "broker_audit_pending_entries", "Appended entries the sequencer has not yet placed in the tree.", pending
        ),
        Gauge(
            "broker_audit_unexported_entries",
            "Entries not yet covered by a checkpoint that reached the sink outside the database.",
            max(size - exported, 0),
        ),
        Gauge(
            "broker_audit_checkpoint_age_seconds",
            "Seconds since the newest signed checkpoint (-1: none yet).",
            _age(now, newest_checkpoint),
        ),
        *(
            Gauge(
                "broker_webhook_deliveries",
                "Event deliveries to partner endpoints by status (pending: still being tried; failed: given up).",
                count,
                (("status", status),),
            )
            for status, count in deliveries.items()
        ),
        Gauge(
            "broker_webhook_oldest_due_seconds",
            "Seconds the longest-waiting due delivery has waited (0: none due; a growing figure: no worker running).",
            max(_age(now, oldest_due), 0),
        ),
        Gauge(
            "broker_attestations_overdue",
            "Withdrawal attestations a recipient has not given by their due date (the DPO's anomaly queue).",
            overdue_attestations,
        ),
        Gauge(
            "broker_consent_requests_past_deadline",
            "Pending consent requests past their deadline that the expiry job has not yet expired.",
            requests_past_deadline,
        ),
        Gauge(
            "broker_consents_past_end",
            "Active consents past valid_until that the expiry job has not yet expired.",
            consents_past_end,
        ),
    ]
    return result


def _capped(session: Session, query: Select[Any]) -> int:
    return int(session.scalar(select(func.count()).select_from(query.limit(COUNT_CAP).subquery())) or 0)


def _age(now: datetime, moment: datetime | None) -> float:
    return -1.0 if moment is None else round((now - utc(moment)).total_seconds(), 3)


def exposition(metrics: list[Gauge]) -> str:
    """The Prometheus text exposition format, version 0.0.4: a HELP and a TYPE line per metric family, then its
    samples; label values escaped (backslash, double quote, newline)."""
    lines: list[str] = []
    seen: set[str] = set()
    for gauge in metrics:
        if gauge.name not in seen:
            seen.add(gauge.name)
            lines.append(f"# HELP {gauge.name} {gauge.help}")
            lines.append(f"# TYPE {gauge.name} gauge")
        labels = ",".join(f'{key}="{_escape(value)}"' for key, value in gauge.labels)
        value = int(gauge.value) if float(gauge.value).is_integer() else gauge.value
        lines.append(f"{gauge.name}{{{labels}}} {value}" if labels else f"{gauge.name} {value}")
    return "\n".join(lines) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
