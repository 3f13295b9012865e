"""All OAuth 2.0 wiring of the broker (DESIGN.md "API contract (v1)").

- `init_oauth(app, on_token_issued=...)` registers `POST /oauth/token`, `POST /oauth/revoke`,
  `GET /.well-known/oauth-authorization-server` and `GET /.well-known/jwks.json`; the Broker is read from
  `app.extensions["broker"]`.
- `@require_scope("consents")` protects a view and puts the `Caller` in `flask.g.caller`.
- `authenticate_request(broker, authorization_header, required_scope, dpop=...)` does the same without Flask.

Access tokens are DPoP-bound (RFC 9449) unless `Settings.require_dpop` is off.

Modules: `assertion` (client-assertion validation, pure), `dpop` (DPoP proof validation and server nonces,
pure), `tokens` (issue and revoke, one unit of work per request), `protector` (access tokens to callers),
`metadata` (RFC 8414), `endpoints` (Flask), `errors`.
"""

from broker.oauth.dpop import DpopRequest
from broker.oauth.endpoints import init_oauth, oauth_blueprint, problem_response, require_scope
from broker.oauth.errors import (
    InsufficientScopeError,
    InvalidClientError,
    InvalidDpopProofError,
    InvalidRequestError,
    InvalidScopeError,
    InvalidTokenError,
    MissingTokenError,
    OAuthError,
    ResourceAccessError,
    ResourceDpopNonceError,
    ResourceDpopProofError,
    TokenEndpointError,
    UnauthorizedClientError,
    UnsupportedGrantTypeError,
    UseDpopNonceError,
)
from broker.oauth.protector import authenticate_request
from broker.oauth.tokens import TokenIssuedHook, purge_expired

__all__ = [
    "DpopRequest",
    "InsufficientScopeError",
    "InvalidClientError",
    "InvalidDpopProofError",
    "InvalidRequestError",
    "InvalidScopeError",
    "InvalidTokenError",
    "MissingTokenError",
    "OAuthError",
    "ResourceAccessError",
    "ResourceDpopNonceError",
    "ResourceDpopProofError",
    "TokenEndpointError",
    "TokenIssuedHook",
    "UnauthorizedClientError",
    "UnsupportedGrantTypeError",
    "UseDpopNonceError",
    "authenticate_request",
    "init_oauth",
    "oauth_blueprint",
    "problem_response",
    "purge_expired",
    "require_scope",
]
