"""Where the OAuth endpoints live and what the broker tells clients about them (RFC 8414)."""

from __future__ import annotations

from typing import Any

from broker.domain.model import SCOPES
from broker.oauth.assertion import SIGNING_ALGORITHMS
from broker.oauth.dpop import DPOP_SIGNING_ALGORITHMS

TOKEN_PATH = "/oauth/token"  # noqa: S105  # nosec B105  # a path, not a password
REVOCATION_PATH = "/oauth/revoke"
METADATA_PATH = "/.well-known/oauth-authorization-server"
JWKS_PATH = "/.well-known/jwks.json"
CLIENT_AUTH_METHODS = ("private_key_jwt",)


def server_metadata(issuer: str) -> dict[str, Any]:
    """The authorization server metadata document (RFC 8414 §2), built from the issuer identifier."""
    return {
        "issuer": issuer,
        "token_endpoint": issuer + TOKEN_PATH,
        "revocation_endpoint": issuer + REVOCATION_PATH,
        "jwks_uri": issuer + JWKS_PATH,
        "grant_types_supported": ["client_credentials"],
        # REQUIRED by RFC 8414 §2; empty because there is no authorization endpoint (client credentials only).
        "response_types_supported": [],
        "scopes_supported": list(SCOPES),
        "token_endpoint_auth_methods_supported": list(CLIENT_AUTH_METHODS),
        "token_endpoint_auth_signing_alg_values_supported": list(SIGNING_ALGORITHMS),
        "revocation_endpoint_auth_methods_supported": list(CLIENT_AUTH_METHODS),
        "revocation_endpoint_auth_signing_alg_values_supported": list(SIGNING_ALGORITHMS),
        # RFC 9449 §5.1: the algorithms the broker accepts for DPoP proofs (asymmetric only).
        "dpop_signing_alg_values_supported": list(DPOP_SIGNING_ALGORITHMS),
    }
