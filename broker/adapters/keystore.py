"""The key store: the instance's `keys/` folder, one JSON Web Key (RFC 7517) per file.

- key-encryption keys `kek-NNNNNN-xxxxxxxx.jwk` (oct, "A256KW": AES-256 key wrap, RFC 7518 §4.4);
- the look-up index key `hetu-index.jwk` (oct, "HS256": HMAC-SHA256 for the identity-code index, invariant 6);
- Ed25519 signing keys `sig-NNNNNN-xxxxxxxx.jwk` (OKP, "Ed25519", RFC 8037 / RFC 9864) for JWS;
- Ed25519 log keys `log-NNNNNN-xxxxxxxx.jwk`, which sign only the audit log's checkpoints (C2SP signed-note). A
  key signs one kind of message: a checkpoint signature can never be replayed as a receipt's, or the reverse.

Key ids are `<kind>-<sequence>-<random>`: they sort by creation, and the random part keeps two processes that
rotate at the same moment from choosing the same name. The newest key is the current one; older keys stay
for decryption and verification (rotation is a normal operation, DESIGN.md invariant 7).

Several processes share the folder (server workers, `broker keys rotate`). Files are never rewritten: each is
written once, atomically and without clobbering, and read once into memory. A process notices keys added by
another one through the folder's modification time, and reloads the listing whenever it meets an unknown kid.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import secrets
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, ClassVar

from joserfc.jwk import OKPKey

__all__ = [
    "CryptoError",
    "InsecureKeyStoreError",
    "KeyNotFoundError",
    "KeyStore",
    "KeyStoreError",
]

KEY_BYTES = 32  # AES-256 and HMAC-SHA256 keys
INDEX_KID = "hetu-index"
_KID = re.compile(r"^(kek|sig|log)-(\d{6})-[0-9a-f]{8}$")
_INDEX_FILE = f"{INDEX_KID}.jwk"
_POSIX = os.name == "posix"
# A change made within this long of the last one may share its mtime on a coarse-grained file system, so
# the listing is re-read until the folder has been quiet this long (git's "racy git" problem).
_RACY_NS = 2_000_000_000


class CryptoError(Exception):
    """Root of the key store, envelope and signing errors. Messages hold no key material, no personal data."""

    code: ClassVar[str] = "crypto_error"


class KeyStoreError(CryptoError):
    code = "key_store_error"


class KeyNotFoundError(KeyStoreError, LookupError):
    code = "key_not_found"


class InsecureKeyStoreError(KeyStoreError):
    """Key files or the folder are open to other users; refuse them, as OpenSSH refuses such private keys."""

    code = "insecure_key_store"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class KeyStore:
    """Keys of one broker instance, cached in memory. Thread-safe; processes may share the folder."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.RLock()
        self._keks: dict[str, bytes] = {}
        self._signing: dict[str, OKPKey] = {}
        self._log: dict[str, OKPKey] = {}
        self._index_key: bytes | None = None
        self._seen_mtime_ns: int | None = None

    @classmethod
    def open(cls, path: str | os.PathLike[str], create: bool = False) -> KeyStore:
        """Open the key store at `path`; with `create`, make the folder and any missing first keys."""
        folder = Path(path)
        if create:
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            if _POSIX:
                folder.chmod(0o700)  # mkdir's mode is filtered through the umask
        if not folder.is_dir():
            raise KeyStoreError(f"key store folder {folder} does not exist")
        if _POSIX and folder.stat().st_mode & 0o077:
            raise InsecureKeyStoreError(f"key store folder {folder} is accessible to other users (want 0700)")
        store = cls(folder)
        store.refresh()
        if create:
            if not store._keks:
                store.add_kek()
            if store._index_key is None:
                store._write_new(_INDEX_FILE, _oct_jwk(INDEX_KID, "HS256", secrets.token_bytes(KEY_BYTES)))
                store.refresh()  # whoever won a race to create it, every process now uses the same key
            if not store._signing:
                store.add_signing_key()
            if not store._log:
                store.add_log_key()
        if not store._keks or store._index_key is None or not store._signing:
            raise KeyStoreError(f"key store {folder} is not initialised (run with create=True)")
        return store

    # -- key-encryption keys -------------------------------------------------------------------------------

    def current_kek(self) -> tuple[str, bytes]:
        """The newest key-encryption key: new data keys are wrapped with it."""
        self._refresh_if_changed()
        keks = self._keks
        kid = max(keks)
        return kid, keks[kid]

    def kek(self, kid: str) -> bytes:
        """The key-encryption key `kid`; raises KeyNotFoundError if no process has written it."""
        key = self._keks.get(kid)
        if key is None:
            self.refresh()  # perhaps another process has rotated since we last looked
            key = self._keks.get(kid)
        if key is None:
            raise KeyNotFoundError(f"no key-encryption key {kid!r}")
        return key

    def kek_ids(self) -> list[str]:
        """All key-encryption key ids, oldest first."""
        self._refresh_if_changed()
        return sorted(self._keks)

    def add_kek(self) -> str:
        """Create a new key-encryption key; it becomes the current one. Returns its kid."""
        with self._lock:
            kid = self._new_kid("kek")
            self._write_new(f"{kid}.jwk", _oct_jwk(kid, "A256KW", secrets.token_bytes(KEY_BYTES), use="enc"))
            self.refresh()
            return kid

    # -- identity-code index --------------------------------------------------------------------------------

    def hetu_index_key(self) -> bytes:
        # Identity codes are few enough to enumerate, so the index is only as secret as this key: it never
        # leaves the key store, and it is not rotated (that would mean recomputing every index value).
        if self._index_key is None:  # open() refuses such a store; this guards direct construction
            raise KeyNotFoundError(f"no {INDEX_KID} key")
        return self._index_key

    # -- signing keys ---------------------------------------------------------------------------------------

    def add_signing_key(self) -> str:
        """Create a new Ed25519 signing key; it becomes the current one. Returns its kid."""
        with self._lock:
            kid = self._new_kid("sig")
            key = OKPKey.generate_key("Ed25519", parameters={"kid": kid, "use": "sig", "alg": "Ed25519"})
            self._write_new(f"{kid}.jwk", dict(key.as_dict(private=True)))
            self.refresh()
            return kid

    def current_signing_key(self) -> OKPKey:
        """The newest Ed25519 signing key (private, with its kid)."""
        self._refresh_if_changed()
        signing = self._signing
        return signing[max(signing)]

    def signing_keys(self) -> list[OKPKey]:
        """All Ed25519 signing keys (private), oldest first."""
        self._refresh_if_changed()
        signing = self._signing
        return [signing[kid] for kid in sorted(signing)]

    def public_jwks(self) -> dict[str, Any]:
        """The JWK Set (RFC 7517 §5) for `/.well-known/jwks.json`: public parts of every signing key, newest
        first. Retired keys stay so that old receipts remain verifiable."""
        keys = reversed(self.signing_keys())
        return {"keys": [dict(key.as_dict(private=False)) for key in keys]}

    # -- checkpoint (log) keys -----------------------------------------------------------------------------

    def add_log_key(self) -> str:
        """Create a new Ed25519 key for signing checkpoints; it becomes the current one. Returns its kid."""
        with self._lock:
            kid = self._new_kid("log")
            key = OKPKey.generate_key("Ed25519", parameters={"kid": kid, "use": "sig", "alg": "Ed25519"})
            self._write_new(f"{kid}.jwk", dict(key.as_dict(private=True)))
            self.refresh()
            return kid

    def current_log_key(self) -> OKPKey:
        """The newest checkpoint signing key; KeyNotFoundError if the store has none (`broker keys init`)."""
        self._refresh_if_changed()
        log = self._log
        if not log:
            raise KeyNotFoundError("no checkpoint signing key: run `broker keys init`")
        return log[max(log)]

    def log_keys(self) -> list[OKPKey]:
        """Every checkpoint signing key, oldest first: retired ones still verify old checkpoints."""
        self._refresh_if_changed()
        log = self._log
        return [log[kid] for kid in sorted(log)]

    # -- files ----------------------------------------------------------------------------------------------

    def refresh(self) -> None:
        """Read key files that appeared since the last look. Keys already in memory are kept."""
        with self._lock:
            # Taken before listing, so that a change made while we list is seen next time.
            mtime = os.stat(self._path).st_mtime_ns
            # Copy on write: readers iterate the old dicts without the lock while the new ones are filled.
            keks, signing, log = dict(self._keks), dict(self._signing), dict(self._log)
            for name in os.listdir(self._path):
                if name == _INDEX_FILE and self._index_key is None:
                    self._index_key = _oct_key(self._read(name), INDEX_KID)
                elif name.endswith(".jwk") and (match := _KID.match(name[:-4])):
                    kid = match.group(0)
                    if match.group(1) == "kek" and kid not in keks:
                        keks[kid] = _oct_key(self._read(name), kid)
                    elif match.group(1) == "sig" and kid not in signing:
                        signing[kid] = _signing_key(self._read(name), kid)
                    elif match.group(1) == "log" and kid not in log:
                        log[kid] = _signing_key(self._read(name), kid)
            self._keks, self._signing, self._log, self._seen_mtime_ns = keks, signing, log, mtime

    def _refresh_if_changed(self) -> None:
        # One stat per call: cheap next to reading the files, and it lets every worker start using a key made
        # by `broker keys rotate` at once.
        mtime = os.stat(self._path).st_mtime_ns
        if mtime != self._seen_mtime_ns or time.time_ns() - mtime < _RACY_NS:
            self.refresh()

    def _read(self, name: str) -> dict[str, Any]:
        with open(self._path / name, "rb") as file:
            if _POSIX and os.fstat(file.fileno()).st_mode & 0o077:
                raise InsecureKeyStoreError(f"key file {name} is accessible to other users (want 0600)")
            try:
                data = json.loads(file.read())
            except ValueError:
                raise KeyStoreError(f"key file {name} is not valid JSON") from None
        if not isinstance(data, dict):
            raise KeyStoreError(f"key file {name} is not a JSON Web Key")
        return data

    def _write_new(self, name: str, jwk: dict[str, Any]) -> None:
        """Write a key file atomically and durably; never replace an existing one.

        Written to a temporary file in the same folder and fsynced, then published with os.link, which (unlike
        os.replace) fails if the name exists: overwriting a key would lose every record wrapped with it.
        """
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=self._path)  # mode 0600
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(json.dumps(jwk, sort_keys=True).encode("utf-8"))
                file.flush()
                os.fsync(file.fileno())
            # If another process made it first, the caller refreshes and uses that one.
            with contextlib.suppress(FileExistsError):
                os.link(tmp, self._path / name)
        finally:
            os.unlink(tmp)
        if _POSIX:  # make the new directory entry itself durable
            dir_fd = os.open(self._path, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)

    def _new_kid(self, kind: str) -> str:
        self.refresh()
        existing = {"kek": self._keks, "sig": self._signing, "log": self._log}[kind]
        sequence = max((int(kid.split("-")[1]) for kid in existing), default=0) + 1
        return f"{kind}-{sequence:06d}-{secrets.token_hex(4)}"


def _oct_jwk(kid: str, alg: str, key: bytes, use: str | None = None) -> dict[str, Any]:
    jwk = {"kty": "oct", "kid": kid, "alg": alg, "k": _b64url(key)}
    if use:
        jwk["use"] = use
    return jwk


def _oct_key(jwk: dict[str, Any], kid: str) -> bytes:
    try:
        key = _unb64url(jwk["k"]) if jwk.get("kty") == "oct" and jwk.get("kid") == kid else b""
    except (KeyError, TypeError, ValueError):
        key = b""
    if len(key) != KEY_BYTES:
        raise KeyStoreError(f"key file for {kid} does not hold a {KEY_BYTES}-byte oct key")
    return key


def _signing_key(jwk: dict[str, Any], kid: str) -> OKPKey:
    try:
        key = OKPKey.import_key(jwk)
    except Exception:  # joserfc raises several types for malformed keys; any of them means a corrupt file
        raise KeyStoreError(f"key file for {kid} is not an OKP key") from None
    if key.kid != kid or key.curve_name != "Ed25519" or not key.is_private:
        raise KeyStoreError(f"key file for {kid} is not a private Ed25519 key with that kid")
    return key
