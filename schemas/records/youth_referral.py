"""``youth_referral``: outreach youth work refers a young person on (Youth Act 1285/2016 12 §)."""

from marshmallow import RAISE, Schema

from schemas.records._fields import ORDINARY, SPECIAL, date, flag, long_text


class YouthReferralSchema(Schema):
    class Meta:
        unknown = RAISE

    referral_date = date(description="Date of the referral.", sensitivity=ORDINARY, required=True)
    # The flows table: "may contain" special-category data; a young person's situation and support need
    # routinely touch on mental health or substance use.
    situation = long_text(description="The young person's situation.", sensitivity=SPECIAL, required=True)
    support_need = long_text(description="The support the young person needs.", sensitivity=SPECIAL, required=True)
    young_person_informed = flag(
        description="Whether the young person was told about the referral.",
        sensitivity=ORDINARY,
        required=True,
    )
    guardian_informed = flag(
        description="Whether a minor's guardian was told about the referral.", sensitivity=ORDINARY
    )
