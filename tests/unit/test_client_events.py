"""Verifying pushed Security Event Tokens (broker/client/events.py) with real Ed25519 keys: a SET the broker itself
signs (broker/services/events.py, broker/adapters/signing.py) verifies; every tampered or foreign one is refused with
the RFC 8935 §2.4 error code a receiver answers."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from joserfc import jws
from joserfc.jwk import OKPKey
from joserfc.jws import JWSRegistry

from broker.adapters.keystore import KeyStore
from broker.adapters.signing import sign_jws
from broker.client import Event, EventDeduplicator, EventVerifier, InvalidEventError, verify_security_event
from broker.client.events import UnknownKeyError
from broker.services.events import SET_TYP, security_event_token

ISSUER = "https://broker.example"
NOW = 1_900_000_000.0
OCCURRED = datetime(2030, 3, 17, 9, 30, tzinfo=UTC)
DATA = {"consent_id": "con_1", "version": 2, "withdrawn_at": "2030-03-17T09:30:00Z", "person_id": "per_1"}
REGISTRY = JWSRegistry(algorithms=["Ed25519", "EdDSA", "HS256"])


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def claims(**changes: Any) -> dict[str, Any]:
    made = security_event_token(
        ISSUER,
        event_id="evt_1",
        event_type="consent.withdrawn",
        organisation_id="kisalli",
        data=DATA,
        occurred_at=OCCURRED,
        issued_at=datetime.fromtimestamp(NOW, UTC),
    )
    return {name: value for name, value in (made | changes).items() if value is not None}


@pytest.fixture
def store(tmp_path: Path) -> KeyStore:
    return KeyStore.open(tmp_path / "keys", create=True)


def signed(key: OKPKey, payload: dict[str, Any], **header: Any) -> str:
    head = {"alg": "Ed25519", "kid": key.kid, "typ": SET_TYP} | header
    head = {name: value for name, value in head.items() if value is not None}
    return jws.serialize_compact(head, json.dumps(payload).encode(), key, registry=REGISTRY)


def verify(token: str | bytes, store: KeyStore, **options: Any) -> Event:
    return verify_security_event(
        token, jwks=store.public_jwks(), issuer=ISSUER, **({"audience": "kisalli", "now": NOW} | options)
    )


def refused(token: str | bytes, store: KeyStore, code: str, match: str, **options: Any) -> None:
    with pytest.raises(InvalidEventError, match=match) as caught:
        verify(token, store, **options)
    assert caught.value.code == code and caught.value.status == 400


def test_a_set_the_broker_signs_verifies_and_becomes_an_event(store: KeyStore) -> None:
    token = sign_jws(claims(), store, typ=SET_TYP)
    event = verify(token, store)
    assert event == Event(
        id="evt_1",
        type="consent.withdrawn",
        organisation="kisalli",
        person_id="per_1",
        occurred_at=OCCURRED,
        data=DATA,
        raw=token,
        claims=claims(),
    )
    assert verify(token.encode() + b"\r\n", store).id == "evt_1"  # a body as received, bytes with a line end


def test_a_set_without_an_audience_check_is_addressed_to_its_aud(store: KeyStore) -> None:
    event = verify(sign_jws(claims(), store, typ=SET_TYP), store, audience=None)
    assert event.organisation == "kisalli"


def test_a_set_signed_with_another_key_under_the_same_kid_is_refused(store: KeyStore) -> None:
    foreign = OKPKey.generate_key("Ed25519", parameters={"kid": store.current_signing_key().kid})
    refused(signed(foreign, claims()), store, "authentication_failed", "signature")


def test_a_set_whose_payload_was_changed_is_refused(store: KeyStore) -> None:
    header, _, signature = sign_jws(claims(), store, typ=SET_TYP).split(".")
    tampered = b64(json.dumps(claims(aud="kela")).encode())
    refused(f"{header}.{tampered}.{signature}", store, "authentication_failed", "signature")


def test_a_set_naming_an_unknown_key_is_refused_as_invalid_key(store: KeyStore) -> None:
    other = OKPKey.generate_key("Ed25519", parameters={"kid": "sig-unknown"})
    with pytest.raises(UnknownKeyError) as caught:
        verify(signed(other, claims()), store)
    assert caught.value.code == "invalid_key" and caught.value.kid == "sig-unknown"
    refused(signed(other, claims(), kid=None), store, "invalid_key", "no key")


@pytest.mark.parametrize("typ", ["JWT", "consent-receipt+jws", "dpop+jwt", None])
def test_a_jws_of_another_type_is_not_taken_for_an_event(store: KeyStore, typ: str | None) -> None:
    refused(signed(store.current_signing_key(), claims(), typ=typ), store, "invalid_request", "'typ'")


def test_the_type_may_be_written_as_a_full_media_type(store: KeyStore) -> None:
    token = signed(store.current_signing_key(), claims(), typ="Application/SecEvent+JWT")
    assert verify(token, store).id == "evt_1"


def test_an_unsigned_set_is_refused(store: KeyStore) -> None:
    header = {"alg": "none", "kid": store.current_signing_key().kid, "typ": SET_TYP}
    token = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims()).encode())}."
    refused(token, store, "invalid_request", "'alg' is 'none'")


def test_an_hmac_keyed_with_the_brokers_public_key_is_refused(store: KeyStore) -> None:
    # Algorithm confusion: the public key's bytes as an HMAC secret.
    key = store.current_signing_key()
    header = b64(json.dumps({"alg": "HS256", "kid": key.kid, "typ": SET_TYP}).encode())
    payload = b64(json.dumps(claims()).encode())
    secret = key.as_dict(private=False)["x"].encode()
    mac = hmac.new(secret, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    refused(f"{header}.{payload}.{b64(mac)}", store, "invalid_request", "'alg' is 'HS256'")


def test_the_deprecated_eddsa_name_is_not_what_the_broker_signs_with(store: KeyStore) -> None:
    private = store.current_signing_key().as_dict(private=True)
    # The same key without its `alg` member, which would pin it to "Ed25519".
    key = OKPKey.import_key(
        {name: private[name] for name in ("kty", "crv", "x", "d")}, parameters={"kid": private["kid"]}
    )
    with pytest.warns(Warning):  # joserfc's SecurityWarning for "EdDSA" (RFC 9864), when making the token
        token = signed(key, claims(), alg="EdDSA")
    refused(token, store, "invalid_request", "'alg' is 'EdDSA'")


def test_a_key_carried_in_the_header_is_refused(store: KeyStore) -> None:
    key = store.current_signing_key()
    refused(signed(key, claims(), jwk=key.as_dict(private=False)), store, "invalid_request", "'jwk'")


def test_a_set_with_two_events_or_none_is_refused(store: KeyStore) -> None:
    two = claims(events={f"{ISSUER}/events/consent.withdrawn": DATA, f"{ISSUER}/events/consent.expired": DATA})
    refused(sign_jws(two, store, typ=SET_TYP), store, "invalid_request", "2 events, not exactly one")
    refused(sign_jws(claims(events={}), store, typ=SET_TYP), store, "invalid_request", "0 events")
    refused(sign_jws(claims(events=None), store, typ=SET_TYP), store, "invalid_request", "no events")


def test_an_event_that_is_not_the_brokers_is_refused(store: KeyStore) -> None:
    foreign = claims(events={"https://elsewhere.example/events/consent.withdrawn": DATA})
    refused(sign_jws(foreign, store, typ=SET_TYP), store, "invalid_request", "not one of the broker's")
    bare = claims(events={f"{ISSUER}/events/": DATA})
    refused(sign_jws(bare, store, typ=SET_TYP), store, "invalid_request", "not one of the broker's")


def test_a_set_for_another_organisation_is_refused(store: KeyStore) -> None:
    token = sign_jws(claims(aud="varha-health"), store, typ=SET_TYP)
    refused(token, store, "invalid_audience", "addressed to 'varha-health', not 'kisalli'")
    both = sign_jws(claims(aud=["varha-health", "kisalli"]), store, typ=SET_TYP)
    assert verify(both, store).organisation == "kisalli"
    refused(sign_jws(claims(aud=None), store, typ=SET_TYP), store, "invalid_audience", "'aud'")


def test_a_set_from_another_issuer_is_refused(store: KeyStore) -> None:
    token = sign_jws(claims(iss="https://evil.example"), store, typ=SET_TYP)
    refused(token, store, "invalid_issuer", "'iss'")


def test_a_set_issued_in_the_future_is_refused_beyond_the_skew(store: KeyStore) -> None:
    assert verify(sign_jws(claims(iat=int(NOW) + 30), store, typ=SET_TYP), store).id == "evt_1"
    refused(sign_jws(claims(iat=int(NOW) + 31), store, typ=SET_TYP), store, "invalid_request", "'iat'")
    refused(sign_jws(claims(iat="now"), store, typ=SET_TYP), store, "invalid_request", "NumericDate")


def test_a_body_that_is_no_jws_is_refused(store: KeyStore) -> None:
    for body in (b"", b"not a token", "é.é.é".encode(), b"a.b", b"x" * (64 * 1024 + 1)):
        with pytest.raises(InvalidEventError) as caught:
            verify(body, store)
        assert caught.value.code == "invalid_request"


class Fetches:
    """The broker's JWK Set as a receiver would fetch it: counted, and rotated on demand."""

    def __init__(self, store: KeyStore) -> None:
        self.store = store
        self.count = 0

    def __call__(self) -> dict[str, Any]:
        self.count += 1
        return self.store.public_jwks()


