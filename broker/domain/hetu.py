"""Finnish personal identity codes (henkilötunnus).

Format DDMMYYCZZZQ: birth date, century sign, individual number, check character (Act on the population
information system 661/2009 and Government decree 128/2010 as amended by 1039/2022: since 1.1.2023 the century
signs Y, X, W, V, U also mean the 1900s and B, C, D, E, F the 2000s). The check character is the remainder of the
nine-digit number DDMMYYZZZ divided by 31, mapped through CHECK_CHARS. Individual numbers 900–999 are reserved for
test codes, which the demo uses.

Errors never echo the code itself (DESIGN.md invariant 6).
"""

from __future__ import annotations

import re
from datetime import date

from broker.domain.errors import InvalidHetuError

CHECK_CHARS = "0123456789ABCDEFHJKLMNPRSTUVWXY"
CENTURIES = {"+": 1800, **dict.fromkeys("-YXWVU", 1900), **dict.fromkeys("ABCDEF", 2000)}
# ASCII only: without it `\d` also matches other scripts' digits (e.g. full-width １), which `int()` accepts, so
# one code would have several "canonical" spellings and the same person several look-up indexes.
_SHAPE = re.compile(r"^(\d{2})(\d{2})(\d{2})([+\-YXWVUABCDEF])(\d{3})([0-9A-Y])$", re.ASCII)


def normalise_hetu(value: object) -> str:
    """Return the identity code in canonical form or raise InvalidHetuError naming what is wrong."""
    if not isinstance(value, str):
        raise InvalidHetuError("the identity code must be a string", field="hetu")
    text = value.strip().upper()
    if len(text) != 11:
        raise InvalidHetuError("the identity code must be 11 characters long", field="hetu")
    match = _SHAPE.match(text)
    if match is None:
        if text[6] not in CENTURIES:
            raise InvalidHetuError("the identity code has an unknown century sign", field="hetu")
        raise InvalidHetuError("the identity code is not of the form DDMMYYCZZZQ", field="hetu")
    dd, mm, yy, sign, individual, check = match.groups()
    try:
        date(CENTURIES[sign] + int(yy), int(mm), int(dd))
    except ValueError:
        raise InvalidHetuError("the identity code does not contain a valid date", field="hetu") from None
    if int(individual) < 2:
        raise InvalidHetuError("the identity code has an invalid individual number", field="hetu")
    if CHECK_CHARS[int(dd + mm + yy + individual) % 31] != check:
        raise InvalidHetuError("the identity code's check character does not match", field="hetu")
    return text


def birth_date(hetu: str) -> date:
    text = normalise_hetu(hetu)
    return date(CENTURIES[text[6]] + int(text[4:6]), int(text[2:4]), int(text[0:2]))


def is_test_code(hetu: str) -> bool:
    return int(normalise_hetu(hetu)[7:10]) >= 900


def make_hetu(born: date, individual: int) -> str:
    """Build a valid identity code (used by the demo and tests with individual numbers 900–999)."""
    sign = {1800: "+", 1900: "-", 2000: "A"}[born.year // 100 * 100]
    digits = f"{born.day:02d}{born.month:02d}{born.year % 100:02d}"
    return f"{digits}{sign}{individual:03d}{CHECK_CHARS[int(f'{digits}{individual:03d}') % 31]}"
