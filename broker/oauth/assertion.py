"""Client assertions: the JWT a partner signs to authenticate at the token endpoint (RFC 7523 §2.2, §3).

Pure functions over the assertion text, the partner's registered keys and `now`: no database, no Flask.
Validation happens in two steps because the partner (and so its keys) is only known from the assertion:

1. `read_assertion` — size limit, structure, header allow-list, claims as a JSON object. Nothing is
   trusted yet.
2. `verify_assertion` — the signature with the partner's pinned algorithm and registered key, then the
   claims against the injected clock.

Why the token endpoint is written on joserfc directly rather than through Authlib's
`JWTBearerClientAssertion`: that class decodes with joserfc's default registry (algorithm not pinned),
validates time with the real clock, accepts `aud` arrays, has no lifetime cap and a check-then-set `jti`
(PITFALLS.md). Overriding every one of those leaves nothing of the class but its name.

EdDSA and Ed25519: RFC 9864 deprecates the polymorphic name "EdDSA"; for an Ed25519 key it means exactly
the fully-specified "Ed25519" (same signing input, same signature). A partner registered with "Ed25519" must
use that name; a partner registered with "EdDSA" may use either. Both are verified with joserfc's Ed25519
algorithm, so joserfc's deprecated EdDSA model — and its SecurityWarning — is never reached. (Suppressing the
warning with `warnings.catch_warnings()` would swap the process-wide filter list, which is not thread-safe
before Python 3.14: concurrent token requests could restore each other's filters.)
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from joserfc import jwk, jws
from joserfc.errors import JoseError
from joserfc.jws import JWSRegistry
from joserfc.util import urlsafe_b64decode

from broker.oauth.errors import InvalidClientError, InvalidRequestError

#: RFC 7523 §2.2.
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
#: Assertions longer than this are refused before any decoding (an Ed25519 assertion is well under 1 KiB).
MAX_ASSERTION_LENGTH = 8 * 1024
#: Column sizes in `assertion_jtis` and `access_tokens`.
MAX_JTI_LENGTH = 200
MAX_ACTOR_ID_LENGTH = 120
MAX_ROLE_LENGTH = 40


@dataclass(frozen=True)
class _PinnedAlgorithm:
    """What a partner's registered `alg` allows: the header names, the key type and curve, and the joserfc
    algorithm that verifies the signature."""

    header_names: frozenset[str]
    kty: str
    crv: str
    verify_as: str


# Never HMAC (the partner's public key would become a shared secret), never "none", never RSA.
PINNED_ALGORITHMS: dict[str, _PinnedAlgorithm] = {
    "EdDSA": _PinnedAlgorithm(frozenset({"EdDSA", "Ed25519"}), "OKP", "Ed25519", "Ed25519"),
    "Ed25519": _PinnedAlgorithm(frozenset({"Ed25519"}), "OKP", "Ed25519", "Ed25519"),
    "ES256": _PinnedAlgorithm(frozenset({"ES256"}), "EC", "P-256", "ES256"),
}
SIGNING_ALGORITHMS: tuple[str, ...] = ("EdDSA", "Ed25519", "ES256")

# Header parameters an assertion may carry. Everything else is refused — above all the ones that would carry
# or point at a key (`jwk`, `jku`, `x5u`, `x5c`: CVE-2026-27962), `crit`, and `b64` (RFC 7797 unencoded
# payloads).
_ALLOWED_HEADER = frozenset({"alg", "kid", "typ"})
_KEY_BEARING_HEADER = frozenset({"jwk", "jku", "x5u", "x5c", "x5t", "x5t#S256"})
# `typ` is optional; when present it must name a JWT (RFC 7519 §5.1) or a client assertion
# (draft-ietf-oauth-rfc7523bis). Media types compare case-insensitively, "application/" may be left out
# (RFC 7515 §4.1.9).
_ACCEPTED_TYP = frozenset({"jwt", "client-authentication+jwt"})
_PUBLIC_MEMBERS = {"OKP": ("kty", "crv", "x"), "EC": ("kty", "crv", "x", "y")}
_ACT_MEMBERS = frozenset({"sub", "role"})

# Only used to read the three segments with joserfc's size limits; verification pins its own algorithm.
_READING_REGISTRY = JWSRegistry(algorithms=list(SIGNING_ALGORITHMS))


@dataclass(frozen=True)
class UnverifiedAssertion:
    """An assertion taken apart but not yet trusted."""

    header: dict[str, Any]
    claims: dict[str, Any]
    signing_input: bytes
    signature: bytes

    @property
    def client_id(self) -> str:
        """The claimed client: `sub` (RFC 7523 §3 item 2: the client_id of the OAuth client)."""
        sub = self.claims.get("sub")
        if not isinstance(sub, str) or not sub:
            raise InvalidClientError("The client assertion must carry the client_id in 'sub'.")
        return sub


@dataclass(frozen=True)
class VerifiedAssertion:
    client_id: str
    jti: str
    expires_at: datetime
    actor_id: str
    actor_role: str


def read_assertion(assertion: str) -> UnverifiedAssertion:
    """Split and decode an assertion without trusting it. Raises `InvalidClientError`."""
    if len(assertion) > MAX_ASSERTION_LENGTH:
        raise InvalidClientError(f"The client assertion is longer than {MAX_ASSERTION_LENGTH} characters.")
    if not assertion.isascii():
        raise InvalidClientError("The client assertion is not a JWS compact serialization.")
    try:
        obj = jws.extract_compact(assertion.encode("ascii"), registry=_READING_REGISTRY)
        signature = urlsafe_b64decode(obj.segments["signature"])
    except (JoseError, ValueError) as error:
        raise InvalidClientError("The client assertion is not a JWS compact serialization.") from error
    header = dict(obj.headers())
    _check_header(header)
    try:
        claims = json.loads(obj.payload)
    except (TypeError, ValueError) as error:
        raise InvalidClientError("The client assertion's payload is not JSON.") from error
    if not isinstance(claims, dict):
        raise InvalidClientError("The client assertion's payload is not a JSON object.")
    if holds_nul(claims):
        raise InvalidClientError("The client assertion's claims must not contain the character U+0000.")
    signing_input = obj.segments["header"] + b"." + obj.segments["payload"]
    return UnverifiedAssertion(header=header, claims=claims, signing_input=signing_input, signature=signature)


def holds_nul(value: Any) -> bool:
    """Whether a decoded JSON value holds U+0000 in any string or member name. No claim the broker reads has a use
    for it, and PostgreSQL's text columns (the `jti`, the client and staff ids) cannot store it: such a JWT is
    refused when it is read, not by the database."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(holds_nul(key) or holds_nul(item) for key, item in value.items())
    if isinstance(value, list):
        return any(holds_nul(item) for item in value)
    return False


