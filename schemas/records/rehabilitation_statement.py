"""``rehabilitation_statement``: a statement for Kela's vocational rehabilitation decision (566/2005 59 §)."""

from marshmallow import RAISE, Schema

from schemas.records._fields import ORDINARY, SPECIAL, date, long_text, short_text


class RehabilitationStatementSchema(Schema):
    class Meta:
        unknown = RAISE

    statement_date = date(description="Date of the statement.", sensitivity=ORDINARY, required=True)
    functional_capacity = long_text(description="Functional and work capacity.", sensitivity=SPECIAL, required=True)
    # Vocational rehabilitation rests on an illness-related threat to work capacity, so the need and the
    # proposed rehabilitation describe the person's health as much as the capacity field does.
    rehabilitation_need = long_text(description="Why rehabilitation is needed.", sensitivity=SPECIAL, required=True)
    proposed_rehabilitation = long_text(description="Rehabilitation proposed.", sensitivity=SPECIAL)
    author_role = short_text(
        description="Role of the statement's author, e.g. 'yksilövalmentaja'.", sensitivity=ORDINARY
    )
