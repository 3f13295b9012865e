"""``benefit_status``: Kela reports that the benefit-day threshold for activation planning is reached (F1)."""

from marshmallow import RAISE, Schema

from schemas.records._fields import ORDINARY, choice, date

BENEFITS = (
    "labour_market_subsidy",
    "basic_unemployment_allowance",
    "earnings_related_allowance",
    "social_assistance",
)


class BenefitStatusSchema(Schema):
    class Meta:
        unknown = RAISE

    threshold_reached_on = date(
        description="Date the benefit-day threshold was reached.", sensitivity=ORDINARY, required=True
    )
    benefit = choice(BENEFITS, description="The benefit being paid.", sensitivity=ORDINARY, required=True)
