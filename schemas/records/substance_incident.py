"""``substance_incident``: intoxication observed under the zero-tolerance rule: date, neutral facts (F12)."""

from marshmallow import RAISE, Schema

from schemas.records._fields import SPECIAL, date, long_text


class SubstanceIncidentSchema(Schema):
    """Every field is special: even the bare date says that an incident of substance use happened."""

    class Meta:
        unknown = RAISE

    incident_date = date(description="Date of the incident.", sensitivity=SPECIAL, required=True)
    observed_facts = long_text(
        description="Neutral, observed facts; no conclusions or diagnoses.",
        sensitivity=SPECIAL,
        required=True,
    )
    action_taken = long_text(description="What was done.", sensitivity=SPECIAL, required=True)
