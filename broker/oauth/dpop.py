"""DPoP proofs (RFC 9449): the partner proves, on every request, that it holds the key its access token is bound to.

Pure functions over the `DPoP` header values, the request's method and public URL, the access token and `now`: no
database, no Flask. What needs the database — using a proof's `jti` once — is in tokens.py, which also binds new
tokens to `DpopProof.jkt`; protector.py checks a token's binding.

`verify_proof` follows the checklist of RFC 9449 §4.3:

1. exactly one `DPoP` header, not longer than `MAX_PROOF_LENGTH` (checked before anything is decoded);
2. a JWS compact serialization whose payload is a JSON object;
3. `typ` is `dpop+jwt`;
4. `alg` is an asymmetric algorithm of `DPOP_SIGNING_ALGORITHMS` — never `none`, never HMAC;
5. `jwk` is a public key of the type `alg` needs, with no private member (`d`, …), and the signature verifies
   with it;
6. `jti`, `htm`, `htu` and `iat` are present; `htm` is the request's method; `htu` is the request's URL without
   query and fragment, compared after syntax- and scheme-based normalisation (RFC 3986 §6.2.2, §6.2.3);
7. the server's nonce, when nonces are on (§8, §9);
8. `iat` is at most `max_age` seconds old and at most `skew` seconds ahead (§11.1);
9. at a protected resource, `ath` is the base64url SHA-256 of the access token (§4.2, §7.1).

The URL a proof is checked against is the broker's public one: its issuer identifier (scheme, host, port and any
path prefix) followed by the route's path. The `Host` header and the scheme the server saw are never used — behind
a proxy they are the proxy's, and trusting them would let a proof made for another host pass here.

Ed25519 and EdDSA: as for client assertions (assertion.py), a proof signed under the deprecated polymorphic name
"EdDSA" (RFC 9864) is verified with joserfc's Ed25519 algorithm, so that joserfc's EdDSA model and its
SecurityWarning are never reached.

Server nonces are stateless: an HMAC over the current time step, so that every worker and every process agrees
on them without shared state. A nonce is accepted during its own step and the next one.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

from joserfc import jwk, jws
from joserfc.errors import JoseError
from joserfc.jws import JWSRegistry
from joserfc.util import urlsafe_b64decode

from broker.oauth.assertion import holds_nul
from broker.oauth.errors import DpopNonceError, DpopProofError

#: The `typ` of a DPoP proof (RFC 9449 §4.2).
PROOF_TYPE = "dpop+jwt"
#: Proof algorithms, as published in the metadata's `dpop_signing_alg_values_supported` (RFC 9449 §5.1).
DPOP_SIGNING_ALGORITHMS: tuple[str, ...] = ("EdDSA", "Ed25519", "ES256")
#: Longer headers are refused before any decoding; an ES256 proof with `ath` and a nonce is under 1 KiB.
MAX_PROOF_LENGTH = 4096
#: The size of `dpop_proof_jtis.jti`.
MAX_JTI_LENGTH = 200


@dataclass(frozen=True)
class _Algorithm:
    kty: str
    crv: str
    verify_as: str


_ALGORITHMS = {
    "EdDSA": _Algorithm("OKP", "Ed25519", "Ed25519"),
    "Ed25519": _Algorithm("OKP", "Ed25519", "Ed25519"),
    "ES256": _Algorithm("EC", "P-256", "ES256"),
}
_VERIFYING_REGISTRY = JWSRegistry(algorithms=["Ed25519", "ES256"])
# Only used to take the three segments apart with joserfc's size limits; verification picks its own algorithm.
_READING_REGISTRY = JWSRegistry(algorithms=list(DPOP_SIGNING_ALGORITHMS))
# The members of a public key that the key is made of (RFC 7638 §3.2); others (`kid`, `use`, …) are ignored.
_PUBLIC_MEMBERS = {"OKP": ("kty", "crv", "x"), "EC": ("kty", "crv", "x", "y")}
# Members that only a private (or symmetric) key has (RFC 7518 §6.2.2, §6.3.2, §6.4; RFC 8037 §2).
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
# The proof's key is its `jwk` and nothing else; extensions the broker does not understand are refused
# (RFC 7515 §4.1.11 `crit`, RFC 7797 `b64`).
_REFUSED_HEADER = ("jku", "x5u", "x5c", "x5t", "x5t#S256", "crit", "b64")
_PERCENT = re.compile(r"%[0-9A-Fa-f]{2}")
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class DpopRequest:
    """What a proof is checked against: every `DPoP` header of the request, its method and its public URL."""

    proofs: tuple[str, ...]
    method: str
    url: str


@dataclass(frozen=True)
class DpopProof:
    """A verified proof: the thumbprint of its key (RFC 7638, SHA-256) and its id, to be used once."""

    jkt: str
    jti: str
    #: When the proof's `iat` leaves the accepted window: its `jti` may be forgotten after that.
    expires_at: datetime


class DpopNonces:
    """Stateless server nonces (RFC 9449 §8, §9): base64url(HMAC-SHA-256(key, time step))[:16 bytes].

    `key` is derived from a secret every process of the broker holds (tokens.py). A nonce is accepted during the
    step it was issued in and the next, so it lives between one and two steps."""

    def __init__(self, key: bytes, step: int) -> None:
        self._key = key
        self._step = step

    def current(self, now: datetime) -> str:
        return self._nonce(int(now.timestamp()) // self._step)

    def is_valid(self, nonce: str, now: datetime) -> bool:
        step = int(now.timestamp()) // self._step
        sent = nonce.encode("ascii", "replace")
        # Both compared, without an early exit, so that the answer's timing does not say which step matched.
        current = hmac.compare_digest(sent, self._nonce(step).encode("ascii"))
        previous = hmac.compare_digest(sent, self._nonce(step - 1).encode("ascii"))
        return current or previous

    def _nonce(self, step: int) -> str:
        mac = hmac.new(self._key, step.to_bytes(8, "big", signed=True), hashlib.sha256).digest()[:16]
        return _b64(mac)


def access_token_hash(token: str) -> str:
    """The `ath` claim: base64url of the SHA-256 of the access token's ASCII octets (RFC 9449 §4.2)."""
    return _b64(hashlib.sha256(token.encode("ascii")).digest())


