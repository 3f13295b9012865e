"""``service_need_assessment``: multi-sector service-need assessment (381/2023 11 §)."""

from marshmallow import RAISE, Schema, fields

from schemas.records._fields import IDENTIFYING, ORDINARY, SPECIAL, date, long_text, text_list
from schemas.records.contact_details import ContactDetailsSchema


class ServiceNeedAssessmentSchema(Schema):
    class Meta:
        unknown = RAISE

    assessment_date = date(description="Date of the assessment.", sensitivity=ORDINARY, required=True)
    identity_and_contact = fields.Nested(
        ContactDetailsSchema,
        metadata={"description": "The client's name and contact details.", "sensitivity": IDENTIFYING},
    )
    education_and_work_history = long_text(description="Education and work history.", sensitivity=ORDINARY)
    social_situation = long_text(description="Social and life situation.", sensitivity=ORDINARY)
    health_and_work_capacity = long_text(
        description="Health and work capacity as relevant to services.", sensitivity=SPECIAL
    )
    service_needs = text_list(description="Identified service needs.", sensitivity=ORDINARY, required=True)
    proposed_measures = text_list(description="Proposed measures and services.", sensitivity=ORDINARY)
