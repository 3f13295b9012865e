"""``contact_details``: name and contact data of a person, typically the client's own social worker (F4)."""

from marshmallow import RAISE, Schema

from schemas.records._fields import IDENTIFYING, ORDINARY, email_address, phone_number, short_text


class ContactDetailsSchema(Schema):
    """Also nested as ``own_social_worker`` and ``identity_and_contact`` in other categories."""

    class Meta:
        unknown = RAISE

    name = short_text(description="Full name of the person.", sensitivity=IDENTIFYING, required=True)
    title = short_text(description="Job title or role, e.g. 'sosiaalityöntekijä'.", sensitivity=ORDINARY)
    phone = phone_number(description="Telephone number.", sensitivity=IDENTIFYING)
    email = email_address(description="E-mail address.", sensitivity=IDENTIFYING)
