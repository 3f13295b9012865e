"""The text a person is shown when consenting, in Finnish, Swedish or English.

A consent must be demonstrable years later (GDPR 7(1); 703/2023 10 § and 39 §), including the exact words the
person saw. The text is generated from a versioned template, stored once and referenced by its SHA-256.
"""

from __future__ import annotations

import functools
import hashlib
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from babel.dates import format_date
from babel.support import Translations
from sqlalchemy import select
from sqlalchemy.orm import Session

from broker.adapters.orm import ConsentTextRow, OrganisationRow
from broker.domain import labels

# Version 2: organisations by name, data and purposes in the person's words, dates written out.
TEMPLATE_VERSION = "consent-text/2"
TRANSLATIONS = Path(__file__).resolve().parents[1] / "translations"
HELSINKI = ZoneInfo("Europe/Helsinki")
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


@functools.cache
def _translations(language: str) -> Translations:
    """The portal's catalogue for `language` (the labels' English strings are its message ids)."""
    return Translations.load(str(TRANSLATIONS), [language])


def _format_date(value: datetime, language: str) -> str:
    return format_date(value.astimezone(HELSINKI).date(), format="long", locale=language)


def render_consent_text(
    session: Session,
    language: str,
    *,
    requester: str,
    recipients: list[str],
    categories: list[str],
    purposes: list[str],
    valid_until: datetime | None,
    bound_to_org: str | None,
) -> str:
    """The consent text in `language`, naming organisations by name and data and purposes in plain words — what
    the person reads, and what is stored and hashed as the proof of what they agreed to."""
    if language not in LANGUAGES:
        raise ValueError(f"no consent text in language {language!r}")
    wanted = {requester, *recipients, *([bound_to_org] if bound_to_org else [])}
    found = session.execute(select(OrganisationRow.id, OrganisationRow.name).where(OrganisationRow.id.in_(wanted)))
    names: dict[str, str] = {org_id: name for org_id, name in found}
    translate = _translations(language).gettext

    def org(org_id: str) -> str:
        return names.get(org_id, org_id)

    def words(table: dict[str, str], ids: list[str]) -> str:
        return ", ".join(translate(table.get(i, labels.UNKNOWN)).lower() for i in ids)

    if bound_to_org:
        validity = _BOUND[language].format(org=org(bound_to_org))
    elif valid_until:
        validity = _format_date(valid_until, language)
    else:
        validity = _UNTIL_FURTHER_NOTICE[language]
    return _TEMPLATES[language].format(
        requester=org(requester),
        recipients=", ".join(org(r) for r in recipients),
        categories=words(labels.CATEGORIES, categories),
        purposes=words(labels.PURPOSES, purposes),
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
