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

The proof is read and verified here with pyca/cryptography directly, not through joserfc's general JWS layer: it
is on every request, and only one serialization (compact), two algorithms and two key types are ever accepted, so
the general machinery (key objects, registries, header validation for every algorithm) cost more than the checks
themselves. The rules joserfc applied while reading a proof are kept, so that exactly the same proofs are refused
with the same words: strict, canonical base64url, size limits on the header and signature segments, an `alg`
member in the header, and RFC 7797's `b64`. tests/unit/test_dpop_differential.py compares this module with the
joserfc-based verifier it replaced (tests/oracle/dpop_joserfc.py) over valid, malformed and tampered proofs.

Ed25519 and EdDSA: as for client assertions (assertion.py), a proof signed under the deprecated polymorphic name
"EdDSA" (RFC 9864) is verified as Ed25519, the only curve the broker accepts under either name (RFC 8037 §3.1).

Server nonces are stateless: an HMAC over the current time step, so that every worker and every process agrees
on them without shared state. A nonce is accepted during its own step and the next one.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

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


#: Longer header segments are refused before they are decoded: `typ`, `alg` and a P-256 `jwk` encode to under 300
#: characters. (joserfc's limit, kept from when it read the proofs.)
MAX_HEADER_SEGMENT_LENGTH = 512
#: Longer signature segments are refused before they are decoded; an Ed25519 or ES256 signature is 86 characters.
MAX_SIGNATURE_SEGMENT_LENGTH = 1024


@dataclass(frozen=True)
class _Algorithm:
    kty: str
    crv: str


_ALGORITHMS = {
    "EdDSA": _Algorithm("OKP", "Ed25519"),
    "Ed25519": _Algorithm("OKP", "Ed25519"),
    "ES256": _Algorithm("EC", "P-256"),
}
_PublicKey = Ed25519PublicKey | ec.EllipticCurvePublicKey
# ES256 is ECDSA with P-256 and SHA-256 (RFC 7518 §3.4); the signature is R and S, 32 octets each, big-endian.
_ES256 = ec.ECDSA(hashes.SHA256())
_ES256_HALF = 32
# The members of a public key that the key is made of (RFC 7638 §3.2); others (`kid`, `use`, …) are ignored.
_PUBLIC_MEMBERS = {"OKP": ("kty", "crv", "x"), "EC": ("kty", "crv", "x", "y")}
# Members that only a private (or symmetric) key has (RFC 7518 §6.2.2, §6.3.2, §6.4; RFC 8037 §2).
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
# The proof's key is its `jwk` and nothing else; extensions the broker does not understand are refused
# (RFC 7515 §4.1.11 `crit`, RFC 7797 `b64`).
_REFUSED_HEADER = ("jku", "x5u", "x5c", "x5t", "x5t#S256", "crit", "b64")
# base64url's alphabet (RFC 4648 §5), without padding (RFC 7515 §2), and its translation to base64's (§4).
_BASE64URL = re.compile(rb"[A-Za-z0-9_-]*")
_TO_BASE64 = bytes.maketrans(b"-_", b"+/")
# RFC 4648 §3.5: a canonical encoding leaves the bits after the last octet at zero, so the last character of a
# segment of 2 (or 3) characters modulo 4 carries 2 (or 4) data bits and has the low 4 (or 2) bits clear. Other
# last characters would give a second spelling of the same octets; they are refused.
_CANONICAL_LAST = {2: frozenset(b"AQgw"), 3: frozenset(b"AEIMQUYcgkosw048")}
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
    _verify_signature(key, signing_input, signature)
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


def _read(value: str) -> tuple[Mapping[str, Any], dict[str, Any], bytes, bytes]:
    if len(value) > MAX_PROOF_LENGTH:
        raise DpopProofError(f"The DPoP proof is longer than {MAX_PROOF_LENGTH} characters.")
    if not value.isascii():
        raise DpopProofError("The DPoP proof is not a JWS compact serialization.")
    # RFC 7515 §7.1: BASE64URL(header) "." BASE64URL(payload) "." BASE64URL(signature), nothing else.
    segments = value.encode("ascii").split(b".")
    if len(segments) != 3:
        raise DpopProofError("The DPoP proof is not a JWS compact serialization.")
    header_segment, payload_segment, signature_segment = segments
    if len(header_segment) > MAX_HEADER_SEGMENT_LENGTH or len(signature_segment) > MAX_SIGNATURE_SEGMENT_LENGTH:
        raise DpopProofError("The DPoP proof is not a JWS compact serialization.")
    header = _decoded_header(header_segment)
    try:
        payload = payload_segment if _unencoded_payload(header) else _base64url_decode(payload_segment)
        signature = _base64url_decode(signature_segment)
    except ValueError as error:
        raise DpopProofError("The DPoP proof is not a JWS compact serialization.") from error
    try:
        claims = json.loads(payload)
    except (ValueError, RecursionError) as error:
        raise DpopProofError("The DPoP proof's payload is not JSON.") from error
    if not isinstance(claims, dict):
        raise DpopProofError("The DPoP proof's payload is not a JSON object.")
    try:
        nul = holds_nul(claims)
    except RecursionError as error:  # nested deeper than the interpreter's stack: no proof needs that
        raise DpopProofError("The DPoP proof's payload is not JSON.") from error
    if nul:
        raise DpopProofError("The DPoP proof's claims must not contain the character U+0000.")
    return header, claims, header_segment + b"." + payload_segment, signature


