"""``work_assessment`` (työarvio): tasks tried, hours tolerated, observed limitations, the client's view."""

from marshmallow import RAISE, Schema

from schemas.records._fields import ORDINARY, SPECIAL, date, long_text, number, text_list


class WorkAssessmentSchema(Schema):
    class Meta:
        unknown = RAISE

    assessment_date = date(description="Date of the assessment.", sensitivity=ORDINARY, required=True)
    tasks_tried = text_list(description="Work tasks tried.", sensitivity=ORDINARY, required=True)
    hours_tolerated_per_day = number(
        minimum=0,
        maximum=12,
        description="Hours per day the client managed; a measure of work capacity.",
        sensitivity=SPECIAL,
    )
    observed_limitations = long_text(
        description="Limitations observed during the work; functional, not a diagnosis.", sensitivity=SPECIAL
    )
    attendance_rate = number(minimum=0, maximum=100, description="Attendance rate in percent.", sensitivity=ORDINARY)
    # The client's own account of how the work went is, in a capacity assessment, mostly about their health.
    client_view = long_text(description="The client's own view of the assessment.", sensitivity=SPECIAL)
    coach_recommendation = long_text(
        description="The coach's recommended next steps; health detail belongs in observed_limitations.",
        sensitivity=ORDINARY,
    )
