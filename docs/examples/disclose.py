"""A partner system asks the broker for a person's records — with Authlib's own OAuth 2.0 client.

    python docs/examples/disclose.py PARTNER PERSON_ID CATEGORY PURPOSE

Run against `make run`: it reads instance/demo.json for the broker's address and the partner's key file.
The code below is shown in docs/api.md; a test keeps the two identical.

`BrokerAssertion` is `private_key_jwt` the way the broker wants it (RFC 7523, RFC 10070): `aud` is the
broker's issuer identifier, every assertion gets a fresh `jti` and lives 60 s (Authlib's defaults would keep
one `jti` and a lifetime of an hour), and the `act` claim names the professional the system acts for.
"""

import json
import secrets
import sys
from pathlib import Path

from authlib.integrations.requests_client import OAuth2Session
from authlib.oauth2.rfc7523 import PrivateKeyJWT, private_key_jwt_sign
from joserfc.jwk import OKPKey


class BrokerAssertion(PrivateKeyJWT):
    alg = "Ed25519"

    def __init__(self, issuer, actor):
        super().__init__(issuer)  # the first argument becomes `aud`: the issuer
        self.actor = actor

    def sign(self, auth, token_endpoint):
        claims = {"jti": secrets.token_urlsafe(24), "act": self.actor}  # fresh for every assertion
        return private_key_jwt_sign(
            auth.client_secret,
            client_id=auth.client_id,
            token_endpoint=self.token_endpoint,
            claims=claims,
            alg=self.alg,
            expires_in=60,
        )


def main(partner, person_id, category, purpose, instance=Path("instance")):
    demo = json.loads((instance / "demo.json").read_text())
    entry = next(p for p in demo["partners"] if p["client_id"] == partner)
    key = OKPKey.import_key(json.loads((instance / entry["key_file"]).read_text()))

    session = OAuth2Session(partner, key, token_endpoint_auth_method=BrokerAssertion.name)
    session.register_client_auth_method(BrokerAssertion(demo["issuer"], entry["actor"]))
    session.fetch_token(f"{demo['base_url']}/oauth/token", grant_type="client_credentials")

    response = session.post(
        f"{demo['base_url']}/api/v1/disclosures",
        json={"person_id": person_id, "category": category, "purpose": purpose},
    )
    print(response.status_code, json.dumps(response.json(), indent=2, ensure_ascii=False))
    return 0 if response.ok else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:5]))