def verify_proof(
    values: Sequence[str],
    *,
    method: str,
    url: str,
    now: datetime,
    max_age: int,
    skew: int,
    access_token: str | None = None,
    nonces: DpopNonces | None = None,
) -> DpopProof:
    """Verify the `DPoP` header values of one request (every occurrence of the header, in order).

    `url` is the request's public URL; `access_token` is given at protected resources, where `ath` is required.
    Raises `DpopNonceError` when the server's nonce is missing or stale (the error carries a fresh one), and
    `DpopProofError` for everything else."""
    if not values:
        raise DpopProofError("A DPoP proof is required: send one in the 'DPoP' header (RFC 9449 §4).")
    if len(values) > 1:
        raise DpopProofError("The request carries more than one 'DPoP' header (RFC 9449 §4.3).")
    header, claims, signing_input, signature = _read(values[0])
    key, thumbprint = _check_header(header)
    _verify_signature(header["alg"], key, signing_input, signature)
    jti = _check_claims(claims, method=method, url=url)
    if nonces is not None:
        _check_nonce(claims, nonces, now)
    iat = _check_time(claims, now=now, max_age=max_age, skew=skew)
    if access_token is not None:
        ath = claims.get("ath")
        if not isinstance(ath, str):
            raise DpopProofError("The DPoP proof must carry 'ath', the hash of the access token (RFC 9449 §4.2).")
        if not hmac.compare_digest(ath.encode("ascii", "replace"), access_token_hash(access_token).encode("ascii")):
            raise DpopProofError("The DPoP proof's 'ath' is not the hash of this access token.")
    return DpopProof(jkt=thumbprint, jti=jti, expires_at=datetime.fromtimestamp(iat + max_age, UTC))


