"""What a partner signs: the client assertion that authenticates it (RFC 7523) and the DPoP proofs that bind its
access token to a key of its own (RFC 9449). Pure functions over keys, claims and the time: no HTTP.

Both are checked by the broker exactly as broker/oauth/assertion.py and broker/oauth/dpop.py say; the comments
below name the rule each value follows.

Algorithms. An Ed25519 key signs under "Ed25519", the fully-specified name of RFC 9864 §2.2. The broker accepts it
from a partner registered with "Ed25519" and from one registered with the deprecated polymorphic "EdDSA", so the
client never needs the old name (and joserfc's SecurityWarning for it is never reached). A P-256 key signs under
"ES256". Nothing else is accepted by the broker, so nothing else is offered here.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import secrets
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, OKPKey
from joserfc.jws import JWSRegistry

__all__ = [
    "ASSERTION_LIFETIME",
    "ASSERTION_TYPE",
    "SigningKey",
    "access_token_hash",
    "client_assertion",
    "dpop_proof",
    "load_signing_key",
    "new_dpop_key",
    "normalise_url",
]

#: RFC 7523 §2.2: the `client_assertion_type` of a JWT client assertion.
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
#: Seconds from `iat` to `exp`. The broker refuses an assertion whose `exp` is more than 60 s ahead of its clock
#: and accepts an `iat` up to 10 s ahead (broker/config.py): 50 s keeps every clock it accepts within the cap.
ASSERTION_LIFETIME = 50
#: The `typ` of a client assertion: explicit typing (RFC 8725 §3.11) with the media type that
#: draft-ietf-oauth-rfc7523bis registers for client authentication JWTs; the broker accepts it.
ASSERTION_TYP = "client-authentication+jwt"
#: The `typ` of a DPoP proof (RFC 9449 §4.2).
PROOF_TYP = "dpop+jwt"

_ALGORITHMS = {("OKP", "Ed25519"): "Ed25519", ("EC", "P-256"): "ES256"}
# Names a key's own `alg` member may carry for each algorithm used here ("EdDSA": RFC 8037, deprecated by RFC 9864).
_ALG_NAMES = {"Ed25519": ("Ed25519", "EdDSA"), "ES256": ("ES256",)}
# The members a key is made of (RFC 7638 §3.2; RFC 8037 §2; RFC 7518 §6.2): `alg`, `use` and `key_ops` are left
# out when a key is imported for signing, because joserfc would compare a key's "EdDSA" with "Ed25519" literally.
_PRIVATE_MEMBERS = {"OKP": ("kty", "crv", "x", "d"), "EC": ("kty", "crv", "x", "y", "d")}
_PUBLIC_MEMBERS = {"OKP": ("kty", "crv", "x"), "EC": ("kty", "crv", "x", "y")}
_REGISTRY = JWSRegistry(algorithms=["Ed25519", "ES256"])
_PERCENT = re.compile(r"%[0-9A-Fa-f]{2}")
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_DEFAULT_PORTS = {"http": 80, "https": 443}


class SigningKey:
    """A private key with the one algorithm it signs under and its `kid`, if it has one."""

    def __init__(self, key: OKPKey | ECKey, alg: str, kid: str | None) -> None:
        self.key = key
        self.alg = alg
        self.kid = kid

    @property
    def public_jwk(self) -> dict[str, Any]:
        """The public key as the `jwk` header of a DPoP proof carries it: its defining members only."""
        public = self.key.as_dict(private=False)
        return {name: public[name] for name in _PUBLIC_MEMBERS[self.key.key_type]}

    @property
    def thumbprint(self) -> str:
        """The RFC 7638 SHA-256 thumbprint: the `jkt` the broker binds a token to (RFC 9449 §6.1)."""
        return str(self.key.thumbprint())

    def sign(self, header: dict[str, Any], claims: dict[str, Any]) -> str:
        payload = json.dumps(claims, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        return jws.serialize_compact({"alg": self.alg, **header}, payload, self.key, registry=_REGISTRY)


def load_signing_key(source: SigningKey | OKPKey | ECKey | dict[str, Any] | str | os.PathLike[str]) -> SigningKey:
    """A private key from a JWK (a dict, or the path of a file holding one) or a joserfc key. Raises ValueError
    naming what is wrong: not private, or of a type the broker does not accept."""
    if isinstance(source, SigningKey):
        return source
    if isinstance(source, str | os.PathLike):
        path = Path(source)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except OSError as error:
            raise ValueError(f"cannot read the key file {path}: {error.strerror}") from error
        except ValueError as error:
            raise ValueError(f"the key file {path} does not hold a JSON Web Key") from error
        return _signing_key(data, f"the key in {path}")
    if isinstance(source, OKPKey | ECKey):
        return _signing_key(dict(source.as_dict(private=True)), "the key")
    if isinstance(source, dict):
        return _signing_key(source, "the key")
    raise ValueError(f"a key must be a private JWK (a dict or a file's path), not {type(source).__name__}")


def new_dpop_key() -> SigningKey:
    """A fresh Ed25519 key for DPoP: a system's own key pair, never its registered client key (docs/api.md)."""
    return _signing_key(dict(OKPKey.generate_key("Ed25519").as_dict(private=True)), "the DPoP key")


