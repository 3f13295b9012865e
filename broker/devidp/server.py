"""The Authlib authorization server of the development identity provider: OpenID Connect Core 1.0 authorization
code flow, with PKCE (RFC 7636) required and S256 only, one client (the portal) authenticating with
`client_secret_basic`, and ID tokens signed with Ed25519.

Why these choices:

- `client_secret_basic`: Authlib's Flask client does it with no code of the portal's own (it is the client's
  default method). `private_key_jwt` would need a subclass of Authlib's `PrivateKeyJWT` on the portal side
  (PITFALLS.md: a static `jti` and `aud` = the token endpoint) and a key-registration step, for an IdP that only
  ever runs on a developer's machine. The secret is 256 random bits in a 0600 file and is compared in constant
  time.
- `Ed25519` (RFC 9864), not `EdDSA` (deprecated by RFC 9864; joserfc warns on it) and not ES256: Authlib's
  client `parse_id_token` builds its JWS registry from the discovery document's
  `id_token_signing_alg_values_supported`, and joserfc registers `Ed25519`, so the portal verifies it without a
  warning. The document lists only `Ed25519` — against OpenID Connect Discovery 1.0 §3 ("RS256 MUST be
  included"): the one registered client has `Ed25519` as its `id_token_signed_response_alg` (OpenID Connect
  Registration 1.0 §2), and the portal's Authlib client uses the list as its algorithm allow-list, so naming an
  algorithm the IdP never signs with would only widen what the portal accepts.
- No `at_hash`: OpenID Connect Core 1.0 §3.1.3.6 makes it optional for the code flow, and Authlib knows no hash
  for the name `Ed25519` (`create_half_hash` maps `EdDSA` to SHA-512 and otherwise reads the hash from the
  name's tail, `RS256` → SHA-256, which finds none), so the portal's client would reject an `at_hash`.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.oauth2.rfc6749 import ClientMixin, InvalidGrantError, InvalidRequestError, InvalidScopeError
from authlib.oauth2.rfc6749.grants import AuthorizationCodeGrant
from authlib.oauth2.rfc6749.util import scope_to_list
from authlib.oauth2.rfc6750 import BearerTokenGenerator
from authlib.oauth2.rfc7636 import CodeChallenge, create_s256_code_challenge
from authlib.oauth2.rfc7636.challenge import CODE_CHALLENGE_PATTERN, CODE_VERIFIER_PATTERN
from authlib.oidc.core.errors import RequestNotSupportedError, RequestURINotSupportedError
from authlib.oidc.core.grants import OpenIDCode

from broker.devidp import store
from broker.devidp.credentials import TOKEN_ENDPOINT_AUTH_METHOD, IdpCredentials, PortalRegistration
from broker.devidp.personas import SCOPES, Persona, pairwise_subject

if TYPE_CHECKING:
    from joserfc.jwk import OKPKey

    from broker.services import Broker

ID_TOKEN_ALG = "Ed25519"  # noqa: S105  # nosec B105  # an algorithm name
ID_TOKEN_TTL = 300
#: OpenID Connect Core 1.0 §2: "0" says the authentication did not meet ISO/IEC 29115 level 1 — true of a
#: persona picked from a list, and never mistaken for a real level of assurance.
ACR = "0"
ACCESS_TOKEN_PREFIX = "devidp_at_"  # noqa: S105  # nosec B105  # the recognisable prefix, not a secret
CODE_PREFIX = "devidp_ac_"
MAX_NONCE_LENGTH = 200  # the column's width; OpenID Connect sets no limit, a browser URL does


class PortalClient(ClientMixin):
    """The portal as Authlib sees it: a confidential client with one exact redirect URI (RFC 9700 §2.1)."""

    id_token_signed_response_alg = ID_TOKEN_ALG

    def __init__(self, registration: PortalRegistration) -> None:
        self.registration = registration
        self.client_id = registration.client_id

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> None:
        return None  # OpenID Connect Core 1.0 §3.1.2.1: redirect_uri is required in every request

    def get_allowed_scope(self, scope: str | None) -> str | None:
        requested = scope_to_list(scope) or []
        # Refuse rather than silently narrow (PITFALLS.md, authlib#320).
        return " ".join(requested) if requested and set(requested) <= set(SCOPES) else None

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return hmac.compare_digest(redirect_uri.encode(), self.registration.redirect_uri.encode())

    def check_client_secret(self, client_secret: str) -> bool:
        return self.registration.check_secret(client_secret)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method == TOKEN_ENDPOINT_AUTH_METHOD and endpoint == "token"

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type == "authorization_code"


class S256CodeChallenge(CodeChallenge):
    """PKCE for every client, S256 only. Authlib's CodeChallenge lets a confidential client leave PKCE out and
    accepts `plain`; RFC 9700 §2.1.1 asks for PKCE on every authorization code and for S256 over `plain`."""

    SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]  # noqa: RUF012 — Authlib's class attribute

    def validate_code_challenge(self, grant: AuthorizationCodeGrant, redirect_uri: str) -> None:
        data = grant.request.payload.datalist
        challenges, methods = data.get("code_challenge", []), data.get("code_challenge_method", [])
        if len(challenges) != 1 or not CODE_CHALLENGE_PATTERN.match(challenges[0]):
            raise InvalidRequestError("A code_challenge (PKCE, RFC 7636) is required, exactly once.")
        if methods != ["S256"]:
            raise InvalidRequestError("code_challenge_method must be S256.")

    def validate_code_verifier(self, grant: AuthorizationCodeGrant, result: Any) -> None:
        # A missing verifier is refused as invalid_grant like a wrong one (RFC 7636 §4.6): the code was bound to
        # a challenge, and a request that cannot answer it does not hold a valid grant. The code is spent either
        # way (store.redeem_code).
        verifier = grant.request.form.get("code_verifier") or ""
        code: store.IssuedCode = grant.request.authorization_code
        if not (
            CODE_VERIFIER_PATTERN.match(verifier)
            and code.code_challenge_method == "S256"
            and hmac.compare_digest(create_s256_code_challenge(verifier), code.code_challenge)
        ):
            raise InvalidGrantError("PKCE verification failed.")


class DevAuthorizationCodeGrant(AuthorizationCodeGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = [TOKEN_ENDPOINT_AUTH_METHOD]  # noqa: RUF012 — Authlib's class attribute
    server: DevAuthorizationServer

    def validate_authorization_request(self) -> str:
        payload = self.request.payload
        # First the client and its redirect URI, so that the errors below can be sent back to it.
        redirect_uri: str = super().validate_authorization_request()
        # OpenID Connect Core 1.0 §6: request objects are optional, and this IdP does not take them.
        if "request" in payload.data:
            raise RequestNotSupportedError(state=payload.state, redirect_uri=redirect_uri)
        if "request_uri" in payload.data:
            raise RequestURINotSupportedError(state=payload.state, redirect_uri=redirect_uri)
        if "openid" not in (scope_to_list(self.request.scope) or []):
            raise InvalidScopeError("The scope must include openid.", state=payload.state, redirect_uri=redirect_uri)
        return redirect_uri

    def generate_authorization_code(self) -> str:
        return CODE_PREFIX + secrets.token_urlsafe(32)

    def save_authorization_code(self, code: str, request: Any) -> None:
        persona: Persona = request.user
        data = request.payload.data
        store.save_code(
            self.server.broker,
            code,
            client_id=request.client.get_client_id(),
            login=persona.login,
            redirect_uri=request.payload.redirect_uri,
            scope=request.scope,
            nonce=data.get("nonce"),
            code_challenge=data.get("code_challenge"),
            code_challenge_method=data.get("code_challenge_method"),
            keep_after_expiry=self.server.keep_codes_after_expiry,
        )

    def query_authorization_code(self, code: str, client: PortalClient) -> store.IssuedCode | None:
        return store.redeem_code(self.server.broker, code, client.get_client_id())

    def delete_authorization_code(self, authorization_code: store.IssuedCode) -> None:
        return None  # spent when redeemed; the row stays to recognise a replay

    def authenticate_user(self, authorization_code: store.IssuedCode) -> Persona | None:
        return self.server.personas().get(authorization_code.login)


class DevOpenIDCode(OpenIDCode):
    """The ID token: OpenID Connect Core 1.0 §2 and §3.1.3.6, every time read from the broker's clock."""

    def __init__(self, server: DevAuthorizationServer) -> None:
        super().__init__(require_nonce=True)
        self.server = server

    def validate_openid_authorization_request(self, grant: AuthorizationCodeGrant, redirect_uri: str) -> None:
        nonce = grant.request.payload.data.get("nonce") or ""
        if len(nonce) > MAX_NONCE_LENGTH:
            raise InvalidRequestError(f"The nonce may be at most {MAX_NONCE_LENGTH} characters.")
        if "\x00" in nonce:  # it is stored and looked up as text, which PostgreSQL cannot hold with U+0000
            raise InvalidRequestError("The nonce must not contain the character U+0000.")
        super().validate_openid_authorization_request(grant, redirect_uri)

    def exists_nonce(self, nonce: str, request: Any) -> bool:
        return store.nonce_used(self.server.broker, request.payload.client_id, nonce)

    def resolve_client_private_key(self, client: PortalClient) -> OKPKey:
        return self.server.credentials.signing_key

    def get_client_algorithm(self, client: PortalClient) -> str:
        return ID_TOKEN_ALG

    def get_encode_header(self, client: PortalClient) -> dict[str, str]:
        return {"alg": ID_TOKEN_ALG, "kid": str(self.server.credentials.signing_key.kid), "typ": "JWT"}

    def get_compatible_claims(self, request: Any) -> dict[str, Any]:
        now = int(self.server.broker.clock.now().timestamp())
        return {
            "iss": self.server.issuer,
            "aud": request.client.get_client_id(),
            "iat": now,
            "exp": now + ID_TOKEN_TTL,
        }

    def get_authorization_code_claims(self, authorization_code: store.IssuedCode) -> dict[str, Any]:
        claims = {"auth_time": authorization_code.get_auth_time(), "acr": ACR}
        if authorization_code.nonce:
            claims["nonce"] = authorization_code.nonce
        return claims

    def generate_user_info(self, user: Persona, scope: str) -> dict[str, Any]:
        return self.server.claims(user, scope)


