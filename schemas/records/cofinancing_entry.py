"""``cofinancing_entry``: a row of Kela's municipal co-financing list (1290/2002 ch. 13 6 §)."""

from marshmallow import RAISE, Schema

from schemas.records._fields import ORDINARY, choice, short_text, year_month

BENEFIT_DAY_BANDS = ("300-499", "500-999", "1000+")


class CofinancingEntrySchema(Schema):
    class Meta:
        unknown = RAISE

    month = year_month(description="The month the entry concerns (YYYY-MM).", sensitivity=ORDINARY, required=True)
    benefit_day_band = choice(
        BENEFIT_DAY_BANDS, description="Band of benefit days paid.", sensitivity=ORDINARY, required=True
    )
    amount_band = short_text(description="Band of the municipality's co-financing share.", sensitivity=ORDINARY)
    current_service_status = short_text(
        description="The person's current service, e.g. in rehabilitative work activity.",
        sensitivity=ORDINARY,
    )
