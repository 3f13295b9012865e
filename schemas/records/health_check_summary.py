"""``health_check_summary``: outcome of the health check for the unemployed, as the activity needs it."""

from marshmallow import RAISE, Schema

from schemas.records._fields import ORDINARY, SPECIAL, date, flag, long_text, text_list


class HealthCheckSummarySchema(Schema):
    class Meta:
        unknown = RAISE

    check_date = date(description="Date of the health check.", sensitivity=ORDINARY, required=True)
    attended = flag(description="Whether the client attended.", sensitivity=ORDINARY, required=True)
    work_restrictions = text_list(
        description="Functional restrictions relevant to the activity; never a diagnosis.",
        sensitivity=SPECIAL,
    )
    recommended_services = text_list(description="Services recommended to the client.", sensitivity=SPECIAL)
    physician_notes = long_text(
        description="The physician's notes; not disclosed to employment services.", sensitivity=SPECIAL
    )
