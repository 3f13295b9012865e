"""Compact JWS (RFC 7515) signed with the broker's Ed25519 key: consent receipts, later webhook payloads.

The broker issues and accepts exactly one algorithm, "Ed25519", the fully-specified name of RFC 9864 §2.2.
"EdDSA" (RFC 8037) is deprecated by RFC 9864: joserfc 1.8 emits a SecurityWarning whenever its registry hands
out the "EdDSA" algorithm, and refuses "Ed25519" from the default registry because it is not in the
"recommended" list. A registry built with `algorithms=["Ed25519"]` allows that name only; a token with any
other "alg" ("EdDSA", "HS256", "none") is refused before the algorithm is looked up, so no warning is emitted.

Keys are chosen by "kid" from the given JWK Set only, never from header parameters such as "jwk" or "jku"
(RFC 8725 §3.10). The "typ" header gives each kind of token its own type (explicit typing, RFC 8725 §3.11).
"""

from __future__ import annotations

import json
from typing import Any

from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import OKPKey
from joserfc.jws import JWSRegistry

from broker.adapters.keystore import CryptoError, KeyStore

__all__ = ["ALGORITHM", "SignatureError", "canonical_json", "sign_jws", "verify_jws"]

ALGORITHM = "Ed25519"
_REGISTRY = JWSRegistry(algorithms=[ALGORITHM])


class SignatureError(CryptoError):
    code = "invalid_signature"

    def __init__(self, reason: str = "the signature could not be verified") -> None:
        super().__init__(reason)


def canonical_json(value: Any) -> bytes:
    """Sorted keys, no whitespace, UTF-8: the RFC 8785 form for the integers, strings, booleans, lists and
    objects that receipts hold (floats are not canonicalised the RFC 8785 way, so keep them out)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def sign_jws(payload: dict[str, Any], keystore: KeyStore, typ: str) -> str:
    """Sign `payload` as a compact JWS with the key store's current signing key."""
    key = keystore.current_signing_key()
    header = {"alg": ALGORITHM, "kid": key.kid, "typ": typ}
    return jws.serialize_compact(header, canonical_json(payload), key, registry=_REGISTRY)


def _verification_keys(jwks: dict[str, Any]) -> dict[str, OKPKey]:
    """The Ed25519 public keys of a JWK Set by kid; keys of other types, curves, uses or algorithms are
    skipped (RFC 7517 §5: members that are not understood are ignored)."""
    keys: dict[str, OKPKey] = {}
    for jwk in jwks.get("keys", []) if isinstance(jwks, dict) else []:
        if (
            isinstance(jwk, dict)
            and jwk.get("kty") == "OKP"
            and jwk.get("crv") == "Ed25519"
            and isinstance(jwk.get("kid"), str)
            and jwk.get("use", "sig") == "sig"
            and jwk.get("alg", ALGORITHM) == ALGORITHM
        ):
            public = {name: jwk[name] for name in ("kty", "crv", "x", "kid")}  # never a private "d"
            try:
                keys[jwk["kid"]] = OKPKey.import_key(public)
            except (JoseError, ValueError, TypeError):
                continue
    return keys


def verify_jws(token: str, jwks: dict[str, Any], *, typ: str | None = None) -> dict[str, Any]:
    """Verify a compact JWS against the key set `jwks` and return its JSON object payload.

    Accepts only alg "Ed25519" with a "kid" found in `jwks` (and, when given, exactly the "typ" `typ`).
    Raises SignatureError for every failure.
    """
    keys = _verification_keys(jwks)

    def find_key(obj: Any) -> OKPKey:
        kid = obj.headers().get("kid")
        if not isinstance(kid, str) or kid not in keys:
            raise SignatureError("no key for the token's kid")
        return keys[kid]

    try:
        signed = jws.deserialize_compact(token, find_key, registry=_REGISTRY)
    except (JoseError, ValueError, TypeError) as exc:
        raise SignatureError from exc
    if typ is not None and signed.headers().get("typ") != typ:
        raise SignatureError("unexpected token type")
    try:
        payload = json.loads(signed.payload)
    except ValueError:
        raise SignatureError("the payload is not JSON") from None
    if not isinstance(payload, dict):
        raise SignatureError("the payload is not a JSON object")
    return payload