def test_a_verifier_fetches_the_keys_once_and_again_after_a_rotation(store: KeyStore) -> None:
    now = [NOW]
    fetches = Fetches(store)
    verifier = EventVerifier(issuer=ISSUER, jwks=fetches, audience="kisalli", clock=lambda: now[0])
    assert fetches.count == 0  # nothing is fetched before the first event
    assert verifier.verify(sign_jws(claims(), store, typ=SET_TYP)).id == "evt_1"
    assert verifier.verify(sign_jws(claims(jti="evt_2"), store, typ=SET_TYP)).id == "evt_2"
    assert fetches.count == 1

    store.add_signing_key()  # the broker rotates: new SETs name the new key
    rotated = sign_jws(claims(jti="evt_3"), store, typ=SET_TYP)
    with pytest.raises(UnknownKeyError):  # fetched just now: not again yet, so forged kids cannot flood the broker
        verifier.verify(rotated)
    assert fetches.count == 1
    now[0] += 61
    assert verifier.verify(rotated).id == "evt_3"
    assert fetches.count == 2
    forged = signed(OKPKey.generate_key("Ed25519", parameters={"kid": "sig-forged"}), claims())
    now[0] += 61
    with pytest.raises(UnknownKeyError):
        verifier.verify(forged)  # fetched once more, and still unknown
    assert fetches.count == 3


def test_a_verifier_with_a_fixed_key_set_never_fetches(store: KeyStore) -> None:
    verifier = EventVerifier(issuer=ISSUER, jwks=store.public_jwks(), clock=lambda: NOW)
    store.add_signing_key()
    with pytest.raises(UnknownKeyError):
        verifier.verify(sign_jws(claims(), store, typ=SET_TYP))


def test_a_deduplicator_says_first_time_once_per_event_id() -> None:
    seen = EventDeduplicator(capacity=2)
    assert [seen.first_time(i) for i in ("evt_1", "evt_1", "evt_2", "evt_1")] == [True, False, True, False]
    assert seen.first_time("evt_3")  # evicts evt_2, the least recently offered
    assert seen.first_time("evt_2") and not seen.first_time("evt_3")
    with pytest.raises(ValueError, match="capacity"):
        EventDeduplicator(capacity=0)
