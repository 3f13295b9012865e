import base64
import json
import warnings
from pathlib import Path
from typing import Any

import pytest
from joserfc import jws
from joserfc.jwk import OctKey, OKPKey

from broker.adapters.keystore import KeyStore
from broker.adapters.signing import SignatureError, canonical_json, sign_jws, verify_jws

TYP = "consent-receipt+jws"
PAYLOAD = {"consent_id": "c-1", "person_id": "p-1", "categories": ["work_ability"], "ä": "ö"}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def header_of(token: str) -> dict[str, Any]:
    segment = token.split(".")[0]
    return json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))


@pytest.fixture
def store(tmp_path: Path) -> KeyStore:
    return KeyStore.open(tmp_path / "keys", create=True)


@pytest.fixture
def foreign(tmp_path: Path) -> KeyStore:
    return KeyStore.open(tmp_path / "foreign", create=True)


def test_a_signed_payload_verifies_with_the_public_jwks(store: KeyStore) -> None:
    token = sign_jws(PAYLOAD, store, TYP)
    assert verify_jws(token, store.public_jwks()) == PAYLOAD
    assert verify_jws(token, store.public_jwks(), typ=TYP) == PAYLOAD


def test_the_header_names_ed25519_the_kid_and_the_type(store: KeyStore) -> None:
    token = sign_jws(PAYLOAD, store, TYP)
    assert header_of(token) == {"alg": "Ed25519", "kid": store.current_signing_key().kid, "typ": TYP}


def test_the_payload_is_canonical_json(store: KeyStore) -> None:
    token = sign_jws({"b": 1, "a": [True, None]}, store, TYP)
    assert token.split(".")[1] == b64(b'{"a":[true,null],"b":1}')
    assert canonical_json({"ä": 1}) == '{"ä":1}'.encode()


def test_a_tampered_payload_is_rejected(store: KeyStore) -> None:
    header, _, signature = sign_jws(PAYLOAD, store, TYP).split(".")
    forged = b64(canonical_json({**PAYLOAD, "person_id": "p-2"}))
    with pytest.raises(SignatureError):
        verify_jws(f"{header}.{forged}.{signature}", store.public_jwks())


@pytest.mark.parametrize("segment", [0, 1, 2])
def test_a_flipped_character_in_any_segment_is_rejected(store: KeyStore, segment: int) -> None:
    parts = sign_jws(PAYLOAD, store, TYP).split(".")
    parts[segment] = parts[segment][:-2] + ("A" if parts[segment][-2] != "A" else "B") + parts[segment][-1]
    with pytest.raises(SignatureError):
        verify_jws(".".join(parts), store.public_jwks())


def test_a_token_from_a_foreign_key_is_rejected(store: KeyStore, foreign: KeyStore) -> None:
    with pytest.raises(SignatureError):
        verify_jws(sign_jws(PAYLOAD, foreign, TYP), store.public_jwks())


def test_a_foreign_key_claiming_our_kid_is_rejected(store: KeyStore) -> None:
    impostor = OKPKey.generate_key("Ed25519", parameters={"kid": store.current_signing_key().kid})
    header = {"alg": "Ed25519", "kid": impostor.kid, "typ": TYP}
    token = jws.serialize_compact(header, canonical_json(PAYLOAD), impostor, algorithms=["Ed25519"])
    with pytest.raises(SignatureError):
        verify_jws(token, store.public_jwks())


def test_a_token_without_a_kid_is_rejected(store: KeyStore) -> None:
    key = store.current_signing_key()
    token = jws.serialize_compact({"alg": "Ed25519"}, canonical_json(PAYLOAD), key, algorithms=["Ed25519"])
    with pytest.raises(SignatureError):
        verify_jws(token, store.public_jwks())


def test_a_token_with_another_type_is_rejected_when_a_type_is_required(store: KeyStore) -> None:
    token = sign_jws(PAYLOAD, store, "webhook+jws")
    with pytest.raises(SignatureError):
        verify_jws(token, store.public_jwks(), typ=TYP)