def normalise_url(url: str) -> str | None:
    """`url` without query and fragment, normalised by RFC 3986 §6.2.2 (case, percent-encoding) and §6.2.3
    (default port, empty path); None if it is not an absolute http(s) URL."""
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


# The broker's own request URLs (issuer + path): a few per endpoint, normalised once each.
_normalised_request_url = lru_cache(maxsize=4096)(normalise_url)


# --- the checks ---


def _read(value: str) -> tuple[dict[str, Any], dict[str, Any], bytes, bytes]:
    if len(value) > MAX_PROOF_LENGTH:
        raise DpopProofError(f"The DPoP proof is longer than {MAX_PROOF_LENGTH} characters.")
    if not value.isascii():
        raise DpopProofError("The DPoP proof is not a JWS compact serialization.")
    try:
        obj = jws.extract_compact(value.encode("ascii"), registry=_READING_REGISTRY)
        signature = urlsafe_b64decode(obj.segments["signature"])
    except (JoseError, ValueError) as error:
        raise DpopProofError("The DPoP proof is not a JWS compact serialization.") from error
    try:
        claims = json.loads(obj.payload)
    except (TypeError, ValueError) as error:
        raise DpopProofError("The DPoP proof's payload is not JSON.") from error
    if not isinstance(claims, dict):
        raise DpopProofError("The DPoP proof's payload is not a JSON object.")
    if holds_nul(claims):
        raise DpopProofError("The DPoP proof's claims must not contain the character U+0000.")
    signing_input = obj.segments["header"] + b"." + obj.segments["payload"]
    return dict(obj.headers()), claims, signing_input, signature


def _check_header(header: dict[str, Any]) -> tuple[jwk.Key, str]:
    typ = header.get("typ")
    # Media types compare case-insensitively and may leave out "application/" (RFC 7515 §4.1.9).
    if not isinstance(typ, str) or typ.lower().removeprefix("application/") != PROOF_TYPE:
        raise DpopProofError(f"The DPoP proof's 'typ' must be {PROOF_TYPE!r}, not {typ!r} (RFC 9449 §4.2).")
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in _ALGORITHMS:
        raise DpopProofError(
            f"Algorithm {alg!r} is not accepted for DPoP proofs; the broker accepts "
            f"{', '.join(DPOP_SIGNING_ALGORITHMS)} (asymmetric only, RFC 9449 §4.3)."
        )
    refused = [name for name in _REFUSED_HEADER if name in header]
    if refused:
        raise DpopProofError(f"Header parameter {refused[0]!r} is not accepted in a DPoP proof.")
    data = header.get("jwk")
    if not isinstance(data, dict):
        raise DpopProofError("The DPoP proof must carry its public key in the 'jwk' header (RFC 9449 §4.2).")
    private = sorted(_PRIVATE_MEMBERS & data.keys())
    if private:
        raise DpopProofError(
            f"The DPoP proof's 'jwk' holds the private member {private[0]!r}: send the public key only."
        )
    expected = _ALGORITHMS[alg]
    if data.get("kty") != expected.kty or data.get("crv") != expected.crv:
        raise DpopProofError(f"Algorithm {alg!r} needs a {expected.kty} key on {expected.crv} in 'jwk'.")
    members = _PUBLIC_MEMBERS[expected.kty]
    if any(not isinstance(data.get(name), str) for name in members):
        raise DpopProofError(f"The DPoP proof's 'jwk' must have {', '.join(members)} as strings.")
    return _public_key(expected.kty, tuple((name, data[name]) for name in members))


