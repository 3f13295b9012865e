"""The content a partner deposits: one strict schema per record category (docs: records.md).

The field names are an API contract — partner systems write them and the policy's allow-lists name them.
Every field carries ``metadata["sensitivity"]`` ("special", "identifying" or "ordinary") and
``metadata["description"]``.

    load_record(category, content)    validate; return JSON-ready content (dates as ISO strings)
    project(category, content, allowed)    only the allowed fields: the minimum to disclose
    field_names(category), field_sensitivity(category)
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any

from marshmallow import Schema

from schemas.records.activation_plan import ActivationPlanSchema
from schemas.records.activity_decision import ActivityDecisionSchema
from schemas.records.attendance_report import AttendanceReportSchema
from schemas.records.benefit_status import BenefitStatusSchema
from schemas.records.cofinancing_entry import CofinancingEntrySchema
from schemas.records.concern_notification import ConcernNotificationSchema
from schemas.records.contact_details import ContactDetailsSchema
from schemas.records.health_check_summary import HealthCheckSummarySchema
from schemas.records.interruption_notice import InterruptionNoticeSchema
from schemas.records.rehabilitation_statement import RehabilitationStatementSchema
from schemas.records.service_need_assessment import ServiceNeedAssessmentSchema
from schemas.records.substance_incident import SubstanceIncidentSchema
from schemas.records.work_assessment import WorkAssessmentSchema
from schemas.records.youth_referral import YouthReferralSchema

__all__ = [
    "CATEGORIES",
    "RECORD_SCHEMAS",
    "field_names",
    "field_sensitivity",
    "load_record",
    "project",
]

RECORD_SCHEMAS: dict[str, type[Schema]] = {
    "activation_plan": ActivationPlanSchema,
    "activity_decision": ActivityDecisionSchema,
    "attendance_report": AttendanceReportSchema,
    "interruption_notice": InterruptionNoticeSchema,
    "work_assessment": WorkAssessmentSchema,
    "health_check_summary": HealthCheckSummarySchema,
    "service_need_assessment": ServiceNeedAssessmentSchema,
    "concern_notification": ConcernNotificationSchema,
    "substance_incident": SubstanceIncidentSchema,
    "rehabilitation_statement": RehabilitationStatementSchema,
    "benefit_status": BenefitStatusSchema,
    "cofinancing_entry": CofinancingEntrySchema,
    "youth_referral": YouthReferralSchema,
    "contact_details": ContactDetailsSchema,
}

CATEGORIES: frozenset[str] = frozenset(RECORD_SCHEMAS)

# Schemas hold no per-call state in marshmallow 4 (there is no ``context``), so one instance per category
# is built once and shared.
_SCHEMAS: dict[str, Schema] = {category: schema() for category, schema in RECORD_SCHEMAS.items()}


def _schema(category: str) -> Schema:
    # The isinstance check keeps an unhashable or non-string category a ValueError rather than a TypeError.
    if not isinstance(category, str) or category not in _SCHEMAS:
        raise ValueError(f"unknown category '{category}'")
    return _SCHEMAS[category]


def load_record(category: str, content: object) -> dict[str, Any]:
    """Validate ``content`` against the category's schema and return it in JSON-ready form.

    Raises ``marshmallow.ValidationError`` whose ``messages`` are keyed by field name (``"_schema"`` when the
    content is not an object at all), and ``ValueError`` for an unknown category. Optional fields are
    omitted rather than sent as ``null``; ``null`` is rejected.
    """
    schema = _schema(category)
    loaded = schema.load(content)  # type: ignore[arg-type]
    # Dumping turns dates back into ISO strings, so the result can be stored as JSON and projected later.
    dumped: dict[str, Any] = schema.dump(loaded)
    return dumped


def field_names(category: str) -> tuple[str, ...]:
    """The category's top-level field names, in declaration order."""
    return tuple(_schema(category).fields)


def field_sensitivity(category: str) -> dict[str, str]:
    """Top-level field name → "special", "identifying" or "ordinary"."""
    return {name: field.metadata["sensitivity"] for name, field in _schema(category).fields.items()}


def project(category: str, content: Mapping[str, Any], allowed: Iterable[str]) -> dict[str, Any]:
    """Return only the top-level fields of ``content`` that ``allowed`` names (the minimum to disclose).

    A name in ``allowed`` that the category does not define is ignored, and so is a key of ``content`` that
    the schema does not define: the result can only shrink, never grow. Values are copied so that the
    caller cannot change stored content through the result.
    """
    schema = _schema(category)
    if isinstance(allowed, str | bytes):
        # A bare string would be iterated character by character.
        raise TypeError("allowed must be an iterable of field names, not a single string")
    if not isinstance(content, Mapping):
        raise TypeError("content must be a mapping")
    allowed_names = frozenset(allowed)
    return {name: copy.deepcopy(content[name]) for name in schema.fields if name in allowed_names and name in content}