# A partner's proofs all carry the same header (its `typ`, `alg` and `jwk`): it is decoded once, not on every request.
# Bounded like the key cache, and read-only, as the requests that send it share it. A segment that is not a JSON
# object with `alg` raises and is not cached; the members are checked on every request (`_check_header`).
@lru_cache(maxsize=1024)
def _decoded_header(segment: bytes) -> Mapping[str, Any]:
    try:
        header = json.loads(_base64url_decode(segment))
    except (ValueError, RecursionError) as error:
        raise DpopProofError("The DPoP proof is not a JWS compact serialization.") from error
    # Every JWS header names its algorithm (RFC 7515 §4.1.1); `alg` is checked against the broker's list later.
    if not isinstance(header, dict) or "alg" not in header:
        raise DpopProofError("The DPoP proof is not a JWS compact serialization.")
    return MappingProxyType(header)


def _base64url_decode(segment: bytes) -> bytes:
    """Strict base64url (RFC 7515 §2): the URL-safe alphabet only, no padding, no white space, canonical.

    `base64.urlsafe_b64decode` alone would skip characters outside the alphabet and accept `+`, `/` and `=`; the
    segment is matched against the alphabet first, so that a proof has exactly one spelling, and then decoded
    strictly."""
    remainder = len(segment) % 4
    if (
        remainder == 1  # 6 bits cannot end an octet
        or not _BASE64URL.fullmatch(segment)
        or (remainder and segment[-1] not in _CANONICAL_LAST[remainder])
    ):
        raise ValueError("not canonical base64url")
    return binascii.a2b_base64(segment.translate(_TO_BASE64) + b"=" * (-remainder % 4), strict_mode=True)


def _unencoded_payload(header: Mapping[str, Any]) -> bool:
    """RFC 7797 §3, §6: `"b64": false`, listed in `crit`, means the payload segment is the payload itself.

    Such a proof is refused by `_check_header` (`crit` and `b64` are not accepted); until then it is read as an
    RFC 7797 JWS, so that it is refused at the same check, with the same words, as by joserfc before. `b64` without
    `crit` is a malformed JWS (RFC 7797 §6: it must be understood)."""
    if "b64" not in header or header["b64"] is True:
        return False
    crit = header.get("crit")
    if isinstance(crit, list) and "b64" in crit:
        return True
    raise ValueError("'b64' is not listed in 'crit'")


def _check_header(header: Mapping[str, Any]) -> tuple[_PublicKey, str]:
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
# A key that is refused raises, and is not cached.
@lru_cache(maxsize=1024)
def _public_key(kty: str, members: tuple[tuple[str, str], ...]) -> tuple[_PublicKey, str]:
    jwk = dict(members)
    key: _PublicKey
    try:
        if kty == "OKP":
            # RFC 8037 §2: `x` is the 32-octet public key itself (RFC 8032 §5.1.5).
            key = Ed25519PublicKey.from_public_bytes(_base64url_decode(jwk["x"].encode()))
        else:
            # RFC 7518 §6.2.1: `x` and `y` are the point's coordinates, big-endian; the import checks that the
            # point is on P-256. Leading zero octets are tolerated, as joserfc tolerated them.
            x, y = _coordinate(jwk["x"]), _coordinate(jwk["y"])
            key = ec.EllipticCurvePublicNumbers(x, y, ec.SECP256R1()).public_key()
    except ValueError as error:
        raise DpopProofError("The DPoP proof's 'jwk' is not a valid public key.") from error
    return key, _thumbprint(members)


def _coordinate(member: str) -> int:
    data = _base64url_decode(member.encode())
    if not data:
        raise ValueError("an empty coordinate")
    return int.from_bytes(data, "big")


def _thumbprint(members: tuple[tuple[str, str], ...]) -> str:
    """RFC 7638 §3: the SHA-256 of the required members, ordered by name, as JSON without white space."""
    canonical = json.dumps(dict(sorted(members)), ensure_ascii=True, separators=(",", ":"))
    return _b64(hashlib.sha256(canonical.encode("ascii")).digest())


def _verify_signature(key: _PublicKey, signing_input: bytes, signature: bytes) -> None:
    # `_check_header` took the key's type from `alg`: an Ed25519 key for EdDSA / Ed25519, a P-256 key for ES256.
    try:
        if isinstance(key, Ed25519PublicKey):
            key.verify(signature, signing_input)  # RFC 8037 §3.1
            return
        # RFC 7518 §3.4: the JWS signature is R || S, each 32 octets; pyca verifies a DER-encoded ECDSA signature.
        if len(signature) != 2 * _ES256_HALF:
            raise InvalidSignature
        r = int.from_bytes(signature[:_ES256_HALF], "big")
        s = int.from_bytes(signature[_ES256_HALF:], "big")
        key.verify(encode_dss_signature(r, s), signing_input, _ES256)
    except (InvalidSignature, ValueError) as error:
        raise DpopProofError("The DPoP proof's signature is invalid.") from error


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
