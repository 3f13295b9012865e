"""The text a person is shown when consenting, in Finnish, Swedish or English.

A consent must be demonstrable years later (GDPR 7(1); 703/2023 10 § and 39 §), including the exact words the
person saw. The text is generated from a versioned template, stored once and referenced by its SHA-256.
"""

from __future__ import annotations

import hashlib
from datetime import datetime

from sqlalchemy.orm import Session

from broker.adapters.orm import ConsentTextRow

TEMPLATE_VERSION = "consent-text/1"
LANGUAGES = ("fi", "sv", "en")

_TEMPLATES = {
    "fi": (
        "Annan suostumukseni siihen, että {requester} luovuttaa tai pyytää minua koskevia tietoja.\n"
        "Kenelle: {recipients}\nMitä tietoja: {categories}\nMihin tarkoitukseen: {purposes}\n"
        "Voimassa: {validity}\n"
        "Voin peruuttaa suostumukseni milloin tahansa. Peruutus ei vaikuta lakiin perustuviin "
        "tietojen luovutuksiin."
    ),
    "sv": (
        "Jag samtycker till att {requester} lämnar ut eller begär uppgifter om mig.\n"
        "Till vem: {recipients}\nVilka uppgifter: {categories}\nFör vilket ändamål: {purposes}\n"
        "Gäller: {validity}\n"
        "Jag kan när som helst återkalla mitt samtycke. Återkallelsen påverkar inte utlämnande som grundar "
        "sig på lag."
    ),
    "en": (
        "I consent to {requester} disclosing or requesting information about me.\n"
        "To whom: {recipients}\nWhat information: {categories}\nFor what purpose: {purposes}\n"
        "Valid: {validity}\n"
        "I can withdraw my consent at any time. Withdrawing does not stop disclosures that a law allows."
    ),
}
_UNTIL_FURTHER_NOTICE = {"fi": "toistaiseksi", "sv": "tills vidare", "en": "until further notice"}
_BOUND = {
    "fi": "niin kauan kuin {org} palvelee minua",
    "sv": "så länge {org} betjänar mig",
    "en": "as long as {org} is serving me",
}


def render_consent_text(
    language: str,
    *,
    requester: str,
    recipients: list[str],
    categories: list[str],
    purposes: list[str],
    valid_until: datetime | None,
    bound_to_org: str | None,
) -> str:
    if bound_to_org:
        validity = _BOUND[language].format(org=bound_to_org)
    elif valid_until:
        validity = valid_until.date().isoformat()
    else:
        validity = _UNTIL_FURTHER_NOTICE[language]
    return _TEMPLATES[language].format(
        requester=requester,
        recipients=", ".join(recipients),
        categories=", ".join(categories),
        purposes=", ".join(purposes),
        validity=validity,
    )


def store_consent_text(session: Session, text: str, language: str, now: datetime) -> str:
    """Store the text once and return its SHA-256 (hex)."""
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    if session.get(ConsentTextRow, digest) is None:
        session.add(
            ConsentTextRow(sha256=digest, version=TEMPLATE_VERSION, language=language, text=text, created_at=now)
        )
        session.flush()  # before the consent that references it: the rows have no ORM relationship
    return digest
