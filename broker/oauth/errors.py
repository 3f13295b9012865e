"""OAuth errors, named with the specifications' own words.

Two families share one root:

- token and revocation endpoint errors (RFC 6749 §5.2, RFC 7009 §2.2.1), rendered as
  `{"error", "error_description"}` with status 400, or 401 for `invalid_client`;
- protected-resource errors (RFC 6750 §3.1), rendered as an RFC 9457 problem document plus a
  `WWW-Authenticate: Bearer …` challenge.

`code` is the RFC's error code, which is also the stable `code` of the API's problem documents.
Descriptions are for the partner's developers; they never contain a token, a key or personal data.
"""

from __future__ import annotations

from typing import ClassVar


class OAuthError(Exception):
    code: ClassVar[str] = "oauth_error"
    status: ClassVar[int] = 400
    title: ClassVar[str] = "OAuth error"

    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description

    @property
    def detail(self) -> str:
        """The RFC 9457 name of the description, so that one problem renderer fits every error root."""
        return self.description


# --- Token and revocation endpoints (RFC 6749 §5.2) ---


class TokenEndpointError(OAuthError):
    """An error answered by `/oauth/token` or `/oauth/revoke`."""


class InvalidRequestError(TokenEndpointError):
    code = "invalid_request"
    title = "Invalid request"


class InvalidClientError(TokenEndpointError):
    code = "invalid_client"
    status = 401
    title = "Client authentication failed"


class UnauthorizedClientError(TokenEndpointError):
    code = "unauthorized_client"
    title = "Client not authorised for this grant type"


class UnsupportedGrantTypeError(TokenEndpointError):
    code = "unsupported_grant_type"
    title = "Unsupported grant type"


class InvalidScopeError(TokenEndpointError):
    code = "invalid_scope"
    title = "Invalid scope"


# --- Protected resources (RFC 6750 §3.1) ---


class ResourceAccessError(OAuthError):
    """An error answered by a protected route; carries its `WWW-Authenticate` challenge."""

    status = 401

    def www_authenticate(self) -> str:
        return f'Bearer error="{self.code}", error_description="{_quoted(self.description)}"'


class InvalidTokenError(ResourceAccessError):
    code = "invalid_token"
    status = 401
    title = "Invalid access token"


class MissingTokenError(InvalidTokenError):
    """No credentials at all. RFC 6750 §3.1: the challenge then SHOULD NOT carry an error code, because the
    client may simply not have known that the resource is protected. The problem document still says
    `invalid_token` so that the API keeps one code for "authenticate first"."""

    def www_authenticate(self) -> str:
        return "Bearer"


class InsufficientScopeError(ResourceAccessError):
    code = "insufficient_scope"
    status = 403
    title = "Insufficient scope"

    def __init__(self, description: str, *, scope: str) -> None:
        super().__init__(description)
        self.scope = scope

    def www_authenticate(self) -> str:
        # RFC 6750 §3: the `scope` attribute names the scope needed to access the resource.
        return f'{super().www_authenticate()}, scope="{_quoted(self.scope)}"'


def _quoted(text: str) -> str:
    """Make `text` safe inside an RFC 9110 quoted-string (RFC 6750 §3 restricts the attribute characters)."""
    return "".join(ch for ch in text if ch not in '"\\' and 0x20 <= ord(ch) <= 0x7E)
