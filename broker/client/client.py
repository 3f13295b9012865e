"""`BrokerClient`: a partner system's client for the broker's API (docs/api.md).

What it does for each call, so that a partner's code only says what it wants:

- **Authentication.** The `client_credentials` grant with `private_key_jwt` (RFC 7523 §2.2): a fresh client
  assertion naming the acting professional, `aud` the issuer read from the server metadata (RFC 8414). The token is
  DPoP-bound (RFC 9449): every request, the token request included, carries a new proof signed with the client's
  own DPoP key. A token is renewed before `expires_in` runs out, and once more when the broker answers 401
  `invalid_token` (revoked, or lost by a clock that ran ahead). A `use_dpop_nonce` answer is followed once with the
  nonce the broker sent (RFC 9449 §8, §9), and the latest nonce is used from then on.
- **Retries.** Connection failures, 429, 5xx and 409 `idempotency_key_in_use` are retried with exponential backoff
  and full jitter, honouring `Retry-After` (RFC 9110 §10.2.3), up to `RetryPolicy.retries` times. Every write carries
  an `Idempotency-Key` — one new UUID per call, the same on each retry of it — so that a retried disclosure is one
  disclosure (draft-ietf-httpapi-idempotency-key-header; broker/services/idempotency.py). Each attempt has its own
  DPoP proof: a proof is good for one request.
- **Errors.** A refusal raises the `BrokerError` subclass of its problem `code` (broker/client/errors.py).

Imports neither Flask nor SQLAlchemy nor any server module of the broker: a partner installs `requests` and
`joserfc` and nothing else (tests/unit/test_client_layering.py holds it to that).
"""

from __future__ import annotations

import json
import os
import random
import re
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import requests
from requests.utils import requote_uri

from broker.client.auth import (
    ASSERTION_TYPE,
    SigningKey,
    client_assertion,
    dpop_proof,
    load_signing_key,
    new_dpop_key,
)
from broker.client.errors import (
    BrokerError,
    ConnectionFailedError,
    ProtocolError,
    error_from_response,
    retry_after_seconds,
)
from broker.client.events import Event, EventVerifier

__all__ = ["AccessToken", "ApiResponse", "BrokerClient", "RetryPolicy"]

METADATA_PATH = "/.well-known/oauth-authorization-server"
API = "/api/v1"
USER_AGENT = "consent-broker-client/1"
FHIR_JSON = "application/fhir+json"
#: A token is renewed when fewer seconds than this remain of it (at most half its lifetime).
REFRESH_MARGIN = 30.0
# Methods that change nothing (RFC 9110 §9.2.1): they need no Idempotency-Key.
_SAFE = frozenset({"GET", "HEAD", "OPTIONS"})
# A failure to get any answer. A read timeout may come after the broker did the work: the retry is safe only
# because the write carries its Idempotency-Key (a GET is safe anyway).
_TRANSIENT = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)
# 501 and 505 say the broker will never do it, not that it cannot now.
_PERMANENT_5XX = frozenset({501, 505})
# At most this many immediate re-sends per call for a nonce or a renewed token (each needs a new proof).
_MAX_RECOVERIES = 2
_CHALLENGE_ERROR = re.compile(r'\berror="([^"]*)"')
# A key is sent as an RFC 9651 sf-string; the broker takes 1–255 characters (broker/http/api/idempotency.py).
_IDEMPOTENCY_KEY = re.compile(r"[\x20-\x7e]{1,255}")
_random = random.SystemRandom()


@dataclass(frozen=True)
class RetryPolicy:
    """How a call is retried: `retries` times at most after the first attempt, waiting `Retry-After` when the
    broker says (plus a little jitter), else a random time up to `backoff * 2**n` seconds (at most `max_backoff`;
    "full jitter", so that many clients failing together do not come back together). A `Retry-After` longer than
    `max_retry_after` is not waited for: the error is raised with its `retry_after`, and the caller decides."""

    retries: int = 3
    backoff: float = 0.5
    max_backoff: float = 8.0
    max_retry_after: float = 60.0

    def __post_init__(self) -> None:
        if self.retries < 0 or self.backoff < 0 or self.max_backoff < 0 or self.max_retry_after < 0:
            raise ValueError("a retry policy's numbers must not be negative")

    def delay(self, retry: int, retry_after: float | None) -> float | None:
        """Seconds to wait before retry number `retry` (0 for the first), or None when it is not to be made."""
        if retry >= self.retries:
            return None
        if retry_after is not None:
            if retry_after > self.max_retry_after:
                return None
            return retry_after + _random.uniform(0, self.backoff)
        return _random.uniform(0, min(self.max_backoff, self.backoff * 2**retry))


