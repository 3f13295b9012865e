"""``activity_decision``: the decision on rehabilitative work activity and how it is carried out."""

from typing import Any

from marshmallow import RAISE, Schema, fields, validates_schema

from schemas.records._fields import (
    IDENTIFYING,
    ORDINARY,
    SPECIAL,
    count,
    date,
    long_text,
    number,
    short_text,
    text_list,
    verify_not_before,
)
from schemas.records.contact_details import ContactDetailsSchema


class ActivityDecisionSchema(Schema):
    class Meta:
        unknown = RAISE

    decision_date = date(description="Date of the decision.", sensitivity=ORDINARY, required=True)
    start_date = date(description="First day of the activity.", sensitivity=ORDINARY, required=True)
    end_date = date(description="Last day of the activity.", sensitivity=ORDINARY)
    days_per_week = count(
        minimum=1, maximum=7, description="Activity days per week.", sensitivity=ORDINARY, required=True
    )
    hours_per_day = number(
        minimum=1, maximum=12, description="Activity hours per day.", sensitivity=ORDINARY, required=True
    )
    activity_place = short_text(description="Where the activity takes place.", sensitivity=ORDINARY, required=True)
    goals = text_list(description="Goals of the activity.", sensitivity=ORDINARY, required=True)
    support_and_guidance = long_text(description="Support and guidance arranged for the client.", sensitivity=ORDINARY)
    own_social_worker = fields.Nested(
        ContactDetailsSchema,
        required=True,
        metadata={"description": "The client's own social worker.", "sensitivity": IDENTIFYING},
    )
    # A functional restriction ("no lifting over 10 kg") still reveals something about the person's health,
    # so it is classed special even though the category as a whole is not (records.md: never a diagnosis).
    work_restrictions = text_list(
        description="Functional restrictions relevant to the work; never a diagnosis.", sensitivity=SPECIAL
    )

    @validates_schema
    def verify_dates(self, data: dict[str, Any], **kwargs: Any) -> None:
        verify_not_before(data, "start_date", "end_date")
