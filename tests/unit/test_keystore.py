import json
import os
import stat
from pathlib import Path

import pytest

from broker.adapters.keystore import (
    INDEX_KID,
    InsecureKeyStoreError,
    KeyNotFoundError,
    KeyStore,
    KeyStoreError,
)

posix_only = pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")


@pytest.fixture
def keys_dir(tmp_path: Path) -> Path:
    return tmp_path / "keys"


@pytest.fixture
def store(keys_dir: Path) -> KeyStore:
    return KeyStore.open(keys_dir, create=True)


def test_create_makes_a_kek_the_index_key_and_a_signing_key(store: KeyStore) -> None:
    kid, kek = store.current_kek()
    assert kid.startswith("kek-") and len(kek) == 32
    assert store.kek_ids() == [kid]
    assert len(store.hetu_index_key()) == 32
    assert store.current_signing_key().kid.startswith("sig-")


def test_opening_a_missing_or_empty_store_without_create_is_refused(keys_dir: Path) -> None:
    with pytest.raises(KeyStoreError):
        KeyStore.open(keys_dir)
    keys_dir.mkdir(mode=0o700)
    with pytest.raises(KeyStoreError, match="not initialised"):
        KeyStore.open(keys_dir)


def test_creating_again_keeps_the_existing_keys(keys_dir: Path, store: KeyStore) -> None:
    again = KeyStore.open(keys_dir, create=True)
    assert again.current_kek() == store.current_kek()
    assert again.hetu_index_key() == store.hetu_index_key()
    assert again.public_jwks() == store.public_jwks()


def test_the_newest_kek_is_current_and_old_ones_stay(store: KeyStore) -> None:
    first, first_key = store.current_kek()
    second = store.add_kek()
    third = store.add_kek()
    assert store.kek_ids() == [first, second, third]
    assert store.current_kek()[0] == third
    assert store.kek(first) == first_key


def test_an_unknown_kek_raises_key_not_found(store: KeyStore) -> None:
    with pytest.raises(KeyNotFoundError) as caught:
        store.kek("kek-999999-00000000")
    assert caught.value.code == "key_not_found"
    assert isinstance(caught.value, LookupError)


def test_a_second_instance_sees_a_kek_added_by_the_first(keys_dir: Path, store: KeyStore) -> None:
    other = KeyStore.open(keys_dir)  # as another process would
    added = store.add_kek()
    assert other.kek(added) == store.kek(added)
    assert other.current_kek()[0] == added
    assert other.kek_ids() == store.kek_ids()


def test_a_second_instance_sees_a_signing_key_added_by_the_first(keys_dir: Path, store: KeyStore) -> None:
    other = KeyStore.open(keys_dir)
    added = store.add_signing_key()
    assert other.current_signing_key().kid == added
    assert other.public_jwks()["keys"][0]["kid"] == added


def test_the_index_key_is_shared_by_every_instance(keys_dir: Path, store: KeyStore) -> None:
    assert KeyStore.open(keys_dir).hetu_index_key() == store.hetu_index_key()


def test_public_jwks_holds_public_ed25519_signing_keys_only(store: KeyStore) -> None:
    store.add_signing_key()
    jwks = store.public_jwks()
    assert [key["kid"] for key in jwks["keys"]] == [key.kid for key in reversed(store.signing_keys())]
    for key in jwks["keys"]:
        assert key["kty"] == "OKP" and key["crv"] == "Ed25519"
        assert key["use"] == "sig" and key["alg"] == "Ed25519"
        assert "d" not in key


def test_kids_sort_by_creation(store: KeyStore) -> None:
    kids = [store.add_kek() for _ in range(12)]
    assert kids == sorted(kids)
    sig_kids = [store.add_signing_key() for _ in range(3)]
    assert [key.kid for key in store.signing_keys()][-3:] == sig_kids


@posix_only
def test_files_have_mode_0600_and_the_folder_0700(keys_dir: Path, store: KeyStore) -> None:
    store.add_kek()
    assert stat.S_IMODE(keys_dir.stat().st_mode) == 0o700
    files = list(keys_dir.iterdir())
    assert {f.name for f in files} >= {f"{INDEX_KID}.jwk", f"{store.current_kek()[0]}.jwk"}
    assert not [f for f in files if f.name.startswith(".tmp-")]
    for file in files:
        assert stat.S_IMODE(file.stat().st_mode) == 0o600, file.name


@posix_only
def test_a_key_file_readable_by_others_is_refused(keys_dir: Path, store: KeyStore) -> None:
    path = keys_dir / f"{store.current_kek()[0]}.jwk"
    path.chmod(0o644)
    with pytest.raises(InsecureKeyStoreError):
        KeyStore.open(keys_dir)


@posix_only
def test_a_folder_open_to_others_is_refused(keys_dir: Path, store: KeyStore) -> None:
    keys_dir.chmod(0o755)
    with pytest.raises(InsecureKeyStoreError):
        KeyStore.open(keys_dir)


def test_a_corrupt_key_file_is_an_error_not_a_missing_key(keys_dir: Path, store: KeyStore) -> None:
    (keys_dir / "kek-000009-deadbeef.jwk").write_text('{"kty": "oct", "kid": "kek-000009-deadbeef", "k": "AA"}')
    (keys_dir / "kek-000009-deadbeef.jwk").chmod(0o600)
    with pytest.raises(KeyStoreError, match="32-byte"):
        KeyStore.open(keys_dir)


def test_key_files_are_json_web_keys(keys_dir: Path, store: KeyStore) -> None:
    kid, _ = store.current_kek()
    kek = json.loads((keys_dir / f"{kid}.jwk").read_text())
    assert (kek["kty"], kek["kid"], kek["alg"], kek["use"]) == ("oct", kid, "A256KW", "enc")
    index = json.loads((keys_dir / f"{INDEX_KID}.jwk").read_text())
    assert (index["kty"], index["kid"], index["alg"]) == ("oct", INDEX_KID, "HS256")
