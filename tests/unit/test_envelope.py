import dataclasses
from datetime import date
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker.adapters.envelope import (
    DecryptionError,
    Sealed,
    hetu_index,
    open_hetu,
    open_sealed,
    record_aad,
    rewrap,
    seal,
    seal_hetu,
)
from broker.adapters.keystore import KeyStore
from broker.domain.errors import InvalidHetuError
from broker.domain.hetu import make_hetu

HETU = make_hetu(date(1985, 3, 14), 923)
AAD = record_aad("rec-1", "person-1", "work_ability")
PLAINTEXT = b'{"summary": "fictional record content"}'


@pytest.fixture
def store(tmp_path: Path) -> KeyStore:
    return KeyStore.open(tmp_path / "keys", create=True)


@pytest.fixture
def sealed(store: KeyStore) -> Sealed:
    return seal(PLAINTEXT, AAD, store)


def flip(data: bytes, index: int) -> bytes:
    out = bytearray(data)
    out[index] ^= 0x01
    return bytes(out)


def test_a_sealed_record_opens_with_its_aad(store: KeyStore, sealed: Sealed) -> None:
    assert open_sealed(sealed, AAD, store) == PLAINTEXT
    assert sealed.version == 1
    assert sealed.kek_id == store.current_kek()[0]
    assert len(sealed.nonce) == 12 and len(sealed.wrapped_key) == 40
    assert len(sealed.ciphertext) == len(PLAINTEXT) + 16
    assert PLAINTEXT not in sealed.ciphertext


def test_each_seal_uses_a_fresh_data_key_and_nonce(store: KeyStore, sealed: Sealed) -> None:
    again = seal(PLAINTEXT, AAD, store)
    assert again.wrapped_key != sealed.wrapped_key
    assert again.nonce != sealed.nonce
    assert again.ciphertext != sealed.ciphertext


def test_an_empty_plaintext_round_trips(store: KeyStore) -> None:
    assert open_sealed(seal(b"", AAD, store), AAD, store) == b""


@pytest.mark.parametrize("field", ["ciphertext", "nonce", "wrapped_key"])
@pytest.mark.parametrize("where", [0, -1])
def test_a_flipped_bit_fails_to_open(store: KeyStore, sealed: Sealed, field: str, where: int) -> None:
    value = getattr(sealed, field)
    tampered = dataclasses.replace(sealed, **{field: flip(value, where % len(value))})
    with pytest.raises(DecryptionError):
        open_sealed(tampered, AAD, store)


@pytest.mark.parametrize("field", ["ciphertext", "nonce", "wrapped_key"])
@pytest.mark.parametrize("change", ["truncated", "extended", "empty"])
def test_a_field_of_the_wrong_length_fails_to_open(store: KeyStore, sealed: Sealed, field: str, change: str) -> None:
    value = getattr(sealed, field)
    new = {"truncated": value[:-1], "extended": value + b"\x00" * 8, "empty": b""}[change]
    with pytest.raises(DecryptionError):
        open_sealed(dataclasses.replace(sealed, **{field: new}), AAD, store)


def test_an_unknown_kek_id_fails_to_open(store: KeyStore, sealed: Sealed) -> None:
    with pytest.raises(DecryptionError):
        open_sealed(dataclasses.replace(sealed, kek_id="kek-999999-00000000"), AAD, store)


def test_another_existing_kek_fails_to_open(store: KeyStore, sealed: Sealed) -> None:
    other = store.add_kek()
    with pytest.raises(DecryptionError):
        open_sealed(dataclasses.replace(sealed, kek_id=other), AAD, store)


def test_an_unknown_version_fails_to_open(store: KeyStore, sealed: Sealed) -> None:
    with pytest.raises(DecryptionError):
        open_sealed(dataclasses.replace(sealed, version=2), AAD, store)


@pytest.mark.parametrize(
    "aad",
    [
        record_aad("rec-2", "person-1", "work_ability"),
        record_aad("rec-1", "person-2", "work_ability"),
        record_aad("rec-1", "person-1", "health"),
        b"",
        AAD + b"\x00",
    ],
    ids=["other record", "other person", "other category", "empty", "trailing byte"],
)
def test_a_different_aad_fails_to_open(store: KeyStore, sealed: Sealed, aad: bytes) -> None:
    with pytest.raises(DecryptionError):
        open_sealed(sealed, aad, store)


def test_a_record_cannot_be_opened_with_another_key_store(tmp_path: Path, sealed: Sealed) -> None:
    foreign = KeyStore.open(tmp_path / "other", create=True)
    with pytest.raises(DecryptionError):
        open_sealed(dataclasses.replace(sealed, kek_id=foreign.current_kek()[0]), AAD, foreign)


