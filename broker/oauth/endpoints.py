"""The Flask side of OAuth: the blueprint with the token, revocation and discovery routes, and the
`require_scope` decorator for protected views. Everything Flask-specific in broker/oauth is in this module.

The Broker is read from `current_app.extensions["broker"]` at request time; the token-issued hook from
`current_app.extensions["oauth"]`, which `init_oauth` sets.

DPoP proofs (RFC 9449) are checked against the request's public URL: the issuer identifier followed by the path
the route saw (`request.path`, below any mount point), the same rule by which the metadata names the token
endpoint. The request's own `Host` header and scheme are never used: behind a TLS-terminating proxy they differ
from what the partner signed, and trusting them would let a proof made for another host be replayed here.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote, unquote

from flask import Blueprint, Flask, Response, after_this_request, current_app, g, jsonify, request

from broker.adapters.uow import first_write
from broker.domain.model import SCOPES
from broker.oauth.dpop import DpopProof, DpopRequest
from broker.oauth.errors import (
    InvalidClientError,
    InvalidRequestError,
    OAuthError,
    ResourceAccessError,
    ResourceDpopProofError,
    TokenEndpointError,
)
from broker.oauth.metadata import JWKS_PATH, METADATA_PATH, REVOCATION_PATH, TOKEN_PATH, server_metadata
from broker.oauth.protector import check_request, proof_jti_writer, proof_replayed, use_proof
from broker.oauth.tokens import (
    ClientCredentials,
    TokenIssuedHook,
    dpop_nonces,
    issue_access_token,
    no_op_hook,
    proof_jti_row,
    revoke_access_token,
)

if TYPE_CHECKING:
    from broker.services import Broker

View = TypeVar("View", bound=Callable[..., Any])

_FORM = "application/x-www-form-urlencoded"
# Ways of authenticating a client that the broker does not accept (RFC 6749 §2.3.1; RFC 7523 client secrets).
_OTHER_CLIENT_AUTH = ("client_secret",)
# Characters left as they are when the decoded request path is written back into a URL (RFC 3986 §3.3 pchar, "/").
_PATH_SAFE = "/:@!$&'()*+,;=-._~"


@dataclass
class OAuthExtension:
    """Per-application OAuth settings, kept in `app.extensions["oauth"]`."""

    on_token_issued: TokenIssuedHook = no_op_hook


def init_oauth(app: Flask, *, on_token_issued: TokenIssuedHook | None = None) -> None:
    """Register the OAuth routes on `app`. `on_token_issued(uow, caller, token_hash_prefix)` runs inside each
    token transaction before its commit (the services layer appends the `token:issue` audit entry there)."""
    app.extensions["oauth"] = OAuthExtension(on_token_issued=on_token_issued or no_op_hook)
    app.register_blueprint(oauth_blueprint())


def oauth_blueprint() -> Blueprint:
    blueprint = Blueprint("oauth", __name__)
    blueprint.add_url_rule(TOKEN_PATH, "token", token_endpoint, methods=["POST"])
    blueprint.add_url_rule(REVOCATION_PATH, "revoke", revocation_endpoint, methods=["POST"])
    blueprint.add_url_rule(METADATA_PATH, "metadata", metadata_endpoint, methods=["GET"])
    blueprint.add_url_rule(JWKS_PATH, "jwks", jwks_endpoint, methods=["GET"])
    return blueprint


def _broker() -> Broker:
    broker: Broker = current_app.extensions["broker"]
    return broker


def _token_issued_hook() -> TokenIssuedHook:
    extension: OAuthExtension | None = current_app.extensions.get("oauth")
    return extension.on_token_issued if extension else no_op_hook


# --- Token and revocation endpoints ---


def token_endpoint() -> Response:
    try:
        form = _form_parameters()
        issued = issue_access_token(
            _broker(),
            _credentials(form),
            grant_type=form.get("grant_type"),
            scope=form.get("scope"),
            on_token_issued=_token_issued_hook(),
            dpop=_dpop_request(),
        )
    except TokenEndpointError as error:
        return _token_error(error)
    return _with_nonce(_no_store(jsonify(issued.response())))


def revocation_endpoint() -> Response:
    try:
        form = _form_parameters()
        revoke_access_token(_broker(), _credentials(form), token=form.get("token"))
    except TokenEndpointError as error:
        return _token_error(error)
    return _no_store(current_app.response_class(status=200))


def _form_parameters() -> dict[str, str]:
    """The request's parameters, strictly: form-encoded in the body, each at most once (RFC 6749 §3.2)."""
    if request.args:
        raise InvalidRequestError("Parameters must be sent in the request body, not in the URL (RFC 6749 §3.2).")
    if request.mimetype != _FORM:
        raise InvalidRequestError(f"The request body must be {_FORM} (RFC 6749 §3.2).")
    form = request.form
    for name in form:
        if len(form.getlist(name)) > 1:
            raise InvalidRequestError(f"Parameter {name!r} is sent more than once (RFC 6749 §3.2).")
    if "Authorization" in request.headers or any(name in form for name in _OTHER_CLIENT_AUTH):
        # RFC 6749 §2.3: one authentication method per request, and the broker accepts only private_key_jwt.
        raise InvalidClientError("Only private_key_jwt client authentication (RFC 7523 §2.2) is accepted.")
    return form.to_dict()


def _credentials(form: dict[str, str]) -> ClientCredentials:
    return ClientCredentials(
        client_assertion_type=form.get("client_assertion_type"),
        client_assertion=form.get("client_assertion"),
        client_id=form.get("client_id"),
    )