def _check_header(header: dict[str, Any]) -> None:
    key_bearing = sorted(_KEY_BEARING_HEADER & header.keys())
    if key_bearing:
        raise InvalidClientError(
            f"Header parameter {key_bearing[0]!r} is not accepted: the key is always the partner's registered key."
        )
    unknown = sorted(header.keys() - _ALLOWED_HEADER)
    if unknown:
        raise InvalidClientError(f"Header parameter {unknown[0]!r} is not accepted in a client assertion.")
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in SIGNING_ALGORITHMS:
        raise InvalidClientError(
            f"Algorithm {alg!r} is not accepted; the broker accepts {', '.join(SIGNING_ALGORITHMS)}."
        )
    if "kid" in header and not (isinstance(header["kid"], str) and header["kid"]):
        raise InvalidClientError("Header parameter 'kid' must be a non-empty string.")
    if "typ" in header:
        typ = header["typ"]
        if not isinstance(typ, str) or typ.lower().removeprefix("application/") not in _ACCEPTED_TYP:
            raise InvalidClientError(f"Header 'typ' {typ!r} does not name a JWT client assertion.")


def verify_assertion(
    assertion: UnverifiedAssertion,
    *,
    client_id: str,
    registered_alg: str,
    jwks: dict[str, Any],
    issuer: str,
    now: datetime,
    max_lifetime: int,
    skew: int,
) -> VerifiedAssertion:
    """Verify the signature with the partner's pinned algorithm and registered key, then the claims.

    Raises `InvalidClientError` (authentication failed) or `InvalidRequestError` (a well-signed assertion
    whose `act` claim is missing or malformed)."""
    _verify_signature(assertion, registered_alg=registered_alg, jwks=jwks)
    claims = assertion.claims
    _verify_issuer_and_subject(claims, client_id)
    _verify_audience(claims, issuer)
    expires_at = _verify_times(claims, now=now, max_lifetime=max_lifetime, skew=skew)
    jti = claims.get("jti")
    if not isinstance(jti, str) or not jti:
        raise InvalidClientError("The client assertion must carry a 'jti' (RFC 7523 §3 item 7).")
    if len(jti) > MAX_JTI_LENGTH:
        raise InvalidClientError(f"The assertion's 'jti' is longer than {MAX_JTI_LENGTH} characters.")
    actor_id, actor_role = read_actor(claims)
    return VerifiedAssertion(
        client_id=client_id, jti=jti, expires_at=expires_at, actor_id=actor_id, actor_role=actor_role
    )


