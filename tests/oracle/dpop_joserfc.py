"""The DPoP proof verifier as it was when it read proofs with joserfc's JWS layer: the reference that
broker/oauth/dpop.py, which reads them with pyca/cryptography directly, is compared with
(tests/unit/test_dpop_differential.py).

A copy of the verification path of broker/oauth/dpop.py before that change, kept as it was apart from its imports:
joserfc's `jws.extract_compact` takes the proof apart (strict base64url, size limits, `alg` present, RFC 7797
`b64`), `jwk.import_key` imports the key and computes its RFC 7638 thumbprint, and joserfc's Ed25519 and ES256
algorithms verify the signature. Only the parts that did not change are the broker's own: `DpopNonces`,
`normalise_url`, `holds_nul` and the error classes. Nothing here is used by the broker.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from joserfc import jwk, jws
from joserfc.errors import JoseError
from joserfc.jws import JWSRegistry
from joserfc.util import urlsafe_b64decode

from broker.oauth.assertion import holds_nul
from broker.oauth.dpop import DpopNonces, DpopProof, normalise_url
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


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")