def _token_error(error: TokenEndpointError) -> Response:
    """RFC 6749 §5.2: a JSON object with `error` and `error_description`; 401 for invalid_client."""
    response = jsonify({"error": error.code, "error_description": error.description})
    response.status_code = error.status
    _error_headers(response, error)
    return _no_store(response)


def _no_store(response: Response) -> Response:
    # RFC 6749 §5.1: responses carrying tokens or credentials-related information must not be cached.
    response.headers["Cache-Control"] = "no-store"
    response.headers["Pragma"] = "no-cache"
    return response


# --- DPoP (RFC 9449) ---


def _dpop_request() -> DpopRequest:
    """The request's DPoP proofs, method and public URL. A proof holds no comma (a JWS compact serialization is
    base64url and dots), so a header that a proxy folded into one comma-separated line still counts as several."""
    proofs = tuple(part.strip() for value in request.headers.getlist("DPoP") for part in value.split(","))
    url = _broker().settings.issuer + _path_as_sent()
    return DpopRequest(proofs=proofs, method=request.method, url=url)


def _path_as_sent() -> str:
    """The request path as the client wrote it, below any mount point. A client signs the URL it sends, and a
    decoded path written back cannot tell `%28` from `(`: the raw request target (gunicorn's `RAW_URI`, Werkzeug's
    `REQUEST_URI`) is used when it decodes to the routed path, and both sides are then compared after RFC 3986
    §6.2.2 normalisation. A target a proxy rewrote falls back to the routed path, re-encoded."""
    raw = request.environ.get("RAW_URI") or request.environ.get("REQUEST_URI")
    if raw:
        path = raw.split("?", 1)[0].split("#", 1)[0]
        root = quote(request.script_root, safe=_PATH_SAFE)
        if root and path.startswith(root):
            path = path[len(root) :]
        if path.startswith("/") and unquote(path) == request.path:
            return path
    return quote(request.path, safe=_PATH_SAFE)


def _with_nonce(response: Response) -> Response:
    """RFC 9449 §8.2, §9: with nonces on, every answer carries the current one, so that a client keeps up with
    them without being refused first."""
    broker = _broker()
    nonces = dpop_nonces(broker)
    if nonces is not None:
        response.headers["DPoP-Nonce"] = nonces.current(broker.clock.now())
    return response


def _error_headers(response: Response, error: OAuthError) -> None:
    for name, value in error.headers.items():
        response.headers[name] = value


# --- Discovery ---


def metadata_endpoint() -> Response:
    response = jsonify(server_metadata(_broker().settings.issuer))
    response.headers["Cache-Control"] = "public, max-age=300"
    return response


def jwks_endpoint() -> Response:
    response = jsonify(_broker().keys.public_jwks())
    # Short: after a rotation, clients see the new key within minutes (and refetch on an unknown kid).
    response.headers["Cache-Control"] = "public, max-age=300"
    return response


# --- Protected views ---


def require_scope(*scopes: str) -> Callable[[View], View]:
    """Protect a view: a valid access token carrying one of `scopes` (usually one is named), else an RFC 9457
    problem with the RFC 6750 challenge. The caller is in `flask.g.caller` while the view runs; a view
    open to several scopes reads `caller.scopes` to tell which part of the resource the caller may see."""
    if not scopes:
        raise ValueError("a protected view needs at least one scope")
    for name in scopes:
        if name not in SCOPES:
            raise ValueError(f"unknown scope {name!r}")  # a typo in a route must fail at import, not at request
    required = scopes[0] if len(scopes) == 1 else scopes

    def decorator(view: View) -> View:
        @functools.wraps(view)
        def protected(*args: Any, **kwargs: Any) -> Any:
            broker = _broker()
            try:
                authorization = request.headers.get("Authorization")
                caller, proof = check_request(broker, authorization, required, dpop=_dpop_request())
            except ResourceAccessError as error:
                return problem_response(error)
            g.caller = dataclasses.replace(caller, request_id=g.get("request_id"))
            if broker.settings.dpop_nonces:
                after_this_request(_with_nonce)
            if proof is None:
                return view(*args, **kwargs)
            return _view_using_proof(broker, proof, functools.partial(view, *args, **kwargs))

        return protected  # type: ignore[return-value]

    return decorator


def _view_using_proof(broker: Broker, proof: DpopProof, view: Callable[[], Any]) -> Any:
    """Run the view with the proof's `jti` used once (RFC 9449 §11.1) by the request's first write transaction: a
    disclosure then makes one durable commit, not two. A request whose view committed no write (a read, a refusal)
    uses it in a transaction of its own before its answer leaves; a replay detected either way answers 401 instead
    of whatever the view made."""
    failure: BaseException | None = None
    with first_write(proof_jti_writer(proof), jti=proof_jti_row(proof), replayed=proof_replayed) as pending:
        try:
            result = view()
        except ResourceDpopProofError as error:
            return problem_response(error)
        except BaseException as error:  # re-raised below, once the proof has been used
            failure = error
    if not pending.done:
        try:
            use_proof(broker, proof)
        except ResourceDpopProofError as error:
            return problem_response(error)
    if failure is not None:
        raise failure
    return result


def problem_response(error: ResourceAccessError) -> Response:
    """An RFC 9457 problem document for a refused access token, with its `WWW-Authenticate` challenge."""
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": error.title,
        "status": error.status,
        "detail": error.description,
        "code": error.code,
    }
    request_id = g.get("request_id")
    if request_id:  # the same extension member as the rest of the API's problem documents
        body["request_id"] = request_id
    response = current_app.response_class(json.dumps(body), status=error.status, mimetype="application/problem+json")
    response.headers["WWW-Authenticate"] = error.www_authenticate()
    _error_headers(response, error)
    return response