# A partner signs every proof with the same key: importing it (point decoding, for EC an on-curve check) and its
# RFC 7638 thumbprint are done once per key, not once per request. Bounded, so that many keys only evict others.
@lru_cache(maxsize=1024)
def _public_key(kty: str, members: tuple[tuple[str, str], ...]) -> tuple[jwk.Key, str]:
    try:
        key = jwk.import_key(dict(members))
    except (JoseError, ValueError, TypeError) as error:
        raise DpopProofError("The DPoP proof's 'jwk' is not a valid public key.") from error
    if key.key_type != kty:
        raise DpopProofError("The DPoP proof's 'jwk' is not a valid public key.")
    return key, key.thumbprint()


def _verify_signature(alg: str, key: jwk.Key, signing_input: bytes, signature: bytes) -> None:
    algorithm = _VERIFYING_REGISTRY.get_alg(_ALGORITHMS[alg].verify_as)
    try:
        algorithm.check_key(key)
        valid = algorithm.verify(signing_input, signature, key)
    except (JoseError, ValueError) as error:
        raise DpopProofError("The DPoP proof's signature is invalid.") from error
    if not valid:
        raise DpopProofError("The DPoP proof's signature is invalid.")


def _check_claims(claims: dict[str, Any], *, method: str, url: str) -> str:
    for name in ("jti", "htm", "htu", "iat"):
        if name not in claims:
            raise DpopProofError(f"The DPoP proof must carry '{name}' (RFC 9449 §4.2).")
    jti, htm, htu = claims["jti"], claims["htm"], claims["htu"]
    if not isinstance(jti, str) or not jti:
        raise DpopProofError("The DPoP proof's 'jti' must be a non-empty string.")
    if len(jti) > MAX_JTI_LENGTH:
        raise DpopProofError(f"The DPoP proof's 'jti' is longer than {MAX_JTI_LENGTH} characters.")
    # Methods are case-sensitive (RFC 9110 §9.1).
    if htm != method:
        raise DpopProofError(f"The DPoP proof's 'htm' must be this request's method, {method}.")
    expected = _normalised_request_url(url)
    # The same string normalises to the same URL: most clients sign the very URL they send.
    if not isinstance(htu, str) or expected is None or (htu != url and normalise_url(htu) != expected):
        raise DpopProofError(
            f"The DPoP proof's 'htu' must be this request's URL without query and fragment: {expected}."
        )
    return jti


def _check_nonce(claims: dict[str, Any], nonces: DpopNonces, now: datetime) -> None:
    nonce = claims.get("nonce")
    if nonce is None:
        raise DpopNonceError(
            "The DPoP proof must carry the server's nonce: use the 'DPoP-Nonce' header's value (RFC 9449 §8).",
            nonce=nonces.current(now),
        )
    if not isinstance(nonce, str) or not nonces.is_valid(nonce, now):
        raise DpopNonceError(
            "The DPoP proof's nonce is unknown or has expired: use the 'DPoP-Nonce' header's value.",
            nonce=nonces.current(now),
        )


def _check_time(claims: dict[str, Any], *, now: datetime, max_age: int, skew: int) -> float:
    iat = claims["iat"]
    # A NumericDate is a finite JSON number (RFC 7519 §2).
    if isinstance(iat, bool) or not isinstance(iat, int | float) or not math.isfinite(iat):
        raise DpopProofError("The DPoP proof's 'iat' is not a NumericDate.")
    current = now.timestamp()
    if iat < current - max_age:
        raise DpopProofError(f"The DPoP proof is more than {max_age} seconds old ('iat'): sign a fresh one.")
    if iat > current + skew:
        raise DpopProofError("The DPoP proof's 'iat' is in the future.")
    return float(iat)


def _normalise_escape(match: re.Match[str]) -> str:
    # RFC 3986 §6.2.2.1 and §6.2.2.2: escapes in upper case, unreserved characters unescaped.
    char = chr(int(match.group(0)[1:], 16))
    return char if char in _UNRESERVED else match.group(0).upper()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")
