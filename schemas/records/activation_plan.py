"""``activation_plan``: activation plan or multi-sector employment plan (189/2001 8–9 §, 381/2023)."""

from typing import Any

from marshmallow import RAISE, Schema, fields, validates_schema

from schemas.records._fields import (
    IDENTIFYING,
    ORDINARY,
    SPECIAL,
    date,
    long_text,
    number,
    short_text,
    text_list,
    verify_not_before,
)
from schemas.records.contact_details import ContactDetailsSchema


class ActivationPlanSchema(Schema):
    class Meta:
        unknown = RAISE

    plan_date = date(description="Date the plan was drawn up.", sensitivity=ORDINARY, required=True)
    goals = text_list(description="Goals agreed in the plan.", sensitivity=ORDINARY, required=True)
    education_and_work_history = long_text(
        description="Education and work history relevant to the plan.", sensitivity=ORDINARY
    )
    # The flows table says an activation plan "may contain" special-category data; this is the field where
    # the reasons earlier measures did or did not work (including health-related ones) end up.
    earlier_measures_assessment = long_text(
        description="Assessment of earlier measures and their outcome; may mention health-related reasons.",
        sensitivity=SPECIAL,
    )
    measures = text_list(description="Measures agreed in the plan.", sensitivity=ORDINARY, required=True)
    activity_place = short_text(description="Where the activity takes place.", sensitivity=ORDINARY)
    hours_per_week = number(
        minimum=0, maximum=60, description="Planned hours of activity per week.", sensitivity=ORDINARY
    )
    start_date = date(description="First day of the planned activity.", sensitivity=ORDINARY)
    end_date = date(description="Last day of the planned activity.", sensitivity=ORDINARY)
    support_and_guidance = long_text(description="Support and guidance arranged for the client.", sensitivity=ORDINARY)
    review_date = date(description="Date the plan is to be reviewed.", sensitivity=ORDINARY)
    own_social_worker = fields.Nested(
        ContactDetailsSchema,
        metadata={"description": "The client's own social worker.", "sensitivity": IDENTIFYING},
    )

    @validates_schema
    def verify_dates(self, data: dict[str, Any], **kwargs: Any) -> None:
        verify_not_before(data, "start_date", "end_date")