class DevAuthorizationServer(AuthorizationServer):
    """Authlib's Flask authorization server bound to one broker, one issuer and one client. Nothing here
    reads Flask's app config: everything comes from the broker's settings."""

    def __init__(
        self,
        *,
        broker: Broker,
        issuer: str,
        credentials: IdpCredentials,
        personas: Callable[[], dict[str, Persona]],
    ) -> None:
        super().__init__(query_client=self._query_client, save_token=self._save_token)
        self.broker = broker
        self.issuer = issuer
        self.credentials = credentials
        self.personas = personas
        self.client = PortalClient(credentials.portal)
        self.access_token_ttl = broker.settings.access_token_ttl
        self.keep_codes_after_expiry = timedelta(seconds=self.access_token_ttl)
        self.scopes_supported = list(SCOPES)
        self.register_token_generator(
            "default",
            BearerTokenGenerator(
                access_token_generator=lambda **_: ACCESS_TOKEN_PREFIX + secrets.token_urlsafe(32),
                expires_generator=lambda _client, _grant_type: self.access_token_ttl,
            ),
        )
        self.register_grant(DevAuthorizationCodeGrant, [S256CodeChallenge(required=True), DevOpenIDCode(self)])

    def claims(self, persona: Persona, scope: str) -> dict[str, Any]:
        sector = urlsplit(self.client.registration.redirect_uri).hostname or self.client.client_id
        sub = pairwise_subject(self.credentials.pairwise_key, sector, persona.login)
        return persona.claims(scope_to_list(scope) or [], sub=sub)

    def _query_client(self, client_id: str) -> PortalClient | None:
        return self.client if hmac.compare_digest(client_id.encode(), self.client.client_id.encode()) else None

    def _save_token(self, token: dict[str, Any], request: Any) -> None:
        code: store.IssuedCode = request.authorization_code
        store.save_token(
            self.broker,
            token["access_token"],
            code_hash=code.code_hash,
            client_id=request.client.get_client_id(),
            login=request.user.login,
            scope=token.get("scope", ""),
            expires_in=int(token["expires_in"]),
        )
