"""Who one can log in as at the development identity provider, and what it says about them.

The persons come from the instance's `demo.json` (written by `broker demo`) when it is there. Two personas
always exist: Leena Korhonen, the representative of the demo (custodian of the minor Elias — the mandate itself
is registered in the broker, not asserted by the IdP), and a data-protection officer who is no person of the
broker and carries `roles: ["dpo"]`.

Only test identity codes (individual numbers 900–999) are ever handed out: a line in `demo.json` with any other
code is left out, so that the development IdP can never assert a real person's identity.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from broker.domain.errors import InvalidHetuError
from broker.domain.hetu import is_test_code, normalise_hetu

log = logging.getLogger("broker.devidp")

#: The personal identity code (henkilötunnus) under the name Suomi.fi e-Identification gives it: the attribute
#: nationalIdentificationNumber, `urn:oid:1.2.246.21` (Suomi.fi, "Tunnistetusta käyttäjästä välitettävät
#: attribuutit", https://palveluhallinta.suomi.fi/fi/tuki/artikkelit/590ad07b14bbb10001966f50; 1.2.246 is
#: Finland's OID arc). Identity brokers' OIDC interfaces use the same URI as the claim name.
PERSONAL_IDENTITY_CODE_CLAIM = "urn:oid:1.2.246.21"
#: The scope that releases PERSONAL_IDENTITY_CODE_CLAIM; without it the identity code is never sent.
PERSONAL_IDENTITY_CODE_SCOPE = "personal_identity_code"
SCOPES = ("openid", "profile", PERSONAL_IDENTITY_CODE_SCOPE)
PROFILE_CLAIMS = ("name", "given_name", "family_name")
CLAIMS = ("sub", *PROFILE_CLAIMS, PERSONAL_IDENTITY_CODE_CLAIM, "roles")

DPO_LOGIN = "dpo"
REPRESENTATIVE_KEY = "leena"


@dataclass(frozen=True)
class Persona:
    login: str
    name: str
    given_name: str
    family_name: str
    hetu: str | None
    roles: tuple[str, ...]
    description: str

    def claims(self, scopes: Iterable[str], *, sub: str) -> dict[str, Any]:
        """The claims this persona releases for `scopes` (OpenID Connect Core 1.0 §5.4 for `profile`).
        `roles` always goes with `openid`: the portal needs it to decide what to show."""
        granted = set(scopes)
        claims: dict[str, Any] = {"sub": sub}
        if "profile" in granted:
            claims.update(name=self.name, given_name=self.given_name, family_name=self.family_name)
        if PERSONAL_IDENTITY_CODE_SCOPE in granted and self.hetu is not None:
            claims[PERSONAL_IDENTITY_CODE_CLAIM] = self.hetu
        claims["roles"] = list(self.roles)
        return claims


def pairwise_subject(key: bytes, sector: str, login: str) -> str:
    """A pairwise subject identifier (OpenID Connect Core 1.0 §8.1): stable for one persona and one sector
    (the host of the client's redirect URI), opaque, and different for every other sector."""
    digest = hmac.new(key, f"{sector}\x00{login}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def load_personas(instance_path: Path) -> dict[str, Persona]:
    """Login → persona, in the order the login page lists them. Read on every call: `broker demo` may rewrite
    demo.json while the server runs, and every worker process must see the same list."""
    personas: dict[str, Persona] = {}
    for entry in _demo_persons(instance_path / "demo.json"):
        persona = _person_persona(entry)
        if persona is not None and persona.login not in personas and persona.login != DPO_LOGIN:
            personas[persona.login] = persona
    # Imported here, not at the top: broker.demo brings Alembic with it (about 0.2 s), which every worker would
    # otherwise pay at start.
    from broker.demo import PERSONS

    leena = next(p for p in PERSONS if p.key == REPRESENTATIVE_KEY)
    representative = personas.get(leena.login) or _person_persona(
        {"login": leena.login, "name": leena.name, "hetu": leena.hetu}
    )
    assert representative is not None  # the built-in demo person is valid
    personas[leena.login] = replace(
        representative, description="Client; representative (custodian of the minor Elias Korhonen)"
    )
    personas[DPO_LOGIN] = Persona(
        login=DPO_LOGIN,
        name="Tiina Tietosuoja",
        given_name="Tiina",
        family_name="Tietosuoja",
        hetu=None,
        roles=("dpo",),
        description="Data-protection officer (no person record)",
    )
    return personas


def _demo_persons(path: Path) -> list[dict[str, Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    except ValueError:
        log.warning("demo.json is not valid JSON; only the built-in personas are offered")
        return []
    persons = data.get("persons") if isinstance(data, dict) else None
    return [p for p in persons if isinstance(p, dict)] if isinstance(persons, list) else []


def _person_persona(entry: dict[str, Any]) -> Persona | None:
    login, name = entry.get("login"), entry.get("name")
    if not (isinstance(login, str) and login.isidentifier() and len(login) <= 64 and isinstance(name, str)):
        return None
    try:
        hetu = normalise_hetu(entry.get("hetu"))
        if not is_test_code(hetu):
            raise InvalidHetuError("not a test identity code")
    except InvalidHetuError:
        # The message never names the code (DESIGN.md invariant 6).
        log.warning("demo.json person %s has no valid test identity code; left out", login)
        return None
    given, _, family = name.strip().rpartition(" ")
    return Persona(
        login=login,
        name=name.strip(),
        given_name=given or family,
        family_name=family,
        hetu=hetu,
        roles=("client",),
        description="Client",
    )
