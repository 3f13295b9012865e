"""DPoP proofs read with pyca/cryptography (broker/oauth/dpop.py) against the joserfc-based verifier they replaced
(tests/oracle/dpop_joserfc.py).

For valid proofs (Ed25519 under both names, ES256, every optional member), for malformed ones (each rule of RFC 7515
compact serialization and strict base64url, each check of RFC 9449 §4.3) and for systematically tampered ones
(every character replaced, every truncation, trailing garbage), the broker accepts exactly the proofs the reference
accepts — with the same thumbprint, `jti` and expiry — and refuses the others with the same error and words. Each
hand-written case also says what it expects, so that two verifiers refusing everything alike would not pass.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import math
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from joserfc.util import urlsafe_b64decode

from broker.oauth import dpop
from broker.oauth.dpop import DpopNonces
from broker.oauth.errors import DpopNonceError, DpopProofError
from tests.oracle import dpop_joserfc as reference

URL = "https://broker.example/api/v1/disclosures"
NOW = datetime(2026, 1, 15, 9, 0, 30, tzinfo=UTC)
IAT = int(NOW.timestamp())
TOKEN = "tok_3q2-7wEXAMPLEaccesstokenVALUE"
NONCES = DpopNonces(b"n" * 32, 60)
NONCE = NONCES.current(NOW)
# RFC 7518 §6.2.1.1 / SEC 2: the P-256 field prime, the curve's `b` and the group order.
P256_P = 2**256 - 2**224 + 2**192 + 2**96 - 1
P256_B = 0x5AC635D8AA3A93E7B3EBBD55769886BC651D06B0CC53B0F63BCE3C3E27D2604B
P256_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551

Outcome = tuple[Any, ...]


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64json(value: Any) -> str:
    return b64(json.dumps(value).encode())


def coordinate(value: int, size: int = 32) -> str:
    return b64(value.to_bytes(size, "big"))


# --- the partner's side: keys that sign as RFC 8037 §3.1 and RFC 7518 §3.4 say ---


class Ed25519Signer:
    def __init__(self, seed: int) -> None:
        self.private = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"ed%d" % seed).digest())
        self.alg = "Ed25519"
        self.jwk: dict[str, Any] = {
            "kty": "OKP",
            "crv": "Ed25519",
            "x": b64(self.private.public_key().public_bytes_raw()),
        }

    def sign(self, data: bytes) -> bytes:
        return self.private.sign(data)


class Es256Signer:
    def __init__(self, seed: int) -> None:
        secret = int.from_bytes(hashlib.sha256(b"es%d" % seed).digest(), "big") % (P256_N - 1) + 1
        self.private = ec.derive_private_key(secret, ec.SECP256R1())
        numbers = self.private.public_key().public_numbers()
        self.x, self.y = numbers.x, numbers.y
        self.alg = "ES256"
        self.jwk: dict[str, Any] = {"kty": "EC", "crv": "P-256", "x": coordinate(self.x), "y": coordinate(self.y)}

    def sign(self, data: bytes) -> bytes:
        r, s = decode_dss_signature(self.private.sign(data, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")


Signer = Ed25519Signer | Es256Signer
ED = Ed25519Signer(1)
ED_OTHER = Ed25519Signer(2)
ES = Es256Signer(1)
ES_OTHER = Es256Signer(2)
# A P-256 public key whose x coordinate is zero: (0, √b) is on the curve, as b is a square modulo p.
ZERO_X_Y = pow(P256_B, (P256_P + 1) // 4, P256_P)
# A P-256 point with a small x coordinate, so that x + p still fits in 32 octets: a second spelling of the same x.
# (Its private key is unknown: a proof naming it gets as far as the signature.)
SMALL_X = next(x for x in range(1, 1000) if pow((x**3 - 3 * x + P256_B) % P256_P, (P256_P - 1) // 2, P256_P) == 1)
SMALL_X_Y = pow((SMALL_X**3 - 3 * SMALL_X + P256_B) % P256_P, (P256_P + 1) // 4, P256_P)
SMALL_X_JWK = {"kty": "EC", "crv": "P-256", "x": coordinate(SMALL_X), "y": coordinate(SMALL_X_Y)}


def claims(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"jti": "proof-1", "htm": "POST", "htu": URL, "iat": IAT}
    body.update(overrides)
    return {name: value for name, value in body.items() if value is not OMIT}


OMIT: Any = object()


def segments(header: str, payload: str, signer: Signer | None = ED) -> str:
    """A compact JWS from two ready segments, signed over them (RFC 7515 §5.1) — or with an empty signature."""
    signing_input = f"{header}.{payload}"
    return f"{signing_input}.{b64(signer.sign(signing_input.encode('ascii'))) if signer else ''}"


def proof(
    signer: Signer = ED, *, header: dict[str, Any] | None = None, signed_by: Signer | None = None, **claim: Any
) -> str:
    """A proof by `signer` (its `alg` and `jwk`), with header members and claims overridden (OMIT leaves one out)."""
    head = {"typ": "dpop+jwt", "alg": signer.alg, "jwk": signer.jwk} | (header or {})
    head = {name: value for name, value in head.items() if value is not OMIT}
    return segments(b64json(head), b64json(claims(**claim)), signed_by or signer)


def tampered_signature(value: str, transform: Callable[[bytes], bytes]) -> str:
    header, payload, signature = value.split(".")
    return f"{header}.{payload}.{b64(transform(urlsafe_b64decode(signature.encode())))}"


def ecdsa(r: int, s: int) -> Callable[[bytes], bytes]:
    return lambda _: r.to_bytes(32, "big") + s.to_bytes(32, "big")


# --- the comparison ---


def outcome(verify: Callable[..., Any], values: tuple[str, ...], context: dict[str, Any]) -> Outcome:
    try:
        accepted = verify(values, **context)
    except DpopNonceError as error:
        return ("refused", type(error).__name__, str(error), error.nonce)
    except DpopProofError as error:
        return ("refused", type(error).__name__, str(error))
    except Exception as error:  # the reference's own failures: see the test of its crashes below
        return ("crashed", type(error).__name__)
    return ("accepted", accepted)


def context(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"method": "POST", "url": URL, "now": NOW, "max_age": 60, "skew": 10}
    return base | overrides


def assert_same(values: str | tuple[str, ...], **overrides: Any) -> Outcome:
    """Both verifiers on the same request; the broker's answer, once it is known to be the reference's."""
    sent = (values,) if isinstance(values, str) else values
    expected = outcome(reference.verify_proof, sent, context(**overrides))
    actual = outcome(dpop.verify_proof, sent, context(**overrides))
    assert expected[0] != "crashed", (expected, sent)
    assert actual == expected, sent
    return actual


# Each case: the `DPoP` header value(s), the request's context, and "accepted" or words the refusal must contain.
Case = tuple[str | tuple[str, ...], dict[str, Any], str]
AT = {"access_token": TOKEN}
ATH = dpop.access_token_hash(TOKEN)
WITH_NONCES = {"nonces": NONCES}
NOT_JWS = "not a JWS compact serialization"
VALID = proof()
V_HEADER, V_PAYLOAD, V_SIGNATURE = VALID.split(".")

ACCEPTED: dict[str, Case] = {
    "Ed25519": (VALID, {}, "accepted"),
    "EdDSA, the deprecated name": (proof(header={"alg": "EdDSA"}), {}, "accepted"),
    "ES256": (proof(ES), {}, "accepted"),
    "ES256 with another key": (proof(ES_OTHER), {}, "accepted"),
    "with ath at a resource": (proof(ath=ATH), AT, "accepted"),
    "ES256 with ath": (proof(ES, ath=ATH), AT, "accepted"),
    "ath without an access token": (proof(ath="anything"), {}, "accepted"),
    "with the server's nonce": (proof(nonce=NONCE), WITH_NONCES, "accepted"),
    "with the previous step's nonce": (
        proof(nonce=NONCES.current(NOW.replace(second=0).replace(minute=59, hour=8))),
        WITH_NONCES,
        "accepted",
    ),
    "typ in capitals": (proof(header={"typ": "DPoP+JWT"}), {}, "accepted"),
    "typ as a full media type": (proof(header={"typ": "application/dpop+jwt"}), {}, "accepted"),
    "kid and other header members": (proof(header={"kid": "k1", "cty": "x", "x-extra": [1, {}]}), {}, "accepted"),
    "jwk with kid, use and alg": (
        proof(header={"jwk": ED.jwk | {"kid": "k", "use": "enc", "alg": "HS256"}}),
        {},
        "accepted",
    ),
    "jwk members in another order": (proof(header={"jwk": dict(reversed(list(ED.jwk.items())))}), {}, "accepted"),
    "iat at the oldest edge": (proof(iat=IAT - 60), {}, "accepted"),
    "iat at the newest edge": (proof(iat=IAT + 10), {}, "accepted"),
    "iat as a fraction": (proof(iat=IAT + 0.5), {}, "accepted"),
    "unicode and nested claims": (proof(jti="ääkkönen-🔑", extra={"a": [1, 2.5, None, True, "ü"]}), {}, "accepted"),
    "htu with query and fragment": (proof(htu=URL + "?a=1#top"), {}, "accepted"),
    "htu normalised": (proof(htu="HTTPS://Broker.Example:443/api/v1/%64isclosures"), {}, "accepted"),
    "duplicate claim, the last wins": (
        segments(V_HEADER, b64(b'{"jti":"a","htm":"GET","htm":"POST","htu":"' + URL.encode() + b'","iat":%d}' % IAT)),
        {},
        "accepted",
    ),
    "payload in UTF-16 (RFC 8259 §8.1 aside, json.loads reads it)": (
        segments(V_HEADER, b64(json.dumps(claims()).encode("utf-16"))),
        {},
        "accepted",
    ),
    "payload with a UTF-8 byte order mark": (
        segments(V_HEADER, b64(b"\xef\xbb\xbf" + json.dumps(claims()).encode())),
        {},
        "accepted",
    ),
    "ES256 coordinates with a leading zero octet dropped or added": (
        proof(ES, header={"jwk": ES.jwk | {"x": b64(ES.x.to_bytes(33, "big"))}}),
        {},
        "accepted",
    ),
}

REFUSED: dict[str, Case] = {
    # RFC 9449 §4.3 (1): one header, of a bounded size.
    "no proof": ((), {}, "A DPoP proof is required"),
    "two proofs": ((VALID, proof(jti="2")), {}, "more than one"),
    "too long": (proof(padding="x" * 4000), {}, "4096"),
    "not ASCII": (VALID + "é", {}, NOT_JWS),
    # RFC 7515 §7.1: three base64url segments.
    "empty": ("", {}, NOT_JWS),
    "not a JWS": ("not-a-jwt", {}, NOT_JWS),
    "two segments": (f"{V_HEADER}.{V_PAYLOAD}", {}, NOT_JWS),
    "four segments": (f"{VALID}.{V_SIGNATURE}", {}, NOT_JWS),
    "only dots": ("..", {}, NOT_JWS),
    "JSON serialization": (
        json.dumps({"payload": V_PAYLOAD, "protected": V_HEADER, "signature": V_SIGNATURE}),
        {},
        NOT_JWS,
    ),
    "header with padding": (f"{V_HEADER}==.{V_PAYLOAD}.{V_SIGNATURE}", {}, NOT_JWS),
    "payload with padding": (f"{V_HEADER}.{V_PAYLOAD}=.{V_SIGNATURE}", {}, NOT_JWS),
    "signature with padding": (f"{VALID}==", {}, NOT_JWS),
    "signature in base64's alphabet, not base64url's": (
        f"{V_HEADER}.{V_PAYLOAD}.{base64.b64encode(bytes.fromhex('fbff') * 32).decode().rstrip('=')}",
        {},
        NOT_JWS,
    ),
    "a space in the payload": (f"{V_HEADER}.{V_PAYLOAD[:8]} {V_PAYLOAD[8:]}.{V_SIGNATURE}", {}, NOT_JWS),
    "a line break in the signature": (f"{V_HEADER}.{V_PAYLOAD}.{V_SIGNATURE[:8]}\n{V_SIGNATURE[8:]}", {}, NOT_JWS),
    "a character outside the alphabet": (f"{V_HEADER}.{V_PAYLOAD[:8]}*{V_PAYLOAD[9:]}", {}, NOT_JWS),
    "a segment of 4n+1 characters": (f"{V_HEADER}.{V_PAYLOAD}.{V_SIGNATURE}AAA", {}, NOT_JWS),
    "non-canonical last character (RFC 4648 §3.5)": (
        f"{V_HEADER}.{V_PAYLOAD}.{V_SIGNATURE[:-1]}{chr(ord(V_SIGNATURE[-1]) + 1)}",
        {},
        NOT_JWS,
    ),
    "header of more than 512 characters": (proof(header={"kid": "k" * 400}), {}, NOT_JWS),
    "signature of more than 1024 characters": (f"{V_HEADER}.{V_PAYLOAD}.{'A' * 1028}", {}, NOT_JWS),
    "header not JSON": (segments(b64(b"{typ: dpop+jwt}"), V_PAYLOAD), {}, NOT_JWS),
    "header not UTF-8": (segments(b64(b'{"alg":"\xff"}'), V_PAYLOAD), {}, NOT_JWS),
    "header an array": (segments(b64json([1, 2]), V_PAYLOAD), {}, NOT_JWS),
    "header a number": (segments(b64json(12), V_PAYLOAD), {}, NOT_JWS),
    "header null": (segments(b64json(None), V_PAYLOAD), {}, NOT_JWS),
    "header a string without alg": (segments(b64json("typ"), V_PAYLOAD), {}, NOT_JWS),
    "header without alg": (proof(header={"alg": OMIT}), {}, NOT_JWS),
    "b64 true, read as usual and then refused": (proof(header={"b64": True}), {}, "'b64' is not accepted"),
    "b64 false without crit (RFC 7797 §6)": (proof(header={"b64": False}), {}, NOT_JWS),
    "b64 false, crit not a list": (proof(header={"b64": False, "crit": "b64"}), {}, NOT_JWS),
    "b64 false in crit, base64 payload": (proof(header={"b64": False, "crit": ["b64"]}), {}, "payload is not JSON"),
    "b64 false in crit, raw JSON payload": (
        segments(
            b64json({"typ": "dpop+jwt", "alg": "Ed25519", "jwk": ED.jwk, "b64": False, "crit": ["b64"]}), '{"a":1}'
        ),
        {},
        "'crit' is not accepted",
    ),
    "b64 false in crit, raw payload and a wrong typ": (
        segments(b64json({"typ": "JWT", "alg": "Ed25519", "jwk": ED.jwk, "b64": False, "crit": ["b64"]}), "[1]"),
        {},
        "JSON object",
    ),
    "b64 zero in crit, empty raw payload": (
        segments(b64json({"typ": "dpop+jwt", "alg": "Ed25519", "jwk": ED.jwk, "b64": 0, "crit": ["b64"]}), ""),
        {},
        "payload is not JSON",
    ),
    # The payload (RFC 9449 §4.2: a JSON object).
    "payload not JSON": (segments(V_HEADER, b64(b"jti=1")), {}, "payload is not JSON"),
    "payload empty": (segments(V_HEADER, ""), {}, "payload is not JSON"),
    "payload not UTF-8": (segments(V_HEADER, b64(b'{"jti":"\xff"}')), {}, "payload is not JSON"),
    "payload an array": (segments(V_HEADER, b64json([1, 2])), {}, "JSON object"),
    "payload a string": (segments(V_HEADER, b64json("claims")), {}, "JSON object"),
    "NUL in a claim": (proof(jti="a\x00b"), {}, "U+0000"),
    "NUL in a member name": (segments(V_HEADER, b64json(claims() | {"x\x00": 1})), {}, "U+0000"),
    "NUL deep inside": (proof(extra={"a": [{"b": ["\x00"]}]}), {}, "U+0000"),
    "NaN iat": (segments(V_HEADER, b64(json.dumps(claims(iat=math.nan)).encode())), {}, "NumericDate"),
    "Infinity iat": (segments(V_HEADER, b64(json.dumps(claims(iat=math.inf)).encode())), {}, "NumericDate"),
    # RFC 9449 §4.3 (3): typ.
    "typ JWT": (proof(header={"typ": "JWT"}), {}, "'typ'"),
    "typ missing": (proof(header={"typ": OMIT}), {}, "'typ'"),
    "typ not a string": (proof(header={"typ": ["dpop+jwt"]}), {}, "'typ'"),
    "typ with another prefix": (proof(header={"typ": "text/dpop+jwt"}), {}, "'typ'"),
    # (4): alg.
    "alg none, unsigned": (
        segments(b64json({"typ": "dpop+jwt", "alg": "none", "jwk": ED.jwk}), b64json(claims()), None),
        {},
        "'none'",
    ),
    "alg HS256": (proof(header={"alg": "HS256"}), {}, "'HS256'"),
    "alg RS256": (proof(header={"alg": "RS256"}), {}, "'RS256'"),
    "alg ES384": (proof(ES, header={"alg": "ES384"}), {}, "'ES384'"),
    "alg Ed448": (proof(header={"alg": "Ed448"}), {}, "'Ed448'"),
    "alg in lower case": (proof(header={"alg": "ed25519"}), {}, "'ed25519'"),
    "alg not a string": (proof(header={"alg": ["Ed25519"]}), {}, "is not accepted for DPoP proofs"),
    "alg null": (proof(header={"alg": None}), {}, "None"),
    "jku": (proof(header={"jku": "https://attacker.example/jwks"}), {}, "'jku'"),
    "x5c": (proof(header={"x5c": ["MIIB"]}), {}, "'x5c'"),
    "x5t#S256": (proof(header={"x5t#S256": "abc"}), {}, "'x5t#S256'"),
    "crit": (proof(header={"crit": ["exp"], "exp": 1}), {}, "'crit'"),
    # (5): jwk.
    "no jwk": (proof(header={"jwk": OMIT}), {}, "'jwk'"),
    "jwk a string": (proof(header={"jwk": json.dumps(ED.jwk)}), {}, "'jwk'"),
    "jwk with d": (proof(header={"jwk": ED.jwk | {"d": b64(b"\x01" * 32)}}), {}, "private member 'd'"),
    "EC jwk with d": (proof(ES, header={"jwk": ES.jwk | {"d": b64(b"\x01" * 32)}}), {}, "private member 'd'"),
    "jwk with k": (proof(header={"jwk": {"kty": "oct", "k": "c2VjcmV0"}}), {}, "private member 'k'"),
    "RSA members": (proof(header={"jwk": ED.jwk | {"p": "AQ", "q": "AQ", "dp": "AQ"}}), {}, "private member 'dp'"),
    "EC key under Ed25519": (proof(ES, header={"alg": "Ed25519"}), {}, "OKP key on Ed25519"),
    "OKP key under ES256": (proof(header={"alg": "ES256"}), {}, "EC key on P-256"),
    "X25519 key": (proof(header={"jwk": ED.jwk | {"crv": "X25519"}}), {}, "OKP key on Ed25519"),
    "P-384 key": (proof(ES, header={"jwk": ES.jwk | {"crv": "P-384"}}), {}, "EC key on P-256"),
    "kty missing": (proof(header={"jwk": {"crv": "Ed25519", "x": ED.jwk["x"]}}), {}, "OKP key on Ed25519"),
    "x missing": (proof(header={"jwk": {"kty": "OKP", "crv": "Ed25519"}}), {}, "kty, crv, x as strings"),
    "y missing": (proof(ES, header={"jwk": {"kty": "EC", "crv": "P-256", "x": ES.jwk["x"]}}), {}, "x, y as strings"),
    "x a number": (proof(header={"jwk": ED.jwk | {"x": 12}}), {}, "as strings"),
    "x not base64url": (proof(header={"jwk": ED.jwk | {"x": ED.jwk["x"][:-1] + "+"}}), {}, "not a valid public key"),
    "x with padding": (proof(header={"jwk": ED.jwk | {"x": ED.jwk["x"] + "="}}), {}, "not a valid public key"),
    "x non-canonical": (
        proof(header={"jwk": ED.jwk | {"x": ED.jwk["x"][:-1] + chr(ord(ED.jwk["x"][-1]) + 1)}}),
        {},
        "not a valid public key",
    ),
    "x of 31 octets": (proof(header={"jwk": ED.jwk | {"x": b64(b"\x01" * 31)}}), {}, "not a valid public key"),
    "x of 33 octets": (proof(header={"jwk": ED.jwk | {"x": b64(b"\x01" * 33)}}), {}, "not a valid public key"),
    "x empty": (proof(header={"jwk": ED.jwk | {"x": ""}}), {}, "not a valid public key"),
    "x not ASCII": (proof(header={"jwk": ED.jwk | {"x": "é" * 43}}), {}, "not a valid public key"),
    "x with a lone surrogate": (proof(header={"jwk": ED.jwk | {"x": "\ud800"}}), {}, "not a valid public key"),
    "EC point off the curve": (
        proof(ES, header={"jwk": ES.jwk | {"y": coordinate(ES.y ^ 1)}}),
        {},
        "not a valid public key",
    ),
    "EC x empty, (0, √b) otherwise on the curve": (
        proof(ES, header={"jwk": {"kty": "EC", "crv": "P-256", "x": "", "y": coordinate(ZERO_X_Y)}}),
        {},
        "not a valid public key",
    ),
    "EC x one zero octet, (0, √b) on the curve": (
        proof(ES, header={"jwk": {"kty": "EC", "crv": "P-256", "x": "AA", "y": coordinate(ZERO_X_Y)}}),
        {},
        "signature",
    ),
    "EC point with a small x": (proof(ES, header={"jwk": SMALL_X_JWK}), {}, "signature"),
    "EC point with x + p, a second spelling of x": (
        proof(ES, header={"jwk": SMALL_X_JWK | {"x": coordinate(SMALL_X + P256_P)}}),
        {},
        "signature",
    ),
    "EC y not base64url": (proof(ES, header={"jwk": ES.jwk | {"y": "***"}}), {}, "not a valid public key"),
    "EC x huge": (proof(ES, header={"jwk": ES.jwk | {"x": b64(b"\xff" * 64)}}), {}, "not a valid public key"),
    # (5): the signature.
    "signature flipped": (tampered_signature(VALID, lambda sig: bytes([sig[0] ^ 1]) + sig[1:]), {}, "signature"),
    "signature of another key": (proof(signed_by=ED_OTHER), {}, "signature"),
    "ES256 signature of another key": (proof(ES, signed_by=ES_OTHER), {}, "signature"),
    "signature empty": (segments(V_HEADER, V_PAYLOAD, None), {}, "signature"),
    "signature truncated": (tampered_signature(VALID, lambda sig: sig[:63]), {}, "signature"),
    "signature extended": (tampered_signature(VALID, lambda sig: sig + b"\x00"), {}, "signature"),
    "signature over another payload": (f"{V_HEADER}.{b64json(claims(jti='other'))}.{V_SIGNATURE}", {}, "signature"),
    "ES256 signature of 63 octets": (tampered_signature(proof(ES), lambda sig: sig[:63]), {}, "signature"),
    "ES256 signature of 65 octets": (tampered_signature(proof(ES), lambda sig: b"\x00" + sig), {}, "signature"),
    "ES256 signature in DER": (
        tampered_signature(
            proof(ES),
            lambda sig: ES.private.sign(f"{proof(ES).rsplit('.', 1)[0]}".encode(), ec.ECDSA(hashes.SHA256())),
        ),
        {},
        "signature",
    ),
    "ES256 r = 0": (tampered_signature(proof(ES), ecdsa(0, 1)), {}, "signature"),
    "ES256 s = 0": (tampered_signature(proof(ES), ecdsa(1, 0)), {}, "signature"),
    "ES256 r = n": (tampered_signature(proof(ES), ecdsa(P256_N, 1)), {}, "signature"),
    "ES256 s + n": (
        tampered_signature(
            proof(ES), lambda sig: sig[:32] + (int.from_bytes(sig[32:], "big") + P256_N).to_bytes(33, "big")[-32:]
        ),
        {},
        "signature",
    ),
    "Ed25519 signature under ES256 with an EC jwk": (
        segments(b64json({"typ": "dpop+jwt", "alg": "ES256", "jwk": ES.jwk}), b64json(claims()), ED),
        {},
        "signature",
    ),
    # (6): the claims.
    "no jti": (proof(jti=OMIT), {}, "'jti'"),
    "empty jti": (proof(jti=""), {}, "'jti'"),
    "jti a number": (proof(jti=1), {}, "'jti'"),
    "jti too long": (proof(jti="j" * 201), {}, "200"),
    "jti of 200 characters": (proof(jti="j" * 200), {}, "accepted"),
    "no htm": (proof(htm=OMIT), {}, "'htm'"),
    "htm in lower case": (proof(htm="post"), {}, "'htm'"),
    "htm of another method": (proof(htm="GET"), {}, "'htm'"),
    "htm a list": (proof(htm=["POST"]), {}, "'htm'"),
    "no htu": (proof(htu=OMIT), {}, "'htu'"),
    "htu of another host": (proof(htu=URL.replace("broker.example", "broker.example.evil")), {}, "'htu'"),
    "htu with http": (proof(htu=URL.replace("https", "http")), {}, "'htu'"),
    "htu with another port": (proof(htu=URL.replace("example/", "example:8443/")), {}, "'htu'"),
    "htu relative": (proof(htu="/api/v1/disclosures"), {}, "'htu'"),
    "htu with user info": (proof(htu=URL.replace("https://", "https://u:p@")), {}, "'htu'"),
    "htu with an escaped slash": (proof(htu=URL.replace("v1/", "v1%2F")), {}, "'htu'"),
    "htu a number": (proof(htu=1), {}, "'htu'"),
    "no iat": (proof(iat=OMIT), {}, "'iat'"),
    "iat too old": (proof(iat=IAT - 61), {}, "60 seconds old"),
    "iat in the future": (proof(iat=IAT + 11), {}, "future"),
    "iat a string": (proof(iat=str(IAT)), {}, "NumericDate"),
    "iat a boolean": (proof(iat=True), {}, "NumericDate"),
    # (7): the nonce.
    "no nonce": (proof(), WITH_NONCES, "server's nonce"),
    "a made-up nonce": (proof(nonce="made-up"), WITH_NONCES, "unknown or has expired"),
    "a stale nonce": (proof(nonce=NONCES.current(NOW.replace(hour=8))), WITH_NONCES, "unknown or has expired"),
    "a nonce not a string": (proof(nonce=1), WITH_NONCES, "unknown or has expired"),
    "a nonce not ASCII": (proof(nonce="é"), WITH_NONCES, "unknown or has expired"),
    # (9): ath.
    "no ath": (proof(), AT, "'ath'"),
    "ath of another token": (proof(ath=dpop.access_token_hash("another")), AT, "not the hash of this access token"),
    "ath not a string": (proof(ath=1), AT, "'ath'"),
    "ath not ASCII": (proof(ath="é"), AT, "not the hash"),
    "ath with padding": (proof(ath=ATH + "="), AT, "not the hash"),
}


@pytest.mark.parametrize("case", list(ACCEPTED) + list(REFUSED))
def test_the_broker_answers_each_proof_as_the_joserfc_reference_did(case: str) -> None:
    values, overrides, expected = (ACCEPTED | REFUSED)[case]
    answer = assert_same(values, **overrides)
    if expected == "accepted":
        assert answer[0] == "accepted", answer
    else:
        assert answer[0] == "refused" and expected in answer[2], answer


def test_an_accepted_proof_carries_the_rfc7638_thumbprint_of_its_key() -> None:
    # RFC 7638 §3.2, computed here by hand rather than by either verifier.
    for signer in (ED, ES):
        required = {name: signer.jwk[name] for name in sorted(signer.jwk)}
        expected = b64(hashlib.sha256(json.dumps(required, separators=(",", ":")).encode()).digest())
        answer = assert_same(proof(signer))
        assert answer[0] == "accepted" and answer[1].jkt == expected
        assert answer[1].jti == "proof-1" and answer[1].expires_at == datetime.fromtimestamp(IAT + 60, UTC)


def test_where_the_reference_crashed_the_broker_refuses_the_proof() -> None:
    # joserfc accepted a header that is a JSON string or array holding "alg" and then failed on it (dict() of a
    # string, indexing a string), and a payload nested deeper than the interpreter's stack raised RecursionError:
    # errors, not answers. The broker refuses these proofs as malformed.
    deep = "[" * 1400 + "]" * 1400  # deeper than the interpreter's recursion limit, within 4096 characters
    crashes = {
        segments(b64json("alg"), V_PAYLOAD): NOT_JWS,
        segments(b64json(["alg"]), V_PAYLOAD): NOT_JWS,
        segments(b64json("alg b64"), V_PAYLOAD): NOT_JWS,
        segments(b64json(["alg", "b64"]), V_PAYLOAD): NOT_JWS,
        segments(V_HEADER, b64(deep.encode())): "payload is not JSON",
    }
    for value, words in crashes.items():
        assert outcome(reference.verify_proof, (value,), context())[0] == "crashed", value[:80]
        answer = outcome(dpop.verify_proof, (value,), context())
        assert answer[0] == "refused" and words in answer[2], answer


# --- systematic tampering ---

# Replacements: the alphabet's neighbours, the base64 characters base64url has not, padding, separators, white space.
REPLACEMENTS = ("A", "B", "w", "_", "-", "+", "/", "=", ".", " ")


@pytest.mark.parametrize("signer", [ED, ES], ids=["Ed25519", "ES256"])
def test_every_character_replaced_is_answered_alike(signer: Signer) -> None:
    valid = proof(signer, ath=ATH)
    answers: set[str] = set()
    for index, char in itertools.product(range(len(valid)), REPLACEMENTS):
        if valid[index] == char:
            continue
        answer = assert_same(valid[:index] + char + valid[index + 1 :], access_token=TOKEN)
        answers.add(answer[0] if answer[0] == "accepted" else answer[2])
    # The tampering reached every stage: decoding, the header checks, the key, the signature and the claims.
    assert {
        "The DPoP proof is not a JWS compact serialization.",
        "The DPoP proof's payload is not JSON.",
        "The DPoP proof's signature is invalid.",
    } <= answers
    assert any("'typ'" in answer for answer in answers) and any("jwk" in answer for answer in answers)


@pytest.mark.parametrize("signer", [ED, ES], ids=["Ed25519", "ES256"])
def test_every_truncation_and_trailing_garbage_is_answered_alike(signer: Signer) -> None:
    valid = proof(signer, ath=ATH)
    assert assert_same(valid, access_token=TOKEN)[0] == "accepted"
    for length in range(len(valid)):
        assert assert_same(valid[:length], access_token=TOKEN)[0] == "refused"
    for garbage in ("A", "AA", "AAA", "AAAA", "=", ".", ".A", " ", "\n", "\x00", "é", "." + V_SIGNATURE):
        assert assert_same(valid + garbage, access_token=TOKEN)[0] == "refused"
        assert assert_same(garbage + valid, access_token=TOKEN)[0] == "refused"


def test_strict_base64url_decodes_exactly_what_joserfc_decoded() -> None:
    # Every string of up to four characters over the alphabet's edges and the characters base64url must refuse
    # (RFC 7515 §2: no padding, no other alphabet; RFC 4648 §3.5: canonical final character).
    alphabet = [b"A", b"B", b"Q", b"R", b"g", b"w", b"x", b"8", b"9", b"-", b"_", b"+", b"/", b"=", b" ", b"\n", b"."]
    alphabet.append(b"\xc3")
    for length in range(5):
        for chars in itertools.product(alphabet, repeat=length):
            segment = b"".join(chars)
            try:
                expected: bytes | None = urlsafe_b64decode(segment)
            except ValueError:
                expected = None
            try:
                actual: bytes | None = dpop._base64url_decode(segment)
            except ValueError:
                actual = None
            assert actual == expected, segment


# --- generated proofs ---

HEADER_MEMBERS: dict[str, Any] = {
    "typ": st.sampled_from(["dpop+jwt", "DPOP+jwt", "application/dpop+jwt", "jwt", "", 1, None, OMIT]),
    "alg": st.sampled_from(["Ed25519", "EdDSA", "ES256", "none", "HS256", "ES384", "", None, OMIT]),
    "jwk": st.sampled_from(
        [
            ED.jwk,
            ES.jwk,
            ED_OTHER.jwk,
            ED.jwk | {"d": "AA"},
            ES.jwk | {"crv": "P-384"},
            {"kty": "OKP", "crv": "Ed25519", "x": ES.jwk["x"]},
            {"kty": "EC", "crv": "P-256", "x": ES.jwk["y"], "y": ES.jwk["x"]},
            {"kty": "oct", "k": "AA"},
            "key",
            [],
            OMIT,
        ]
    ),
    "kid": st.sampled_from(["k", 1, OMIT]),
    "crit": st.sampled_from([["b64"], ["exp"], "b64", OMIT]),
    "b64": st.sampled_from([True, False, 0, OMIT]),
    "jku": st.sampled_from(["https://a.example", OMIT]),
}
CLAIM_VALUES: dict[str, Any] = {
    "jti": st.one_of(st.text(max_size=4), st.sampled_from(["j" * 200, "j" * 201, 7, None, OMIT])),
    "htm": st.sampled_from(["POST", "GET", "post", "", None, OMIT]),
    "htu": st.sampled_from([URL, URL + "?q#f", URL.upper(), "https://other.example/", "/x", "", None, OMIT]),
    "iat": st.one_of(st.integers(IAT - 70, IAT + 20), st.floats(allow_nan=True), st.sampled_from(["1", True, OMIT])),
    "ath": st.sampled_from([ATH, ATH + "x", "", 1, OMIT]),
    "nonce": st.sampled_from([NONCE, "n", 1, OMIT]),
    "extra": st.one_of(st.text(max_size=3), st.lists(st.integers(), max_size=2), st.just(OMIT)),
}


@settings(max_examples=400, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(
    header=st.fixed_dictionaries({}, optional=HEADER_MEMBERS),
    body=st.fixed_dictionaries({}, optional=CLAIM_VALUES),
    signed_by=st.sampled_from([ED, ES, ED_OTHER, None]),
    at_resource=st.booleans(),
    with_nonces=st.booleans(),
)
def test_generated_proofs_are_answered_alike(
    header: dict[str, Any], body: dict[str, Any], signed_by: Signer | None, at_resource: bool, with_nonces: bool
) -> None:
    head = {name: value for name, value in header.items() if value is not OMIT}
    claim = {name: value for name, value in body.items() if value is not OMIT}
    payload = b64(json.dumps(claim).encode())
    value = segments(b64json(head), payload, signed_by)
    overrides: dict[str, Any] = {}
    if at_resource:
        overrides["access_token"] = TOKEN
    if with_nonces:
        overrides["nonces"] = NONCES
    assert_same(value, **overrides)