def _verify_signature(assertion: UnverifiedAssertion, *, registered_alg: str, jwks: dict[str, Any]) -> None:
    pinned = PINNED_ALGORITHMS.get(registered_alg)
    if pinned is None:  # a registration error, not the partner's: refuse rather than guess
        raise InvalidClientError("The partner's registered algorithm is not supported.")
    alg = assertion.header["alg"]
    if alg not in pinned.header_names:
        raise InvalidClientError(f"Algorithm {alg!r} is not the one registered for this client ({registered_alg}).")
    key = _registered_key(jwks, assertion.header.get("kid"), pinned)
    registry = JWSRegistry(algorithms=[pinned.verify_as])
    try:
        algorithm = registry.get_alg(pinned.verify_as)
        algorithm.check_key(key)
        valid = algorithm.verify(assertion.signing_input, assertion.signature, key)
    except (JoseError, ValueError) as error:
        raise InvalidClientError("The client assertion's signature is invalid.") from error
    if not valid:
        raise InvalidClientError("The client assertion's signature is invalid.")


def _registered_key(jwks: dict[str, Any], kid: str | None, pinned: _PinnedAlgorithm) -> jwk.Key:
    """The key chosen by `kid` from the partner's registered JWKS — or its only key when there is no kid."""
    keys = jwks.get("keys") if isinstance(jwks, dict) else None
    if not isinstance(keys, list) or not keys:
        raise InvalidClientError("No key is registered for this client.")
    if kid is not None:
        matches = [k for k in keys if isinstance(k, dict) and k.get("kid") == kid]
        if len(matches) != 1:
            raise InvalidClientError(f"Key {kid!r} is not registered for this client.")
        data = matches[0]
    elif len(keys) == 1 and isinstance(keys[0], dict):
        data = keys[0]
    else:
        raise InvalidClientError("This client has several registered keys: the assertion must name one by 'kid'.")
    if data.get("kty") != pinned.kty or data.get("crv") != pinned.crv:
        raise InvalidClientError("The registered key does not fit the client's registered algorithm.")
    if data.get("use", "sig") != "sig" or "verify" not in data.get("key_ops", ["verify"]):
        raise InvalidClientError("The registered key is not a signature-verification key.")
    if "alg" in data and data["alg"] not in pinned.header_names:
        raise InvalidClientError("The registered key is meant for another algorithm.")
    # Only the public members: `alg`, `use` and `key_ops` were checked above (joserfc would compare a key's
    # "EdDSA" with "Ed25519" literally), and a private member registered by mistake is never used.
    public = {name: data[name] for name in _PUBLIC_MEMBERS[pinned.kty] if name in data}
    try:
        return jwk.import_key(public)
    except (JoseError, ValueError, TypeError) as error:
        raise InvalidClientError("The registered key cannot be read.") from error


