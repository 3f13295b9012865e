"""A partner system asks the broker for a person's records — with Authlib's own OAuth 2.0 client, and DPoP.

    python docs/examples/disclose.py PARTNER PERSON_ID CATEGORY PURPOSE

Run against `make run`: it reads instance/demo.json for the broker's address and the partner's key file.
The code below is shown in docs/api.md; a test keeps the two identical.

`BrokerAssertion` is `private_key_jwt` the way the broker wants it (RFC 7523, RFC 10070): `aud` is the
broker's issuer identifier, every assertion gets a fresh `jti` and lives 60 s (Authlib's defaults would keep
one `jti` and a lifetime of an hour), and the `act` claim names the professional the system acts for.

`DPoPSession` adds DPoP (RFC 9449), which Authlib does not have: the access token is bound to a key pair the
partner system makes for itself, and every request — the token request included — carries a fresh proof signed
with it. A copied token is of no use without the key. When the broker asks for its nonce, the request is sent
once more with it.
"""

import base64
import hashlib
import json
import secrets
import sys
import time
from pathlib import Path

from authlib.integrations.requests_client import OAuth2Session
from authlib.oauth2.rfc7523 import PrivateKeyJWT, private_key_jwt_sign
from joserfc import jwt
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


class DPoPSession(OAuth2Session):
    def __init__(self, *args, dpop_key, **kwargs):
        super().__init__(*args, **kwargs)
        self.dpop_key = dpop_key  # the system's own DPoP key pair, not its registered client key
        self.dpop_nonce = None  # the broker's latest DPoP-Nonce, if it sends them

    def proof(self, method, url, access_token=None):
        claims = {
            "jti": secrets.token_urlsafe(24),  # a proof is good for one request
            "htm": method,
            "htu": url.split("?")[0],  # the URL without its query
            "iat": int(time.time()),
        }
        if access_token:  # at the API: the hash of the token the proof goes with
            digest = hashlib.sha256(access_token.encode()).digest()
            claims["ath"] = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
        if self.dpop_nonce:
            claims["nonce"] = self.dpop_nonce
        header = {"typ": "dpop+jwt", "alg": "Ed25519", "jwk": self.dpop_key.as_dict(private=False)}
        return jwt.encode(header, claims, self.dpop_key, algorithms=["Ed25519"])

    def request(self, method, url, withhold_token=False, auth=None, headers=None, **kwargs):
        for _ in range(2):  # a second time only if the broker asks for a (new) nonce
            sent = dict(headers or {})
            if auth is None and not withhold_token:  # an API call: the bound token and its proof
                self.ensure_active_token(self.token)  # a new token when this one is about to expire
                access_token = self.token["access_token"]
                sent |= {"Authorization": f"DPoP {access_token}", "DPoP": self.proof(method, url, access_token)}
                response = super().request(method, url, withhold_token=True, headers=sent, **kwargs)
            else:  # the token request, which Authlib authenticates with `auth`
                sent["DPoP"] = self.proof(method, url)
                response = super().request(method, url, withhold_token, auth, headers=sent, **kwargs)
            nonce = response.headers.get("DPoP-Nonce")
            if nonce:
                self.dpop_nonce = nonce
            if not (nonce and response.status_code in (400, 401)):  # not a `use_dpop_nonce` error
                return response
        return response


def broker_session(partner, instance=Path("instance")):
    demo = json.loads((instance / "demo.json").read_text())
    entry = next(p for p in demo["partners"] if p["client_id"] == partner)
    key = OKPKey.import_key(json.loads((instance / entry["key_file"]).read_text()))

    session = DPoPSession(
        partner,
        key,
        dpop_key=OKPKey.generate_key("Ed25519"),
        token_endpoint=f"{demo['base_url']}/oauth/token",
        token_endpoint_auth_method=BrokerAssertion.name,
    )
    session.register_client_auth_method(BrokerAssertion(demo["issuer"], entry["actor"]))
    session.fetch_token(grant_type="client_credentials")  # token_type "DPoP": bound to session.dpop_key
    return session, demo["base_url"]


def main(partner, person_id, category, purpose, instance=Path("instance")):
    session, base_url = broker_session(partner, instance)
    response = session.post(
        f"{base_url}/api/v1/disclosures",
        json={"person_id": person_id, "category": category, "purpose": purpose},
    )
    print(response.status_code, json.dumps(response.json(), indent=2, ensure_ascii=False))
    return 0 if response.ok else 1


if __name__ == "__main__":
    if len(sys.argv) != 5:
        sys.exit("usage: python docs/examples/disclose.py PARTNER PERSON_ID CATEGORY PURPOSE")
    sys.exit(main(*sys.argv[1:5]))