@dataclass(frozen=True)
class AccessToken:
    value: str = field(repr=False)
    token_type: str
    scope: str
    expires_in: int
    #: When to renew it, by the client's clock (Unix seconds).
    renew_at: float


@dataclass(frozen=True)
class ApiResponse:
    """A successful answer: status, headers, the body (parsed JSON, or None when empty) and the call's
    Idempotency-Key (None for reads)."""

    status: int
    headers: Mapping[str, str]
    body: Any
    idempotency_key: str | None

    @property
    def replayed(self) -> bool:
        """Whether the broker answered a retry with the first call's stored response."""
        return self.headers.get("Idempotency-Replayed") == "true"


class BrokerClient:
    """A partner system's client, acting for one professional.

    `base_url` is where the broker is reached; `issuer` its issuer identifier when known in advance (checked against
    the metadata, RFC 8414 §3.3), else read from the metadata. `key` is the partner's registered private key (a JWK
    dict, or the path of a file holding one). `acting` is `(staff id, role)` of the professional on whose behalf the
    calls are made. `organisation`, when given, is the organisation events must be addressed to (`verify_event`).
    `dpop_key` is the DPoP key pair (a new Ed25519 key when not given). `clock` and `sleep` are injectable for tests.

    Network calls happen on first use, not in the constructor. Thread-safe: one client may serve several threads."""

    def __init__(
        self,
        base_url: str,
        client_id: str,
        key: SigningKey | dict[str, Any] | str | os.PathLike[str],
        *,
        acting: tuple[str, str],
        issuer: str | None = None,
        organisation: str | None = None,
        scope: str | None = None,
        dpop_key: SigningKey | dict[str, Any] | None = None,
        timeout: float | tuple[float, float] = 10.0,
        retries: int | RetryPolicy = 3,
        session: requests.Session | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not base_url.startswith(("https://", "http://")):
            raise ValueError(f"base_url must be an http(s) URL, not {base_url!r}")
        if (
            not isinstance(acting, tuple | list)
            or len(acting) != 2
            or not all(isinstance(part, str) and part for part in acting)
        ):
            raise ValueError("acting must be (staff id, role) of the professional the calls are made for")
        staff_id, role = acting
        self.base_url = base_url.rstrip("/")
        self.client_id = client_id
        self.acting = (staff_id, role)
        self.organisation = organisation
        self.scope = scope
        self._key = load_signing_key(key)
        self._dpop_key = load_signing_key(dpop_key) if dpop_key is not None else new_dpop_key()
        self._expected_issuer = issuer.rstrip("/") if issuer else None
        self._timeout = timeout
        self._policy = retries if isinstance(retries, RetryPolicy) else RetryPolicy(retries=retries)
        self._own_session = session is None
        self._session = session or requests.Session()
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.RLock()
        self._metadata: dict[str, Any] | None = None
        self._token: AccessToken | None = None
        # The latest DPoP-Nonce of the authorization server (token endpoint) and of the resource server (the API):
        # RFC 9449 §8 and §9 keep them apart, though this broker is both.
        self._nonces: dict[str, str] = {}
        self._events: EventVerifier | None = None

    @classmethod
    def from_demo(
        cls, instance: str | os.PathLike[str], partner: str, *, acting: tuple[str, str] | None = None, **options: Any
    ) -> BrokerClient:
        """A client for a demo partner, from the demo instance's `demo.json` (DESIGN.md, "The embedded default and
        the demo"): its base URL, issuer, key file, organisation and demo professional (unless `acting` is given)."""
        folder = Path(instance)
        try:
            demo = json.loads((folder / "demo.json").read_text(encoding="utf-8"))
        except OSError as error:
            raise ValueError(f"no demo instance in {folder}: {error.strerror} (run `broker demo` first)") from error
        entry = next((p for p in demo.get("partners", []) if p.get("client_id") == partner), None)
        if entry is None:
            known = ", ".join(p.get("client_id", "?") for p in demo.get("partners", []))
            raise ValueError(f"no partner {partner!r} in {folder / 'demo.json'}; it lists {known}")
        if acting is None:
            acting = (entry["actor"]["sub"], entry["actor"]["role"])
        return cls(
            demo["base_url"],
            entry["client_id"],
            folder / entry["key_file"],
            acting=acting,
            issuer=demo.get("issuer"),
            organisation=entry.get("organisation"),
            **options,
        )

    def with_actor(self, staff_id: str, role: str) -> BrokerClient:
        """A client for another professional of the same partner system: its own tokens (a token names one
        professional), the same connection pool, DPoP key and broker metadata."""
        other = BrokerClient(
            self.base_url,
            self.client_id,
            self._key,
            acting=(staff_id, role),
            issuer=self._expected_issuer,
            organisation=self.organisation,
            scope=self.scope,
            dpop_key=self._dpop_key,
            timeout=self._timeout,
            retries=self._policy,
            session=self._session,
            clock=self._clock,
            sleep=self._sleep,
        )
        other._own_session = False
        other._metadata = self._metadata
        other._events = self._events
        return other

    def close(self) -> None:
        """Close the connection pool, if the client made it."""
        if self._own_session:
            self._session.close()

    def __enter__(self) -> BrokerClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # --- discovery ---

    def metadata(self) -> dict[str, Any]:
        """The authorization server metadata (RFC 8414), fetched once."""
        with self._lock:
            if self._metadata is None:
                self._metadata = self._discover()
            return self._metadata

    @property
    def issuer(self) -> str:
        issuer: str = self.metadata()["issuer"]
        return issuer

    @property
    def dpop_thumbprint(self) -> str:
        """The RFC 7638 thumbprint of the DPoP key: what the broker binds this client's tokens to."""
        return self._dpop_key.thumbprint

    def _discover(self) -> dict[str, Any]:
        response = self._perform("GET", self.base_url + METADATA_PATH, lambda: ({"Accept": "application/json"}, None))
        metadata = self._json_success(response, "the authorization server metadata")
        issuer = metadata.get("issuer")
        if not isinstance(issuer, str) or not isinstance(metadata.get("token_endpoint"), str):
            raise ProtocolError(None, detail="the metadata names no issuer or token endpoint (RFC 8414 §2)")
        # RFC 8414 §3.3: the issuer in the metadata must be the one the client expected.
        if self._expected_issuer is not None and issuer != self._expected_issuer:
            raise ProtocolError(
                None, detail=f"the metadata is for issuer {issuer!r}, not the expected {self._expected_issuer!r}"
            )
        methods = metadata.get("token_endpoint_auth_methods_supported", ["private_key_jwt"])
        if "private_key_jwt" not in methods:
            raise ProtocolError(None, detail="the broker does not accept private_key_jwt client authentication")
        for member, key, what in (
            ("token_endpoint_auth_signing_alg_values_supported", self._key, "client key"),
            ("dpop_signing_alg_values_supported", self._dpop_key, "DPoP key"),
        ):
            accepted = metadata.get(member)
            if isinstance(accepted, list) and key.alg not in accepted:
                raise ProtocolError(
                    None, detail=f"the {what} signs with {key.alg}; the broker accepts {', '.join(map(str, accepted))}"
                )
        return metadata

    def _reached(self, url: str) -> str:
        """A URL the metadata names (under the issuer's public address), as reached through `base_url`: the two
        differ when the partner reaches the broker by an internal address."""
        issuer = self.issuer
        if url == issuer or url.startswith(issuer + "/"):
            return self.base_url + url[len(issuer) :]
        return url

    # --- tokens ---

    def token(self, *, renew: bool = False) -> AccessToken:
        """The current access token, obtained or renewed as needed."""
        with self._lock:
            token = self._token
            if renew or token is None or self._clock() >= token.renew_at:
                token = self._token = self._request_token()
            return token

    def _request_token(self) -> AccessToken:
        metadata = self.metadata()
        endpoint: str = metadata["token_endpoint"]

        def prepare() -> tuple[dict[str, str], dict[str, str]]:
            now = self._clock()
            form = {
                "grant_type": "client_credentials",
                "client_assertion_type": ASSERTION_TYPE,
                "client_assertion": client_assertion(
                    self._key, client_id=self.client_id, issuer=self.issuer, actor=self.acting, now=now
                ),
            }
            if self.scope:
                form["scope"] = self.scope
            # The proof's `htu` is the token endpoint as the metadata names it (RFC 9449 §4.2, §5).
            proof = dpop_proof(self._dpop_key, method="POST", url=endpoint, now=now, nonce=self._nonces.get("token"))
            return {"DPoP": proof, "Accept": "application/json"}, form

        def recover(response: requests.Response) -> bool:
            # RFC 9449 §8: the token endpoint answers 400 `use_dpop_nonce` with the nonce to use.
            return response.status_code == 400 and _error_code(response) == "use_dpop_nonce" and _has_nonce(response)

        sent_at = self._clock()
        response = self._perform("POST", self._reached(endpoint), prepare, nonce_slot="token", recover=recover)
        body = self._json_success(response, "the token response")
        value, token_type, expires_in = body.get("access_token"), body.get("token_type"), body.get("expires_in")
        if not isinstance(value, str) or not isinstance(expires_in, int) or expires_in <= 0:
            raise ProtocolError(None, detail="the token response lacks access_token or expires_in (RFC 6749 §5.1)")
        # RFC 9449 §5: a token issued for a request with a proof is bound only if its type says DPoP (token types
        # compare case-insensitively, RFC 6749 §5.1). A Bearer token would be refused under the DPoP scheme.
        if not isinstance(token_type, str) or token_type.lower() != "dpop":
            raise ProtocolError(None, detail=f"the broker issued a {token_type!r} token, not a DPoP-bound one")
        margin = min(REFRESH_MARGIN, expires_in / 2)
        return AccessToken(
            value=value,
            token_type=token_type,
            scope=str(body.get("scope", "")),
            expires_in=expires_in,
            renew_at=sent_at + expires_in - margin,
        )

    def revoke_token(self) -> None:
        """Revoke the current access token (RFC 7009), if there is one; the next call obtains a new one."""
        with self._lock:
            token, self._token = self._token, None
        if token is None:
            return
        endpoint = self.metadata().get("revocation_endpoint")
        if not isinstance(endpoint, str):
            raise ProtocolError(None, detail="the metadata names no revocation endpoint")

        def prepare() -> tuple[dict[str, str], dict[str, str]]:
            assertion = client_assertion(
                self._key, client_id=self.client_id, issuer=self.issuer, actor=self.acting, now=self._clock()
            )
            form = {"token": token.value, "client_assertion_type": ASSERTION_TYPE, "client_assertion": assertion}
            return {"Accept": "application/json"}, form

        response = self._perform("POST", self._reached(endpoint), prepare)
        if response.status_code != 200:
            raise self._error(response)

    # --- the API, generically ---

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
        accept: str = "application/json",
    ) -> ApiResponse:
        """Call any operation: `path` is the path under the base URL ("/api/v1/…"), `json` the body (none when
        None). A write gets `idempotency_key`, or a new UUID. Raises a `BrokerError` for an error answer."""
        method = method.upper()
        target = _checked_path(path)
        key = None
        if method not in _SAFE:
            key = str(uuid.uuid4()) if idempotency_key is None else idempotency_key
            if not _IDEMPOTENCY_KEY.fullmatch(key):
                raise ValueError("an Idempotency-Key is 1 to 255 printable ASCII characters")
        elif idempotency_key is not None:
            raise ValueError(f"{method} changes nothing and takes no Idempotency-Key")
        # Serialised once: a retry must send the same bytes, or the broker takes it for another request (422).
        data = None if json is None else _json_bytes(json)
        # `htu` is the URL as the issuer names it (broker/oauth/endpoints.py): the issuer followed by the path as
        # sent, which requests re-quotes the same way.
        htu = self.issuer + requote_uri(target.split("?", 1)[0])
        used: list[AccessToken] = []

        def prepare() -> tuple[dict[str, str], bytes | None]:
            token = self.token()
            used.append(token)
            headers = {
                "Authorization": f"DPoP {token.value}",
                "DPoP": dpop_proof(
                    self._dpop_key,
                    method=method,
                    url=htu,
                    now=self._clock(),
                    access_token=token.value,
                    nonce=self._nonces.get("resource"),
                ),
                "Accept": accept,
            }
            if data is not None:
                headers["Content-Type"] = "application/json"
            if key is not None:
                headers["Idempotency-Key"] = '"' + key.replace("\\", "\\\\").replace('"', '\\"') + '"'
            return headers, data

        renewed = False

        def recover(response: requests.Response) -> bool:
            nonlocal renewed
            if response.status_code != 401:
                return False
            code = _error_code(response)
            if code == "use_dpop_nonce":  # RFC 9449 §9: send again with the resource server's nonce
                return _has_nonce(response)
            if code == "invalid_token" and not renewed:  # revoked, or expired sooner than the client thought
                renewed = True
                self._forget_token(used[-1])
                return True
            return False

        response = self._perform(
            method, self.base_url + target, prepare, params=params, nonce_slot="resource", recover=recover
        )
        if not 200 <= response.status_code < 300:
            raise self._error(response)
        return ApiResponse(response.status_code, response.headers, _body(response), key)

    def get(self, path: str, *, params: Mapping[str, Any] | None = None, accept: str = "application/json") -> Any:
        return self.request("GET", path, params=params, accept=accept).body

    def post(self, path: str, json: Any = None, *, idempotency_key: str | None = None) -> Any:
        return self.request("POST", path, json=json, idempotency_key=idempotency_key).body

    def delete(self, path: str, *, idempotency_key: str | None = None) -> Any:
        return self.request("DELETE", path, idempotency_key=idempotency_key).body

    # --- the operations of DESIGN.md's "API contract (v1)" ---

    def resolve_person(self, hetu: str, *, idempotency_key: str | None = None) -> str:
        """The `person_id` of the person with this identity code (created on first sight). The code goes in the
        body only, never in a URL (DESIGN.md invariant 6)."""
        body = self.post(f"{API}/persons/resolve", {"hetu": hetu}, idempotency_key=idempotency_key)
        person_id: str = body["person_id"]
        return person_id

    def start_relationship(self, person_id: str, *, idempotency_key: str | None = None) -> dict[str, Any]:
        """Your organisation starts serving the person (a service relationship)."""
        return self._post(f"{API}/persons/{_segment(person_id)}/relationships", None, idempotency_key)

    def end_relationship(self, person_id: str, *, idempotency_key: str | None = None) -> dict[str, Any]:
        """Your organisation stops serving the person; consents bound to the relationship end with it."""
        return self._post(f"{API}/persons/{_segment(person_id)}/relationships/end", None, idempotency_key)

    def register_representative(
        self,
        person_id: str,
        *,
        hetu: str,
        mandate: str,
        valid_until: datetime | str | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """Register a mandate your organisation has verified (`custodian`, `guardian_personal`,
        `continuing_poa_personal`): the person with identity code `hetu` may act for this person in the portal."""
        body = _present({"hetu": hetu, "mandate": mandate, "valid_until": valid_until})
        return self._post(f"{API}/persons/{_segment(person_id)}/representatives", body, idempotency_key)

    def request_consent(
        self,
        person_id: str,
        *,
        recipients: list[str],
        categories: list[str],
        purposes: list[str],
        reason: str,
        valid_days: int | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """Ask the person for a consent; the person answers in the portal."""
        body = _present(
            {
                "person_id": person_id,
                "recipients": recipients,
                "categories": categories,
                "purposes": purposes,
                "reason": reason,
                "valid_days": valid_days,
            }
        )
        return self._post(f"{API}/consent-requests", body, idempotency_key)

    def record_consent(
        self,
        person_id: str,
        *,
        recipients: list[str],
        categories: list[str],
        purposes: list[str],
        method: str,
        witness: str | None = None,
        valid_until: datetime | str | None = None,
        bound_to_relationship: bool | None = None,
        explicit: bool | None = None,
        written: bool | None = None,
        language: str | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """Record a consent the person gave in person (`method="in_person"`, with a `witness`) or on paper
        (`method="paper"`). Options left as None take the broker's defaults."""
        body = _present(
            {
                "person_id": person_id,
                "recipients": recipients,
                "categories": categories,
                "purposes": purposes,
                "method": method,
                "witness": witness,
                "valid_until": valid_until,
                "bound_to_relationship": bound_to_relationship,
                "explicit": explicit,
                "written": written,
                "language": language,
            }
        )
        return self._post(f"{API}/consents", body, idempotency_key)

    def list_consents(self, person_id: str) -> list[dict[str, Any]]:
        """The person's consents in which your organisation is requester or recipient."""
        consents: list[dict[str, Any]] = self.get(f"{API}/consents", params={"person_id": person_id})
        return consents

    def withdraw_consent(
        self, consent_id: str, *, reason: str | None = None, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        """Record a withdrawal the person made to a professional; it holds for every later request."""
        return self._post(
            f"{API}/consents/{_segment(consent_id)}/withdraw", _present({"reason": reason}), idempotency_key
        )

    def consent_receipt(self, consent_id: str) -> dict[str, Any]:
        """`{consent_id, receipt}`: the signed consent receipt, a compact JWS (Ed25519) verifiable with the
        broker's JWK Set."""
        receipt: dict[str, Any] = self.get(f"{API}/consents/{_segment(consent_id)}/receipt")
        return receipt

    def deposit_record(
        self, person_id: str, category: str, content: dict[str, Any], *, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        """Deposit a record; `content` is validated by the category's schema and encrypted at rest."""
        body = {"person_id": person_id, "category": category, "content": content}
        return self._post(f"{API}/records", body, idempotency_key)

    def disclose(
        self,
        person_id: str,
        category: str,
        purpose: str,
        *,
        exception: dict[str, str] | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """Ask for the person's records of `category` for `purpose`: the disclosure (its basis, and only the
        fields the purpose allows), or `NoLegalBasisError`. `exception` asserts a statutory exception:
        `{"ground": …, "justification": …}` (docs/api.md, "Asking for records")."""
        body = _present({"person_id": person_id, "category": category, "purpose": purpose, "exception": exception})
        return self._post(f"{API}/disclosures", body, idempotency_key)

    def decide(
        self,
        person_id: str,
        category: str,
        purpose: str,
        *,
        exception: dict[str, str] | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """Dry run of `disclose`: would it be permitted, on what basis. Audited; discloses nothing."""
        body = _present({"person_id": person_id, "category": category, "purpose": purpose, "exception": exception})
        return self._post(f"{API}/decisions", body, idempotency_key)

    def send_notice(
        self,
        person_id: str,
        kind: str,
        recipient: str,
        content: dict[str, Any],
        *,
        purpose: str | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """Send a statutory notice (e.g. `interruption_notice`) to one organisation."""
        body = _present(
            {"person_id": person_id, "kind": kind, "recipient": recipient, "content": content, "purpose": purpose}
        )
        return self._post(f"{API}/notices", body, idempotency_key)

    def inbox(self, *, include_acknowledged: bool = False, limit: int | None = None) -> list[dict[str, Any]]:
        """Notices addressed to your organisation (unacknowledged ones unless asked)."""
        params: dict[str, Any] = {"include_acknowledged": "true" if include_acknowledged else "false"}
        if limit is not None:
            params["limit"] = limit
        notices: list[dict[str, Any]] = self.get(f"{API}/inbox", params=params)
        return notices

    def ack(self, notice_id: str, *, idempotency_key: str | None = None) -> dict[str, Any]:
        """Acknowledge a notice of the inbox."""
        return self._post(f"{API}/inbox/{_segment(notice_id)}/ack", None, idempotency_key)

    # --- webhooks, the event feed, withdrawal attestations, FHIR and consent records (issue #8) ---

    def create_webhook(self, url: str, events: list[str], *, idempotency_key: str | None = None) -> dict[str, Any]:
        """Register an endpoint to which the broker pushes your organisation's events of these types, each a signed
        Security Event Token (RFC 8417, RFC 8935): check each with `verify_event`."""
        return self._post(f"{API}/webhooks", {"url": url, "events": events}, idempotency_key)

    def list_webhooks(self) -> list[dict[str, Any]]:
        """Your organisation's endpoints, active and disabled, with their delivery counts."""
        webhooks: list[dict[str, Any]] = self.get(f"{API}/webhooks")
        return webhooks

    def get_webhook(self, webhook_id: str) -> dict[str, Any]:
        webhook: dict[str, Any] = self.get(f"{API}/webhooks/{_segment(webhook_id)}")
        return webhook

    def delete_webhook(self, webhook_id: str) -> None:
        """Disable an endpoint: nothing more is pushed to it (DELETE is idempotent, RFC 9110 §9.2.2)."""
        self.delete(f"{API}/webhooks/{_segment(webhook_id)}")

    def test_webhook(self, webhook_id: str) -> dict[str, Any]:
        """Push a signed `webhook.test` event to the endpoint now: `{event_id, delivered, status, error, …}`."""
        return self._post(f"{API}/webhooks/{_segment(webhook_id)}/test", None, None)

    def webhook_deliveries(
        self, webhook_id: str, *, status: str | None = None, cursor: str | None = None, limit: int | None = None
    ) -> dict[str, Any]:
        """A page of the endpoint's deliveries, newest first: `{deliveries, next_cursor}`; pass `next_cursor` back
        as `cursor` for the next page. `status` is `pending`, `delivered` or `failed`."""
        params = _present({"status": status, "cursor": cursor, "limit": limit})
        page: dict[str, Any] = self.get(f"{API}/webhooks/{_segment(webhook_id)}/deliveries", params=params)
        return page

    def events(self, *, after: str | None = None, limit: int | None = None, tokens: bool = False) -> dict[str, Any]:
        """A page of your organisation's events in the order they were written — the same events the webhooks
        get, to read instead of (or after) a push: `{events, next_cursor, has_more}`; pass `next_cursor` back as
        `after` to read on. With `tokens`, each event carries its signed token for `verify_event`."""
        params = _present({"after": after, "limit": limit, "tokens": "true" if tokens else None})
        page: dict[str, Any] = self.get(f"{API}/events", params=params)
        return page

    def list_attestations(self, *, status: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
        """The attestations asked of your organisation after withdrawals: `open` (the broker's default),
        `answered` or `all`."""
        params = _present({"status": status, "limit": limit})
        attestations: list[dict[str, Any]] = self.get(f"{API}/attestations", params=params)
        return attestations

    def attest(
        self,
        consent_id: str,
        outcome: str,
        *,
        statute: str | None = None,
        note: str | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """Say what your organisation did with the data it received under a consent the person withdrew:
        `deleted`, or `retained` with the `statute` that requires keeping it. Answered once."""
        body = _present({"outcome": outcome, "statute": statute, "note": note})
        return self._post(f"{API}/consents/{_segment(consent_id)}/attestation", body, idempotency_key)

    def consent_record(self, consent_id: str) -> dict[str, Any]:
        """The consent as an ISO/IEC TS 27560 consent record, with the same record signed."""
        record: dict[str, Any] = self.get(f"{API}/consents/{_segment(consent_id)}/record")
        return record

    def fhir_consents(self, patient: str) -> dict[str, Any]:
        """The person's consents as FHIR R4 Consent resources in a searchset Bundle (`patient`: a person_id)."""
        bundle: dict[str, Any] = self.get(f"{API}/fhir/Consent", params={"patient": patient}, accept=FHIR_JSON)
        return bundle

    def fhir_audit_events(self, patient: str) -> dict[str, Any]:
        """The person's disclosures made to or by your organisation as FHIR R4 AuditEvent resources in a
        searchset Bundle."""
        bundle: dict[str, Any] = self.get(f"{API}/fhir/AuditEvent", params={"patient": patient}, accept=FHIR_JSON)
        return bundle

    def fhir_read(self, resource_type: str, resource_id: str) -> dict[str, Any]:
        """One FHIR R4 resource by its FHIR id (`Consent`, `con-…`; `AuditEvent`, `dis-…` or `not-…`), as a search
        Bundle's `fullUrl` names it (FHIR R4 http.html#read)."""
        if resource_type not in ("Consent", "AuditEvent"):
            raise ValueError(f"the broker serves Consent and AuditEvent, not {resource_type!r}")
        resource: dict[str, Any] = self.get(f"{API}/fhir/{resource_type}/{_segment(resource_id)}", accept=FHIR_JSON)
        return resource

    def fhir_capabilities(self) -> dict[str, Any]:
        """The broker's FHIR CapabilityStatement (GET /api/v1/fhir/metadata, FHIR R4 http.html#capabilities)."""
        statement: dict[str, Any] = self.get(f"{API}/fhir/metadata", accept=FHIR_JSON)
        return statement

    # --- events pushed to the partner ---

    def jwks(self) -> dict[str, Any]:
        """The broker's JWK Set (/.well-known/jwks.json, or the metadata's `jwks_uri`), fetched now."""
        metadata = self.metadata()
        url = metadata.get("jwks_uri") or self.issuer + "/.well-known/jwks.json"
        response = self._perform("GET", self._reached(url), lambda: ({"Accept": "application/json"}, None))
        return self._json_success(response, "the broker's JWK Set")

    def verify_event(self, body: bytes | str, jwks: dict[str, Any] | None = None) -> Event:
        """Verify a Security Event Token the broker pushed to a webhook and return its event (broker/client/
        events.py). Uses `jwks` when given, else the broker's JWK Set, fetched once and again on an unknown key.
        Raises `InvalidEventError`; answer the broker 400 with its `response_body()` then (RFC 8935 §2.3)."""
        if jwks is not None:
            # The issuer given at construction is the one the metadata must name anyway: no request is needed.
            issuer = self._expected_issuer or self.issuer
            verifier = EventVerifier(issuer=issuer, jwks=jwks, audience=self.organisation, clock=self._clock)
            return verifier.verify(body)
        with self._lock:
            if self._events is None:
                self._events = EventVerifier(
                    issuer=self.issuer, jwks=self.jwks, audience=self.organisation, clock=self._clock
                )
            verifier = self._events
        return verifier.verify(body)

    # --- sending ---

    def _post(self, path: str, body: Any, idempotency_key: str | None) -> dict[str, Any]:
        result: dict[str, Any] = self.post(path, body, idempotency_key=idempotency_key)
        return result

    def _perform(
        self,
        method: str,
        url: str,
        prepare: Callable[[], tuple[dict[str, str], Any]],
        *,
        params: Mapping[str, Any] | None = None,
        nonce_slot: str | None = None,
        recover: Callable[[requests.Response], bool] | None = None,
    ) -> requests.Response:
        """Send one logical request, with its retries. `prepare` gives each attempt's headers and body (a new
        proof, a new assertion); `recover` says whether an error answer is to be sent again at once (it has been
        dealt with: a nonce to use, a token renewed). Returns the final answer, whatever its status; raises
        ConnectionFailedError when no attempt got one."""
        retry = recoveries = 0
        while True:
            headers, data = prepare()
            headers["User-Agent"] = USER_AGENT
            try:
                response = self._session.request(
                    method,
                    url,
                    headers=headers,
                    data=data,
                    params=params,
                    timeout=self._timeout,
                    # Never follow a redirect: it would take the proof (made for this URL) and the token elsewhere.
                    allow_redirects=False,
                )
            except _TRANSIENT as error:
                delay = self._policy.delay(retry, None)
                if delay is None:
                    raise ConnectionFailedError(None, detail=f"{method} {url}: {type(error).__name__}") from error
                self._sleep(delay)
                retry += 1
                continue
            if nonce_slot is not None and _has_nonce(response):
                self._nonces[nonce_slot] = response.headers["DPoP-Nonce"]
            if response.status_code < 400:
                return response
            if recover is not None and recoveries < _MAX_RECOVERIES and recover(response):
                recoveries += 1
                response.close()
                continue
            delay = self._retry_delay(response, retry)
            if delay is None:
                return response
            response.close()
            self._sleep(delay)
            retry += 1

    def _retry_delay(self, response: requests.Response, retry: int) -> float | None:
        status = response.status_code
        transient = (
            status == 429
            or (status >= 500 and status not in _PERMANENT_5XX)
            # The first attempt of this call is still running at the broker (it timed out here, not there).
            or (status == 409 and _error_code(response) == "idempotency_key_in_use")
        )
        if not transient:
            return None
        return self._policy.delay(retry, retry_after_seconds(response.headers.get("Retry-After"), now=self._clock()))

    def _forget_token(self, token: AccessToken) -> None:
        with self._lock:
            if self._token is token:  # another thread may have renewed it already
                self._token = None

    def _error(self, response: requests.Response) -> BrokerError:
        return error_from_response(
            response.status_code, response.content, response.headers, now=self._clock(), reason=response.reason
        )

    def _json_success(self, response: requests.Response, what: str) -> dict[str, Any]:
        if response.status_code != 200:
            raise self._error(response)
        body = _body(response)
        if not isinstance(body, dict):
            raise ProtocolError(response.status_code, detail=f"{what} is not a JSON object")
        return body


def _checked_path(path: str) -> str:
    """A path under the base URL. A full URL is refused: the token and proofs are for the broker only."""
    if not path.startswith("/") or path.startswith("//") or "#" in path:
        raise ValueError(f"give the path under the base URL, starting with '/', e.g. '{API}/inbox' (not {path!r})")
    return path


def _segment(value: str) -> str:
    """An id as one path segment: percent-encoded, so that no id can name another path."""
    if not isinstance(value, str) or not value:
        raise ValueError("an id must be a non-empty string")
    return quote(value, safe="")


def _present(body: dict[str, Any]) -> dict[str, Any]:
    """The members that were given: one left out takes the broker's default."""
    return {name: value for name, value in body.items() if value is not None}


def _json_bytes(value: Any) -> bytes:
    def encode(item: Any) -> str:
        if isinstance(item, datetime):
            if item.tzinfo is None:
                raise ValueError("a time sent to the broker needs its UTC offset")
            return item.isoformat()
        raise TypeError(f"{type(item).__name__} is not JSON serialisable")

    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=encode).encode("utf-8")


def _body(response: requests.Response) -> Any:
    if not response.content:
        return None
    media_type = response.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
    if media_type == "application/json" or media_type.endswith("+json"):
        try:
            return response.json()
        except ValueError as error:
            raise ProtocolError(response.status_code, detail="the answer is not valid JSON") from error
    return response.text


def _error_code(response: requests.Response) -> str | None:
    """The error code of an error answer: the problem's `code`, the OAuth `error`, or the challenge's `error`."""
    try:
        body = json.loads(response.content) if response.content else None
    except ValueError:
        body = None
    if isinstance(body, dict):
        for member in ("code", "error"):
            if isinstance(body.get(member), str):
                code: str = body[member]
                return code
    challenge = _CHALLENGE_ERROR.search(response.headers.get("WWW-Authenticate", ""))
    return challenge.group(1) if challenge else None


def _has_nonce(response: requests.Response) -> bool:
    return bool(response.headers.get("DPoP-Nonce"))