def _verify_issuer_and_subject(claims: dict[str, Any], client_id: str) -> None:
    # RFC 7523 §3 items 1 and 2: for client authentication both are the client_id.
    if claims.get("iss") != client_id or claims.get("sub") != client_id:
        raise InvalidClientError("The assertion's 'iss' and 'sub' must both be the client_id.")


def _verify_audience(claims: dict[str, Any], issuer: str) -> None:
    # RFC 10070: the audience of a client assertion is the authorization server's issuer identifier, as a
    # single string. The token endpoint URL and arrays are refused, so that an assertion made for another
    # server (or for several) can never be replayed here.
    aud = claims.get("aud")
    if isinstance(aud, list):
        raise InvalidClientError("The assertion's 'aud' must be a single string (the issuer), not an array.")
    if aud != issuer:
        raise InvalidClientError(f"The assertion's 'aud' must be the issuer identifier {issuer!r}.")


def _numeric_date(claims: dict[str, Any], name: str, *, required: bool) -> float | None:
    value = claims.get(name)
    if value is None:
        if required:
            raise InvalidClientError(f"The client assertion must carry '{name}'.")
        return None
    # A NumericDate is a finite JSON number (RFC 7519 §2); a NaN `exp` would never expire.
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidClientError(f"The assertion's '{name}' is not a NumericDate.")
    return float(value)


def _verify_times(claims: dict[str, Any], *, now: datetime, max_lifetime: int, skew: int) -> datetime:
    """Check `exp`, `iat` and `nbf` against the injected clock; return when the `jti` may be forgotten.

    `skew` tolerates partner clocks that run a little fast or slow. An assertion is accepted only while
    `now < exp + skew`, so keeping its `jti` until `exp + skew` covers every moment it could be replayed."""
    current = now.timestamp()
    exp = _numeric_date(claims, "exp", required=True)
    iat = _numeric_date(claims, "iat", required=True)
    nbf = _numeric_date(claims, "nbf", required=False)
    assert exp is not None and iat is not None
    if exp <= current - skew:
        raise InvalidClientError("The client assertion has expired ('exp').")
    if exp > current + max_lifetime:
        raise InvalidClientError(
            f"The assertion's 'exp' is more than {max_lifetime} seconds ahead: client assertions must be short-lived."
        )
    if iat > current + skew:
        raise InvalidClientError("The assertion's 'iat' is in the future.")
    if nbf is not None and nbf > current + skew:
        raise InvalidClientError("The client assertion is not valid yet ('nbf').")
    return datetime.fromtimestamp(exp + skew, UTC)


def read_actor(claims: dict[str, Any]) -> tuple[str, str]:
    """The acting professional from the `act` claim (RFC 8693 §4.1): `{"sub": staff id, "role": role}`.

    Whether the role is allowed for the partner's organisation type is the policy's question (tokens.py)."""
    act = claims.get("act")
    if act is None:
        raise InvalidRequestError(
            'The client assertion must carry the acting professional: "act": {"sub": <staff id>, "role": <role>}.'
        )
    if not isinstance(act, dict):
        raise InvalidRequestError("The assertion's 'act' claim must be a JSON object.")
    extra = sorted(act.keys() - _ACT_MEMBERS)
    if extra:
        raise InvalidRequestError(f"The assertion's 'act' claim may hold only 'sub' and 'role', not {extra[0]!r}.")
    sub, role = act.get("sub"), act.get("role")
    if not isinstance(sub, str) or not sub.strip():
        raise InvalidRequestError("'act.sub' (the staff id of the acting professional) must be a non-empty string.")
    if len(sub) > MAX_ACTOR_ID_LENGTH:
        raise InvalidRequestError(f"'act.sub' is longer than {MAX_ACTOR_ID_LENGTH} characters.")
    if not isinstance(role, str) or not role:
        raise InvalidRequestError("'act.role' (the professional's role) must be a non-empty string.")
    if len(role) > MAX_ROLE_LENGTH:
        raise InvalidRequestError(f"'act.role' is longer than {MAX_ROLE_LENGTH} characters.")
    return sub, role
