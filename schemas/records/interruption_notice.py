"""``interruption_notice``: the activity was interrupted: when, why (category only), results, next step."""

from marshmallow import RAISE, Schema

from schemas.records._fields import ORDINARY, choice, date, long_text

REASON_CATEGORIES = ("own_reason", "external_reason", "health", "substance_rules", "other")


class InterruptionNoticeSchema(Schema):
    class Meta:
        unknown = RAISE

    interruption_date = date(description="Date of the interruption.", sensitivity=ORDINARY, required=True)
    # Classed ordinary as the flows table says ("no (reason category only)"): the code is what F6 lets the
    # employment authority and Kela see instead of any detail.
    reason_category = choice(
        REASON_CATEGORIES,
        description="Category of the reason for the interruption; never the detail.",
        sensitivity=ORDINARY,
        required=True,
    )
    results_summary = long_text(description="Short summary of results so far.", sensitivity=ORDINARY)
    proposed_next_step = long_text(description="Proposed next step.", sensitivity=ORDINARY)
