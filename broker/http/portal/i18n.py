"""Languages of the portal: Finnish, Swedish and English (domain/glossary.md), with Flask-Babel.

The language is the one the person chose with the switch on every page (the `broker_lang` cookie), otherwise the
best of fi/sv/en in the browser's Accept-Language, otherwise Finnish. Dates are written in that language
(Babel's CLDR formats) and in Finland's time zone.

`python -m broker.http.portal.i18n fill-source CATALOGUE` is part of `make translations`: the English catalogue
is the source language, so every entry that `pybabel update` adds to it empty gets its msgid as its msgstr.
"""

from __future__ import annotations

import sys
from datetime import date, datetime
from pathlib import Path

from flask import Flask, request
from flask_babel import Babel, format_date, format_time, get_locale

LANGUAGES = ("fi", "sv", "en")
DEFAULT_LANGUAGE = "fi"
LANGUAGE_COOKIE = "broker_lang"
TIMEZONE = "Europe/Helsinki"
TRANSLATIONS = Path(__file__).resolve().parents[2] / "translations"
#: Each language's name in itself, for the switch.
NAMES = {"fi": "Suomeksi", "sv": "På svenska", "en": "In English"}


def select_language() -> str:
    chosen = request.cookies.get(LANGUAGE_COOKIE, "")
    if chosen in LANGUAGES:
        return chosen
    return request.accept_languages.best_match(LANGUAGES) or DEFAULT_LANGUAGE


def init_i18n(app: Flask) -> None:
    app.config.setdefault("BABEL_TRANSLATION_DIRECTORIES", str(TRANSLATIONS))
    Babel(app, locale_selector=select_language, default_locale=DEFAULT_LANGUAGE, default_timezone=TIMEZONE)


def current_language() -> str:
    locale = get_locale()
    language = locale.language if locale is not None else DEFAULT_LANGUAGE
    return language if language in LANGUAGES else DEFAULT_LANGUAGE


def _as_datetime(value: object) -> date | datetime | None:
    if isinstance(value, datetime | date):
        return value
    if isinstance(value, str) and value:
        try:
            return date.fromisoformat(value) if len(value) == 10 else datetime.fromisoformat(value)
        except ValueError:
            return None
    return None


def show_date(value: object) -> str:
    """A date (or the date of a time) as the person's language writes it: 5. maaliskuuta 2026, 5 mars 2026."""
    parsed = _as_datetime(value)
    return "" if parsed is None else str(format_date(parsed, "long"))


def show_datetime(value: object) -> str:
    parsed = _as_datetime(value)
    if parsed is None:
        return ""
    if not isinstance(parsed, datetime):
        return show_date(parsed)
    return f"{format_date(parsed, 'long')} {format_time(parsed, 'short')}"


def fill_source(catalogue: Path) -> int:
    """Give every untranslated entry of the source-language catalogue its msgid as its msgstr."""
    from babel.messages.pofile import read_po, write_po

    with catalogue.open("rb") as handle:
        messages = read_po(handle)
    filled = 0
    for message in messages:
        if not message.id:
            continue
        if isinstance(message.id, tuple | list):  # singular and plural
            if all(message.string):
                continue
            message.string = tuple(message.id)
        elif message.string:
            continue
        else:
            message.string = message.id
        message.flags.discard("fuzzy")
        filled += 1
    with catalogue.open("wb") as handle:
        write_po(handle, messages, width=120)
    return filled


if __name__ == "__main__":  # pragma: no cover - used by `make translations`
    if len(sys.argv) != 3 or sys.argv[1] != "fill-source":
        sys.exit("usage: python -m broker.http.portal.i18n fill-source PATH/TO/messages.po")
    print(f"{fill_source(Path(sys.argv[2]))} entries filled in {sys.argv[2]}")
