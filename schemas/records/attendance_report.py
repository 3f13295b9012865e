"""``attendance_report``: attendance and progress for a period, reported to the organiser (F5)."""

from typing import Any

from marshmallow import RAISE, Schema, ValidationError, validates_schema

from schemas.records._fields import ORDINARY, count, date, long_text, verify_not_before


class AttendanceReportSchema(Schema):
    class Meta:
        unknown = RAISE

    period_start = date(description="First day of the reporting period.", sensitivity=ORDINARY, required=True)
    period_end = date(description="Last day of the reporting period.", sensitivity=ORDINARY, required=True)
    days_planned = count(
        minimum=0, description="Activity days planned in the period.", sensitivity=ORDINARY, required=True
    )
    days_attended = count(
        minimum=0, description="Activity days attended in the period.", sensitivity=ORDINARY, required=True
    )
    progress_against_goals = long_text(description="Progress against the plan's goals.", sensitivity=ORDINARY)
    next_step = long_text(description="Proposed next step.", sensitivity=ORDINARY)

    @validates_schema
    def verify_period_and_days(self, data: dict[str, Any], **kwargs: Any) -> None:
        verify_not_before(data, "period_start", "period_end")
        period_days = (data["period_end"] - data["period_start"]).days + 1
        if data["days_planned"] > period_days:
            raise ValidationError("Must not exceed the number of days in the period.", field_name="days_planned")
        if data["days_attended"] > data["days_planned"]:
            raise ValidationError("Must not exceed days_planned.", field_name="days_attended")