def test_an_eddsa_token_is_rejected_without_a_warning(store: KeyStore) -> None:
    key = store.current_signing_key()
    raw = OKPKey.import_key({k: v for k, v in key.as_dict(private=True).items() if k != "alg"})
    with warnings.catch_warnings():  # signing with "EdDSA" is what warns (RFC 9864 deprecation)
        warnings.simplefilter("ignore")
        token = jws.serialize_compact(
            {"alg": "EdDSA", "kid": key.kid}, canonical_json(PAYLOAD), raw, algorithms=["EdDSA"]
        )
    with pytest.raises(SignatureError):  # filterwarnings=error: verifying must not warn
        verify_jws(token, store.public_jwks())


def test_an_hs256_token_is_rejected(store: KeyStore) -> None:
    # Algorithm confusion: an HMAC keyed with the public key's bytes must not pass as a signature.
    public_x = store.public_jwks()["keys"][0]["x"]
    secret = OctKey.import_key(public_x.encode())
    header = {"alg": "HS256", "kid": store.current_signing_key().kid}
    token = jws.serialize_compact(header, canonical_json(PAYLOAD), secret, algorithms=["HS256"])
    with pytest.raises(SignatureError):
        verify_jws(token, store.public_jwks())


def test_an_unsigned_none_token_is_rejected(store: KeyStore) -> None:
    header = b64(canonical_json({"alg": "none", "kid": store.current_signing_key().kid}))
    token = f"{header}.{b64(canonical_json(PAYLOAD))}."
    with pytest.raises(SignatureError):
        verify_jws(token, store.public_jwks())


def test_a_header_jwk_is_not_trusted(store: KeyStore) -> None:
    attacker = OKPKey.generate_key("Ed25519", parameters={"kid": "sig-000001-00000000"})
    header = {"alg": "Ed25519", "kid": attacker.kid, "jwk": attacker.as_dict(private=False)}
    token = jws.serialize_compact(header, canonical_json(PAYLOAD), attacker, algorithms=["Ed25519"])
    with pytest.raises(SignatureError):
        verify_jws(token, store.public_jwks())


@pytest.mark.parametrize("token", ["", "a", "a.b", "a.b.c", "..", "a.b.c.d.e"])
def test_malformed_tokens_are_rejected(store: KeyStore, token: str) -> None:
    with pytest.raises(SignatureError):
        verify_jws(token, store.public_jwks())


def test_a_non_object_payload_is_rejected(store: KeyStore) -> None:
    key = store.current_signing_key()
    token = jws.serialize_compact({"alg": "Ed25519", "kid": key.kid}, b"[1]", key, algorithms=["Ed25519"])
    with pytest.raises(SignatureError):
        verify_jws(token, store.public_jwks())


def test_old_tokens_verify_after_rotation_and_new_ones_use_the_new_key(store: KeyStore) -> None:
    old = sign_jws(PAYLOAD, store, TYP)
    new_kid = store.add_signing_key()
    new = sign_jws(PAYLOAD, store, TYP)
    assert header_of(new)["kid"] == new_kid != header_of(old)["kid"]
    jwks = store.public_jwks()
    assert verify_jws(old, jwks) == verify_jws(new, jwks) == PAYLOAD


def test_keys_of_other_types_in_the_set_are_ignored(store: KeyStore) -> None:
    token = sign_jws(PAYLOAD, store, TYP)
    kid = store.current_signing_key().kid
    eddsa_labelled = {**store.public_jwks()["keys"][0], "alg": "EdDSA"}
    jwks = {"keys": [{"kty": "oct", "kid": kid, "k": "c2VjcmV0"}, eddsa_labelled]}
    with pytest.raises(SignatureError):
        verify_jws(token, jwks)
    assert verify_jws(token, {"keys": [*jwks["keys"], *store.public_jwks()["keys"]]}) == PAYLOAD