def _signing_key(data: Any, what: str) -> SigningKey:
    if not isinstance(data, dict):
        raise ValueError(f"{what} is not a JSON Web Key object")
    kty, crv = data.get("kty"), data.get("crv")
    if not isinstance(kty, str) or not isinstance(crv, str) or (kty, crv) not in _ALGORITHMS:
        raise ValueError(f"{what} is {kty}/{crv}; the broker accepts Ed25519 (OKP) and P-256 (EC) keys")
    alg = _ALGORITHMS[(kty, crv)]
    if not isinstance(data.get("d"), str):
        raise ValueError(f"{what} is a public key: signing needs the private key (its 'd' member)")
    if "alg" in data and data["alg"] not in _ALG_NAMES[alg]:
        raise ValueError(f"{what} is marked for algorithm {data['alg']!r}, not {alg}")
    members = {name: data[name] for name in _PRIVATE_MEMBERS[kty] if name in data}
    try:
        key: OKPKey | ECKey = OKPKey.import_key(members) if kty == "OKP" else ECKey.import_key(members)
    except (JoseError, ValueError, TypeError) as error:
        raise ValueError(f"{what} cannot be read as a {crv} key") from error
    kid = data.get("kid")
    return SigningKey(key, alg, kid if isinstance(kid, str) and kid else None)


def client_assertion(
    key: SigningKey,
    *,
    client_id: str,
    issuer: str,
    actor: tuple[str, str],
    now: float,
    lifetime: int = ASSERTION_LIFETIME,
) -> str:
    """A client assertion for `private_key_jwt` (RFC 7523 §2.2, §3), made fresh for every token request."""
    staff_id, role = actor
    issued = int(now)
    claims = {
        # RFC 7523 §3 items 1 and 2: both are the client_id when the client authenticates itself.
        "iss": client_id,
        "sub": client_id,
        # RFC 10070: the authorization server's issuer identifier, one string — not the token endpoint's URL.
        "aud": issuer,
        "iat": issued,
        "exp": issued + lifetime,
        # RFC 7523 §3 item 7: single use; the broker refuses a second token request with the same `jti`.
        "jti": secrets.token_urlsafe(24),
        # The acting professional (RFC 8693 §4.1's `act`): the broker records who asked, in that role.
        "act": {"sub": staff_id, "role": role},
    }
    header: dict[str, Any] = {"typ": ASSERTION_TYP}
    if key.kid:  # names the registered key when a partner has several (broker/oauth/assertion.py)
        header["kid"] = key.kid
    return key.sign(header, claims)


def dpop_proof(
    key: SigningKey,
    *,
    method: str,
    url: str,
    now: float,
    access_token: str | None = None,
    nonce: str | None = None,
) -> str:
    """A DPoP proof for one request (RFC 9449 §4.2): good once, for this method and URL, for about a minute."""
    htu = normalise_url(url)
    if htu is None:
        raise ValueError(f"not an absolute http(s) URL: {url!r}")
    claims: dict[str, Any] = {
        "jti": secrets.token_urlsafe(24),  # §11.1: the broker uses each proof once
        "htm": method,
        "htu": htu,
        "iat": int(now),
    }
    if access_token is not None:
        claims["ath"] = access_token_hash(access_token)
    if nonce is not None:
        claims["nonce"] = nonce  # §8, §9: the server's latest `DPoP-Nonce`
    return key.sign({"typ": PROOF_TYP, "jwk": key.public_jwk}, claims)


def access_token_hash(token: str) -> str:
    """The `ath` claim: base64url, unpadded, of the SHA-256 of the access token's ASCII octets (RFC 9449 §4.2)."""
    digest = hashlib.sha256(token.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def normalise_url(url: str) -> str | None:
    """The `htu` of a request to `url` (RFC 9449 §4.2: without query and fragment), normalised the way the broker
    compares it: RFC 3986 §6.2.2 (case, percent-encoding) and §6.2.3 (default port, empty path). None if `url` is
    not an absolute http(s) URL. The same rules as broker/oauth/dpop.py's, kept here so that a partner needs none
    of the server's code."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    host = parts.hostname
    if scheme not in _DEFAULT_PORTS or not host or parts.username is not None or parts.password is not None:
        return None
    if ":" in host:  # an IPv6 literal keeps its brackets
        host = f"[{host}]"
    authority = host if port is None or port == _DEFAULT_PORTS[scheme] else f"{host}:{port}"
    path = _PERCENT.sub(_normalise_escape, parts.path) or "/"
    return f"{scheme}://{authority}{path}"


def _normalise_escape(match: re.Match[str]) -> str:
    # RFC 3986 §6.2.2.1 and §6.2.2.2: escapes in upper case, unreserved characters unescaped.
    char = chr(int(match.group(0)[1:], 16))
    return char if char in _UNRESERVED else match.group(0).upper()
