"""OAuth errors, named with the specifications' own words.

Two families share one root:

- token and revocation endpoint errors (RFC 6749 §5.2, RFC 7009 §2.2.1), rendered as
  `{"error", "error_description"}` with status 400, or 401 for `invalid_client`;
- protected-resource errors (RFC 6750 §3.1, RFC 9449 §7.1), rendered as an RFC 9457 problem document plus a
  `WWW-Authenticate: Bearer …` or `DPoP …` challenge.

A refused DPoP proof (RFC 9449) is raised by the pure dpop.py as `DpopProofError` / `DpopNonceError`; the token
endpoint and the resource protector answer it in their own family (`InvalidDpopProofError`, 400, at the token
endpoint; `ResourceDpopProofError`, 401, at a resource), with the same code.

`code` is the RFC's error code, which is also the stable `code` of the API's problem documents.
Descriptions are for the partner's developers; they never contain a token, a key or personal data.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar


class OAuthError(Exception):
    code: ClassVar[str] = "oauth_error"
    status: ClassVar[int] = 400
    title: ClassVar[str] = "OAuth error"

    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description
        #: Response headers that belong to the error (a fresh `DPoP-Nonce`, RFC 9449 §8).
        self.headers: dict[str, str] = {}

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


class InvalidDpopProofError(TokenEndpointError):
    """RFC 9449 §5: a token request whose DPoP proof is missing (when DPoP is required) or invalid."""

    code = "invalid_dpop_proof"
    title = "Invalid DPoP proof"


class UseDpopNonceError(TokenEndpointError):
    """RFC 9449 §8: the proof must carry the server's nonce, which is in the `DPoP-Nonce` header."""

    code = "use_dpop_nonce"
    title = "DPoP nonce required"

    def __init__(self, description: str, *, nonce: str) -> None:
        super().__init__(description)
        self.headers["DPoP-Nonce"] = nonce


# --- DPoP proofs, before they are answered by one endpoint family (RFC 9449 §4.3) ---


class DpopProofError(OAuthError):
    code = "invalid_dpop_proof"
    title = "Invalid DPoP proof"


class DpopNonceError(DpopProofError):
    code = "use_dpop_nonce"
    title = "DPoP nonce required"

    def __init__(self, description: str, *, nonce: str) -> None:
        super().__init__(description)
        self.nonce = nonce


# --- Protected resources (RFC 6750 §3.1) ---


class ResourceAccessError(OAuthError):
    """An error answered by a protected route; carries its `WWW-Authenticate` challenge.

    The challenge's scheme is the one the request used, or should have used: `DPoP` for a DPoP-bound token or a
    broker that requires DPoP, with the proof algorithms it accepts in `algs` (RFC 9449 §7.1); `Bearer`
    otherwise (RFC 6750 §3)."""

    status = 401

    def __init__(self, description: str, *, dpop_algs: Sequence[str] = ()) -> None:
        super().__init__(description)
        self.dpop_algs = tuple(dpop_algs)

    def www_authenticate(self) -> str:
        scheme = "DPoP" if self.dpop_algs else "Bearer"
        challenge = f'{scheme} error="{self.code}", error_description="{_quoted(self.description)}"'
        return challenge + self._algs()

    def _algs(self) -> str:
        return f', algs="{" ".join(self.dpop_algs)}"' if self.dpop_algs else ""


class InvalidTokenError(ResourceAccessError):
    code = "invalid_token"
    status = 401
    title = "Invalid access token"


class MissingTokenError(InvalidTokenError):
    """No credentials at all. RFC 6750 §3.1: the challenge then SHOULD NOT carry an error code, because the
    client may simply not have known that the resource is protected. The problem document still says
    `invalid_token` so that the API keeps one code for "authenticate first".

    The challenge names every scheme the broker accepts (RFC 9449 §7.1, §7.2): `DPoP` alone when DPoP is
    required, else `Bearer` and `DPoP`."""

    def __init__(self, description: str, *, dpop_algs: Sequence[str] = (), bearer: bool = True) -> None:
        super().__init__(description, dpop_algs=dpop_algs)
        self.bearer = bearer

    def www_authenticate(self) -> str:
        challenges = ["Bearer"] if self.bearer or not self.dpop_algs else []
        if self.dpop_algs:
            challenges.append(f'DPoP algs="{" ".join(self.dpop_algs)}"')
        return ", ".join(challenges)


class ResourceDpopProofError(InvalidTokenError):
    """RFC 9449 §7.1: the DPoP proof of a resource request is missing, invalid, replayed, or made with another key
    than the one the token is bound to."""

    code = "invalid_dpop_proof"
    title = "Invalid DPoP proof"


class ResourceDpopNonceError(ResourceDpopProofError):
    """RFC 9449 §9: the proof must carry the server's nonce, which is in the `DPoP-Nonce` header."""

    code = "use_dpop_nonce"
    title = "DPoP nonce required"

    def __init__(self, description: str, *, nonce: str, dpop_algs: Sequence[str] = ()) -> None:
        super().__init__(description, dpop_algs=dpop_algs)
        self.headers["DPoP-Nonce"] = nonce


class InsufficientScopeError(ResourceAccessError):
    code = "insufficient_scope"
    status = 403
    title = "Insufficient scope"

    def __init__(self, description: str, *, scope: str, dpop_algs: Sequence[str] = ()) -> None:
        super().__init__(description, dpop_algs=dpop_algs)
        self.scope = scope

    def www_authenticate(self) -> str:
        # RFC 6750 §3: the `scope` attribute names the scope needed to access the resource.
        return f'{super().www_authenticate()}, scope="{_quoted(self.scope)}"'


def _quoted(text: str) -> str:
    """Make `text` safe inside an RFC 9110 quoted-string (RFC 6750 §3 restricts the attribute characters)."""
    return "".join(ch for ch in text if ch not in '"\\' and 0x20 <= ord(ch) <= 0x7E)