def test_the_decryption_error_is_opaque(store: KeyStore, sealed: Sealed) -> None:
    errors = []
    for tampered in (
        dataclasses.replace(sealed, kek_id="kek-999999-00000000"),
        dataclasses.replace(sealed, ciphertext=flip(sealed.ciphertext, 0)),
        dataclasses.replace(sealed, wrapped_key=flip(sealed.wrapped_key, 0)),
    ):
        with pytest.raises(DecryptionError) as caught:
            open_sealed(tampered, AAD, store)
        errors.append((str(caught.value), caught.value.code, caught.value.__cause__))
    assert errors == [("the sealed value could not be opened", "decryption_failed", None)] * 3


def test_rewrap_after_a_new_kek_moves_the_data_key_and_keeps_the_ciphertext(store: KeyStore, sealed: Sealed) -> None:
    new_kek = store.add_kek()
    moved = rewrap(sealed, store)
    assert moved.kek_id == new_kek != sealed.kek_id
    assert (moved.ciphertext, moved.nonce, moved.version) == (sealed.ciphertext, sealed.nonce, sealed.version)
    assert moved.wrapped_key != sealed.wrapped_key
    assert open_sealed(moved, AAD, store) == PLAINTEXT
    assert rewrap(moved, store) is moved  # idempotent: an interrupted rotation can run again


def test_rewrap_of_a_tampered_envelope_fails(store: KeyStore, sealed: Sealed) -> None:
    store.add_kek()
    with pytest.raises(DecryptionError):
        rewrap(dataclasses.replace(sealed, wrapped_key=flip(sealed.wrapped_key, 3)), store)


def test_new_seals_use_a_kek_added_by_another_instance(tmp_path: Path, store: KeyStore) -> None:
    rotating = KeyStore.open(tmp_path / "keys")  # as `broker keys rotate` in another process
    new_kek = rotating.add_kek()
    assert seal(PLAINTEXT, AAD, store).kek_id == new_kek


def test_a_record_sealed_by_another_instance_opens_here(tmp_path: Path, store: KeyStore) -> None:
    rotating = KeyStore.open(tmp_path / "keys")
    rotating.add_kek()
    assert open_sealed(seal(PLAINTEXT, AAD, rotating), AAD, store) == PLAINTEXT


@given(
    st.lists(st.text(max_size=4), min_size=3, max_size=3),
    st.lists(st.text(max_size=4), min_size=3, max_size=3),
)
def test_record_aad_is_injective(left: list[str], right: list[str]) -> None:
    assert (record_aad(*left) == record_aad(*right)) == (left == right)


def test_record_aad_does_not_confuse_field_boundaries() -> None:
    assert record_aad("ab", "c", "d") != record_aad("a", "bc", "d")
    assert record_aad("a", "b", "c").startswith(b"consent-broker/record/v1\x00")


def test_hetu_index_is_deterministic_and_ignores_case_and_spaces(store: KeyStore) -> None:
    index = hetu_index(HETU, store)
    assert index == hetu_index(f"  {HETU.lower()} ", store)
    assert len(index) == 64 and int(index, 16) >= 0
    assert HETU not in index
    assert index != hetu_index(make_hetu(date(1985, 3, 14), 924), store)


def test_hetu_index_differs_across_index_keys(tmp_path: Path, store: KeyStore) -> None:
    other = KeyStore.open(tmp_path / "other", create=True)
    assert hetu_index(HETU, store) != hetu_index(HETU, other)


def test_hetu_index_refuses_an_invalid_code_without_repeating_it(store: KeyStore) -> None:
    bad = HETU[:-1] + ("X" if HETU[-1] != "X" else "Y")
    with pytest.raises(InvalidHetuError) as caught:
        hetu_index(bad, store)
    assert bad not in str(caught.value)


def test_a_sealed_hetu_opens_for_its_person_only(store: KeyStore) -> None:
    sealed = seal_hetu(HETU.lower(), "person-1", store)
    assert HETU.encode() not in sealed.ciphertext
    assert open_hetu(sealed, "person-1", store) == HETU
    with pytest.raises(DecryptionError):
        open_hetu(sealed, "person-2", store)


def test_a_sealed_hetu_is_not_a_sealed_record(store: KeyStore) -> None:
    # Domain separation: the same person id under another label is other associated data.
    sealed = seal_hetu(HETU, "person-1", store)
    with pytest.raises(DecryptionError):
        open_sealed(sealed, record_aad("person-1", "", ""), store)
