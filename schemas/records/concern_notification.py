"""``concern_notification``: contact with social services for assessment of support need (1301/2014 35 §)."""

from marshmallow import RAISE, Schema

from schemas.records._fields import ORDINARY, SPECIAL, date, flag, long_text


class ConcernNotificationSchema(Schema):
    class Meta:
        unknown = RAISE

    observed_at = date(description="Date the concern was observed.", sensitivity=ORDINARY, required=True)
    # The flows table: "often" special-category data — a concern is usually about health, mental health or
    # substance use, so both narrative fields are classed special.
    concern = long_text(description="The observed concern.", sensitivity=SPECIAL, required=True)
    facts = long_text(description="Neutral facts behind the concern.", sensitivity=SPECIAL, required=True)
    client_informed = flag(
        description="Whether the client was told about the notification.", sensitivity=ORDINARY, required=True
    )
    urgent = flag(description="Whether the matter needs urgent assessment.", sensitivity=ORDINARY)
