"""The development identity provider's own credentials and the portal's client registration, in the instance's
`dev-idp/` folder (0700), one file each (0600):

- `signing-key.jwk` — the IdP's Ed25519 key for ID tokens (OKP, alg "Ed25519": RFC 8037, RFC 9864);
- `secret.json` — 256 random bits from which the pairwise-subject and CSRF keys are derived;
- `portal-client.json` — the portal's registration: `client_id` "portal" and its client secret.

Every file is written once, atomically and without clobbering (os.link fails if the name exists), so that
several worker processes starting at the same moment all end up with the winner's file. Nothing here touches
the database, so an app whose database is down still starts.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import os
import secrets
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from joserfc.jwk import OKPKey

from broker.config import Settings
from broker.domain.errors import ConfigurationError

FOLDER = "dev-idp"
SIGNING_KEY_FILE = "signing-key.jwk"
SECRET_FILE = "secret.json"  # noqa: S105  # nosec B105  # a file name
PORTAL_CLIENT_FILE = "portal-client.json"
PORTAL_CLIENT_ID = "portal"
PORTAL_CALLBACK_PATH = "/portal/auth/callback"
#: The one client authentication method the IdP accepts at its token endpoint (RFC 6749 §2.3.1).
TOKEN_ENDPOINT_AUTH_METHOD = "client_secret_basic"  # noqa: S105  # nosec B105  # a method name (RFC 7591 §2)
_POSIX = os.name == "posix"


@dataclass(frozen=True)
class PortalRegistration:
    """The portal as an OAuth client of the IdP. Its redirect URI follows the broker's issuer, so a changed
    BROKER_ISSUER never leaves a stale registration behind."""

    client_id: str
    client_secret: str
    redirect_uri: str

    def check_secret(self, presented: str) -> bool:
        return hmac.compare_digest(
            hashlib.sha256(presented.encode("utf-8")).digest(),
            hashlib.sha256(self.client_secret.encode("utf-8")).digest(),
        )


@dataclass(frozen=True)
class IdpCredentials:
    signing_key: OKPKey
    pairwise_key: bytes
    csrf_key: bytes
    portal: PortalRegistration


def folder(settings: Settings) -> Path:
    return settings.instance_path / FOLDER


def load_or_create(settings: Settings) -> IdpCredentials:
    """Read the IdP's files, creating any that are missing."""
    path = folder(settings)
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if _POSIX:
        path.chmod(0o700)  # mkdir's mode is filtered through the umask
    key_jwk = _read_or_create(path / SIGNING_KEY_FILE, _new_signing_key)
    secret = _read_or_create(path / SECRET_FILE, lambda: {"k": _b64url(secrets.token_bytes(32))})
    client = _read_or_create(
        path / PORTAL_CLIENT_FILE,
        lambda: {
            "client_id": PORTAL_CLIENT_ID,
            "client_secret": secrets.token_urlsafe(32),
            "token_endpoint_auth_method": TOKEN_ENDPOINT_AUTH_METHOD,
        },
    )
    try:
        signing_key = OKPKey.import_key(key_jwk)
        root = base64.urlsafe_b64decode(secret["k"] + "=" * (-len(secret["k"]) % 4))
        client_id, client_secret = str(client["client_id"]), str(client["client_secret"])
    except Exception:  # joserfc and base64 raise several types; any of them means a damaged file
        raise ConfigurationError(f"a file in the instance's {FOLDER}/ folder is damaged") from None
    if signing_key.curve_name != "Ed25519" or not signing_key.is_private or len(root) != 32 or not client_secret:
        raise ConfigurationError(f"a file in the instance's {FOLDER}/ folder is damaged")
    return IdpCredentials(
        signing_key=signing_key,
        # Separate keys for separate uses, derived from one secret (HMAC as a PRF, labels as in HKDF's `info`).
        pairwise_key=hmac.new(root, b"dev-idp pairwise subject", hashlib.sha256).digest(),
        csrf_key=hmac.new(root, b"dev-idp csrf", hashlib.sha256).digest(),
        portal=PortalRegistration(
            client_id=client_id, client_secret=client_secret, redirect_uri=portal_redirect_uri(settings)
        ),
    )


def read_portal_client(settings: Settings) -> dict[str, Any]:
    path = folder(settings) / PORTAL_CLIENT_FILE
    if not path.exists():
        raise ConfigurationError(
            f"no portal client registration in the instance's {FOLDER}/ folder; start the broker in demo mode first"
        )
    return _read_private(path)


def portal_redirect_uri(settings: Settings) -> str:
    return f"{settings.issuer}{PORTAL_CALLBACK_PATH}"


def _new_signing_key() -> dict[str, Any]:
    kid = f"dev-idp-{secrets.token_hex(4)}"
    key = OKPKey.generate_key("Ed25519", parameters={"kid": kid, "alg": "Ed25519", "use": "sig"})
    return dict(key.as_dict(private=True))


def _read_or_create(path: Path, make: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    if not path.exists():
        _write_new(path, make())
    return _read_private(path)


def _read_private(path: Path) -> dict[str, Any]:
    with open(path, "rb") as file:
        if _POSIX and os.fstat(file.fileno()).st_mode & 0o077:
            raise ConfigurationError(f"{FOLDER}/{path.name} is accessible to other users (want 0600)")
        try:
            data = json.loads(file.read())
        except ValueError:
            raise ConfigurationError(f"{FOLDER}/{path.name} is not valid JSON") from None
    if not isinstance(data, dict):
        raise ConfigurationError(f"{FOLDER}/{path.name} is not a JSON object")
    return data


def _write_new(path: Path, data: dict[str, Any]) -> None:
    """Write atomically and durably; never replace an existing file (the same way as the key store)."""
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)  # mode 0600
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(json.dumps(data, indent=2, sort_keys=True).encode("utf-8"))
            file.flush()
            os.fsync(file.fileno())
        # If another process made it first, everyone reads that one.
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
    finally:
        os.unlink(tmp)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")
