"""Discovery: the authorization server metadata (RFC 8414) and the broker's public keys."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from broker.domain.model import SCOPES
from tests.integration.conftest_oauth import ISSUER, OAuthTestBed, open_test_bed


@pytest.fixture
def bed(tmp_path: Path) -> Iterator[OAuthTestBed]:
    with open_test_bed("sqlite", tmp_path) as test_bed:
        yield test_bed


def test_the_metadata_document_describes_the_token_endpoint_and_its_client_authentication(
    bed: OAuthTestBed,
) -> None:
    response = bed.app.test_client().get("/.well-known/oauth-authorization-server")
    assert response.status_code == 200
    metadata = response.get_json()
    assert metadata["issuer"] == ISSUER
    assert metadata["token_endpoint"] == ISSUER + "/oauth/token"
    assert metadata["revocation_endpoint"] == ISSUER + "/oauth/revoke"
    assert metadata["jwks_uri"] == ISSUER + "/.well-known/jwks.json"
    assert metadata["grant_types_supported"] == ["client_credentials"]
    assert metadata["token_endpoint_auth_methods_supported"] == ["private_key_jwt"]
    assert metadata["token_endpoint_auth_signing_alg_values_supported"] == ["EdDSA", "Ed25519", "ES256"]
    assert metadata["revocation_endpoint_auth_methods_supported"] == ["private_key_jwt"]
    assert metadata["revocation_endpoint_auth_signing_alg_values_supported"] == ["EdDSA", "Ed25519", "ES256"]
    assert metadata["scopes_supported"] == list(SCOPES)
    # RFC 9449 §5.1: the DPoP proof algorithms, asymmetric only.
    assert metadata["dpop_signing_alg_values_supported"] == ["EdDSA", "Ed25519", "ES256"]
    assert metadata["response_types_supported"] == []


def test_the_advertised_endpoints_are_the_ones_that_answer(bed: OAuthTestBed) -> None:
    client = bed.app.test_client()
    metadata = client.get("/.well-known/oauth-authorization-server").get_json()
    for name in ("token_endpoint", "revocation_endpoint"):
        path = metadata[name].removeprefix(ISSUER)
        assert client.post(path, data={}).status_code in {400, 401}
    assert client.get(metadata["jwks_uri"].removeprefix(ISSUER)).status_code == 200


def test_the_jwks_document_holds_the_broker_public_keys_only(bed: OAuthTestBed) -> None:
    response = bed.app.test_client().get("/.well-known/jwks.json")
    assert response.status_code == 200
    jwks = response.get_json()
    assert jwks == bed.broker.keys.public_jwks()
    assert all("d" not in key for key in jwks["keys"])
