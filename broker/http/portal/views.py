"""The client portal's pages (docs/portal.md, "Pages"). Thin views: read the form, call the person-portal use case
with the logged-in person (or the person they act for), render the answer.

Every object is looked up by the use case together with that person: another person's request or consent is a
404 page, never a 403 (docs/portal.md, "Security"). Nothing here commits: the use cases own their transactions.
"""

from __future__ import annotations

import json
import logging
import posixpath
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from functools import wraps
from typing import Any, TypeVar, cast
from urllib.parse import urlencode, urlsplit

from authlib.integrations.base_client import OAuthError
from flask import (
    Blueprint,
    Response,
    current_app,
    flash,
    g,
    get_flashed_messages,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_babel import gettext as _
from joserfc.errors import JoseError
from requests import RequestException
from werkzeug.exceptions import BadRequest, HTTPException

from broker.config import Settings
from broker.domain import labels as vocabulary_labels
from broker.domain.errors import (
    BrokerError,
    ConflictError,
    ConsentNotActiveError,
    DatabaseUnavailableError,
    InvalidHetuError,
    InvalidRequestError,
    NotFoundError,
)
from broker.domain.model import PortalUser
from broker.http.errors import database_unavailable_response
from broker.http.portal import labels
from broker.http.portal.i18n import (
    LANGUAGE_COOKIE,
    LANGUAGES,
    NAMES,
    current_language,
    show_date,
    show_datetime,
)
from broker.http.portal.login import Provider, verified_claims
from broker.http.portal.security import content_security_policy, csrf_token, csrf_valid, new_csrf_token
from broker.http.portal.sessions import PortalSession
from broker.services import Broker, person_portal

log = logging.getLogger("broker.portal")

#: The claim holding the personal identity code (docs/portal-login.md; Suomi.fi's attribute name).
IDENTITY_CODE_CLAIM = "urn:oid:1.2.246.21"
LOGIN_KEY = "login"
ACTING_KEY = "acting"
NEXT_KEY = "next"
PER_PAGE = 20
CONSENT_ORDER = ("active", "expired", "withdrawn", "refused")
_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_LOG_QUERY = {"organisation", "category", "effect", "since", "until", "page"}
_LANGUAGE_COOKIE_AGE = 365 * 24 * 3600

View = TypeVar("View", bound=Callable[..., Any])


@dataclass(frozen=True)
class PortalConfig:
    """Per-application portal settings, kept in `app.extensions["portal"]`."""

    settings: Settings
    provider: Provider
    #: Roles (the DPO) are taken from the ID token only from the development provider; in production DPO access
    #: comes from the broker's own staff configuration, never from the citizen's identity provider.
    trust_roles: bool
    secure: bool


def portal_blueprint(static_folder: str) -> Blueprint:
    bp = Blueprint("portal", __name__, static_folder=static_folder, static_url_path="/static")
    bp.before_request(_before)
    bp.after_request(_after)
    bp.context_processor(_template_context)
    # An unusable database: 503 and a page that needs nothing from it (broker/http/errors.py), before BrokerError's.
    bp.register_error_handler(DatabaseUnavailableError, database_unavailable_response)
    bp.register_error_handler(BrokerError, _broker_error)
    bp.register_error_handler(HTTPException, _http_error)
    bp.register_error_handler(Exception, _unexpected)
    rules: list[tuple[str, str, Callable[..., Any], list[str]]] = [
        ("/", "overview", overview, ["GET"]),
        ("/login", "login", login, ["GET"]),
        ("/auth/callback", "callback", callback, ["GET"]),
        ("/logout", "logout", logout, ["POST"]),
        ("/language", "language", language, ["POST"]),
        ("/requests/<request_id>", "request_page", request_page, ["GET"]),
        ("/requests/<request_id>/review", "review", review, ["POST"]),
        ("/requests/<request_id>/grant", "grant", grant, ["POST"]),
        ("/requests/<request_id>/refuse", "refuse", refuse, ["POST"]),
        ("/consents", "consents", consents, ["GET"]),
        ("/consents/<consent_id>", "consent", consent, ["GET"]),
        ("/consents/<consent_id>/withdraw", "withdraw", withdraw, ["GET", "POST"]),
        ("/log", "log", disclosure_log, ["GET"]),
        ("/statutory", "statutory", statutory, ["GET"]),
        ("/my-data", "my_data", my_data, ["GET"]),
        ("/my-data.json", "my_data_json", my_data_json, ["GET"]),
        ("/acting", "acting", acting, ["GET", "POST"]),
    ]
    for rule, endpoint, view, methods in rules:
        bp.add_url_rule(rule, endpoint, view, methods=methods)
    # Imported here: the proof pages are built on this module's helpers.
    from broker.http.portal.proof import register_proof_pages

    register_proof_pages(bp)
    return bp


# --- Request plumbing ---


def _config() -> PortalConfig:
    config: PortalConfig = current_app.extensions["portal"]
    return config


def _broker() -> Broker:
    broker: Broker = current_app.extensions["broker"]
    return broker


def _before() -> Response | None:
    g.portal_user = None
    if request.method == "POST" and not csrf_valid():
        raise BadRequest("csrf")
    login_data = session.get(LOGIN_KEY)
    if not isinstance(login_data, dict):
        return None
    acting = session.get(ACTING_KEY)
    acting_for = acting.get("person_id") if isinstance(acting, dict) else None
    roles = frozenset(login_data.get("roles") or ())
    person_id = login_data.get("person_id")
    if person_id is None:
        g.portal_user = PortalUser(login_person_id=None, subject_id=None, roles=roles, language=current_language())
        return None
    try:
        g.portal_user = person_portal.portal_user(
            _broker(), person_id, acting_for=acting_for, roles=roles, language=current_language()
        )
    except NotFoundError:
        if acting_for is None:
            # The logged-in person's record is gone: the login names no one any more.
            assert isinstance(session, PortalSession)
            session.destroy()
            return redirect(url_for("portal.overview"))
        # The mandate has ended (or was withdrawn) since it was chosen: back to acting for oneself.
        session.pop(ACTING_KEY, None)
        flash(_("You can no longer act for this person. You are now acting for yourself."), "notice")
        return redirect(url_for("portal.overview"))
    return None


def _after(response: Response) -> Response:
    if request.endpoint == "portal.static":
        return response
    response.headers["Content-Security-Policy"] = content_security_policy(
        (_config().provider.authorization_origin(),), scripts=bool(g.get("portal_scripts"))
    )
    response.headers["Cache-Control"] = "no-store"
    response.headers["Content-Language"] = current_language()
    response.vary.add("Cookie")
    return response


def _template_context() -> dict[str, Any]:
    return {
        "csrf_token": csrf_token,
        "label": labels.label,
        "show_date": show_date,
        "show_datetime": show_datetime,
        "lang": current_language(),
        "languages": LANGUAGES,
        "language_names": NAMES,
        "login": session.get(LOGIN_KEY),
        "acting": session.get(ACTING_KEY),
        "user": g.get("portal_user"),
        "here": _here(),
        "messages": get_flashed_messages(with_categories=True),
    }


def _here() -> str:
    """Where the language switch brings the person back to: this page (a GET page with its query), or for a
    page that answered a POST the page that the form came from."""
    if request.method == "GET" and request.endpoint not in {"portal.callback", "portal.login"}:
        return request.full_path.rstrip("?")
    if request.view_args and "request_id" in request.view_args:
        return url_for("portal.request_page", request_id=request.view_args["request_id"])
    if request.view_args and "consent_id" in request.view_args:
        return url_for("portal.consent", consent_id=request.view_args["consent_id"])
    return url_for("portal.overview")


def _safe_next(value: str | None) -> str:
    """Only a path inside the portal: never another site (no open redirect)."""
    if not value or "\\" in value:
        return url_for("portal.overview")
    parts = urlsplit(value)
    path = posixpath.normpath(parts.path) if parts.path else ""
    # The DPO workspace (broker/http/dpo) logs in here too and is returned to after the login.
    inside = path in ("/portal", "/dpo") or path.startswith(("/portal/", "/dpo/"))
    if parts.scheme or parts.netloc or path != parts.path.rstrip("/") or not inside:
        return url_for("portal.overview")
    if path.startswith(
        ("/portal/auth/", "/portal/login", "/portal/static/", "/portal/logout", "/portal/language", "/dpo/static/")
    ):
        return url_for("portal.overview")
    return value


def page(template: str, status: int = 200, **context: Any) -> tuple[str, int]:
    return render_template(f"portal/{template}", **context), status


def _user() -> PortalUser:
    user: PortalUser = g.portal_user
    return user


def logged_in(view: View) -> View:
    """The page needs a login; a visitor is sent to log in and brought back."""

    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if g.get("portal_user") is None:
            if request.method == "GET":
                session[NEXT_KEY] = request.full_path.rstrip("?")
            return redirect(url_for("portal.login"))
        return view(*args, **kwargs)

    return cast(View, wrapper)


def for_a_person(view: View) -> View:
    """The page is about a person: the data-protection officer and a login with no person in the broker see
    the overview, which says why there is nothing here."""

    @wraps(view)
    @logged_in
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if _user().subject_id is None:
            return redirect(url_for("portal.overview"))
        return view(*args, **kwargs)

    return cast(View, wrapper)


def _checked_id(value: str) -> str:
    if not _ID.match(value):
        raise NotFoundError("no such object")
    return value


# --- Errors, as pages ---


def _broker_error(error: BrokerError) -> tuple[str, int]:
    if isinstance(error, NotFoundError):
        return page("error.html", 404, title=_("Page not found"), message=_not_found_text())
    if isinstance(error, ConsentNotActiveError):
        return page(
            "error.html",
            409,
            title=_("This consent is no longer valid"),
            message=_("The consent has already been withdrawn, has expired or was refused, so nothing changed."),
        )
    if isinstance(error, ConflictError):
        return page(
            "error.html",
            409,
            title=_("This has already changed"),
            message=_("Someone has already answered or changed this. Open the page again to see where it stands."),
        )
    log.warning("portal request failed: %s", error.code)
    return page(
        "error.html",
        error.status if 400 <= error.status < 500 else 400,
        title=_("We could not do that"),
        message=_("Check your answers and try again. If it still does not work, contact the organisation."),
    )


def _not_found_text() -> str:
    return _("We could not find this page. It may have been removed, or it is not about you.")


def _http_error(error: HTTPException) -> tuple[str, int]:
    status = error.code or 500
    if status == 400 and error.description == "csrf":
        return page(
            "error.html",
            400,
            title=_("The form has expired"),
            message=_(
                "For your security, the form was not sent. Go back, reload the page and try again. If you were "
                "away for a while, you may need to log in again."
            ),
        )
    if status == 404:
        return page("error.html", 404, title=_("Page not found"), message=_not_found_text())
    if status == 405:
        return page(
            "error.html", 405, title=_("We could not do that"), message=_("This page cannot be opened this way.")
        )
    if status == 429:  # the login's limit per address (broker/http/limits.py); Retry-After says how long
        return page(
            "error.html",
            429,
            title=_("Too many attempts"),
            message=_("Too many logins have been started from your network. Wait a minute and try again."),
        )
    return page(
        "error.html",
        status,
        title=_("We could not do that"),
        message=_("Check your answers and try again. If it still does not work, contact the organisation."),
    )


def _unexpected(error: Exception) -> tuple[str, int]:
    if isinstance(error, HTTPException):
        return _http_error(error)
    log.exception("portal error", extra={"request_id": g.get("request_id")})
    return page(
        "error.html",
        500,
        title=_("Something went wrong"),
        message=_("The service could not complete your request. Nothing was changed. Please try again later."),
    )


# --- Login, logout, language ---


def login() -> Any:
    if g.get("portal_user") is not None:
        return redirect(url_for("portal.overview"))
    provider = _config().provider
    try:
        return provider.client.authorize_redirect(provider.redirect_uri, ui_locales=current_language())
    except (RequestException, ValueError, KeyError):
        log.exception("the OpenID provider's metadata could not be loaded")
        return page(
            "login_failed.html",
            503,
            message=_("The identification service cannot be reached just now. Please try again in a moment."),
        )


def callback() -> Any:
    config = _config()
    try:
        claims = verified_claims(config.provider)
    except OAuthError as error:
        cancelled = error.error == "access_denied"
        log.info("portal login not completed: %s", error.error)
        message = (
            _("You cancelled the identification.")
            if cancelled
            else _("The identification could not be completed. Please try again.")
        )
        return page("login_failed.html", 400, message=message)
    except (JoseError, RequestException, ValueError, KeyError):
        log.warning("portal login failed: the ID token or the provider's answer did not verify", exc_info=True)
        return page("login_failed.html", 400, message=_("The identification could not be completed. Please try again."))
    roles = frozenset(str(r) for r in claims.get("roles") or ()) if config.trust_roles else frozenset()
    identity_code = claims.pop(IDENTITY_CODE_CLAIM, None)
    has_identity_code = isinstance(identity_code, str)
    person_id = None
    if "dpo" not in roles and isinstance(identity_code, str):
        try:
            person_id = person_portal.person_for_login(_broker(), identity_code)
        except InvalidHetuError:
            person_id = None
    del identity_code  # the identity code stays in no session, log or page (DESIGN.md invariant 6)
    next_page = _safe_next(session.get(NEXT_KEY))
    # A new session for the logged-in person: the pre-login session (and its id) is discarded.
    assert isinstance(session, PortalSession)
    session.clear()
    session.rotate()
    new_csrf_token()
    session[LOGIN_KEY] = {
        "person_id": person_id,
        "name": str(claims.get("name") or ""),
        # The provider's stable subject (OpenID Connect Core §2): the DPO's actor id in the log and in reviews.
        # Persons are known by person_id; their subject is kept for nothing else.
        "subject": str(claims.get("sub") or "") if "dpo" in roles else "",
        "roles": sorted(roles),
        # A person identified without a Finnish identity code (a foreign eIDAS identity) cannot be found here.
        "has_identity_code": has_identity_code,
    }
    return redirect(next_page)


def logout() -> Any:
    assert isinstance(session, PortalSession)
    session.destroy()
    return redirect(url_for("portal.overview", logged_out=1))


def language() -> Any:
    chosen = request.form.get("lang", "")
    if chosen not in LANGUAGES:
        raise BadRequest("unknown language")
    response = redirect(_safe_next(request.form.get("next")))
    response.set_cookie(
        LANGUAGE_COOKIE,
        chosen,
        max_age=_LANGUAGE_COOKIE_AGE,
        path="/",
        secure=_config().secure,
        httponly=True,
        samesite="Lax",
    )
    return response


# --- Overview ---


def overview() -> Any:
    user = g.get("portal_user")
    if user is None:
        return page("welcome.html", logged_out=request.args.get("logged_out") == "1")
    if "dpo" in user.roles:
        return page("dpo.html")
    if user.subject_id is None:
        return page("no_person.html")
    data = person_portal.overview(_broker(), user)
    return page("overview.html", data=data)


# --- Consent requests ---


@for_a_person
def request_page(request_id: str) -> Any:
    found = person_portal.get_request(_broker(), _user(), _checked_id(request_id))
    return _request_form(found)


def _request_form(
    found: dict[str, Any],
    *,
    recipients: list[str] | None = None,
    categories: list[str] | None = None,
    confirm_special: bool = False,
    errors: dict[str, str] | None = None,
) -> tuple[str, int]:
    return page(
        "request.html",
        400 if errors else 200,
        req=found,
        chosen_recipients=set(recipients if recipients is not None else (r["id"] for r in found["recipients"])),
        chosen_categories=set(categories if categories is not None else (c["id"] for c in found["categories"])),
        confirm_special=confirm_special,
        errors=errors or {},
    )


def _choices() -> tuple[list[str], list[str], bool]:
    recipients = [v for v in request.form.getlist("recipients") if _ID.match(v)]
    categories = [v for v in request.form.getlist("categories") if _ID.match(v)]
    return recipients, categories, request.form.get("confirm_special") == "yes"


def _field_errors(found: dict[str, Any], recipients: list[str], categories: list[str], confirm: bool) -> dict[str, str]:
    errors: dict[str, str] = {}
    if not recipients:
        errors["recipients"] = _("Choose at least one organisation.")
    if not categories:
        errors["categories"] = _("Choose at least one kind of information.")
    special = any(c.get("special") for c in found["categories"] if c["id"] in categories)
    if special and not confirm:
        errors["confirm_special"] = _("Tick the box if you agree to sharing this sensitive information.")
    return errors


def _service_error(error: InvalidRequestError) -> dict[str, str]:
    """The use case's own message is for developers; the person gets one in their language, by the field."""
    messages = {
        "recipients": _("Choose at least one organisation from the list."),
        "categories": _("Choose at least one kind of information from the list."),
        "confirm_special": _("Tick the box if you agree to sharing this sensitive information."),
        "text_sha256": _("The consent text has changed. Read it again before you answer."),
        "language": _("The consent text has changed. Read it again before you answer."),
    }
    field = error.field if error.field in messages else "form"
    return {field: messages.get(field, _("Check your answers and try again."))}


@for_a_person
def review(request_id: str) -> Any:
    broker, user = _broker(), _user()
    found = person_portal.get_request(broker, user, _checked_id(request_id))
    if found.get("status") != "pending":
        return redirect(url_for("portal.request_page", request_id=request_id))
    recipients, categories, confirm = _choices()
    errors = _field_errors(found, recipients, categories, confirm)
    if errors:
        return _request_form(
            found, recipients=recipients, categories=categories, confirm_special=confirm, errors=errors
        )
    try:
        text = person_portal.consent_text(
            broker, user, request_id, recipients=recipients, categories=categories, language=current_language()
        )
    except InvalidRequestError as error:
        return _request_form(
            found,
            recipients=recipients,
            categories=categories,
            confirm_special=confirm,
            errors=_service_error(error),
        )
    return page(
        "review.html",
        req=found,
        recipients=[r for r in found["recipients"] if r["id"] in recipients],
        categories=[c for c in found["categories"] if c["id"] in categories],
        confirm_special=confirm,
        text=text,
    )


@for_a_person
def grant(request_id: str) -> Any:
    broker, user = _broker(), _user()
    found = person_portal.get_request(broker, user, _checked_id(request_id))
    recipients, categories, confirm = _choices()
    text_sha256 = request.form.get("text_sha256", "")
    text_language = request.form.get("language", "")
    errors = _field_errors(found, recipients, categories, confirm)
    if not errors and (not _SHA256.match(text_sha256) or text_language not in LANGUAGES):
        errors = {"form": _("The consent text has changed. Read it again before you answer.")}
    if errors:
        return _request_form(
            found, recipients=recipients, categories=categories, confirm_special=confirm, errors=errors
        )
    try:
        given = person_portal.grant_request(
            broker,
            user,
            request_id,
            recipients=recipients,
            categories=categories,
            language=text_language,
            text_sha256=text_sha256,
            confirm_special=confirm,
        )
    except InvalidRequestError as error:
        return _request_form(
            found,
            recipients=recipients,
            categories=categories,
            confirm_special=confirm,
            errors=_service_error(error),
        )
    flash(_("Thank you. Your consent is now valid. You can withdraw it here at any time."), "success")
    consent_id = given.get("id") or given.get("consent_id")
    if consent_id:
        return redirect(url_for("portal.consent", consent_id=consent_id))
    return redirect(url_for("portal.consents"))


@for_a_person
def refuse(request_id: str) -> Any:
    person_portal.refuse_request(_broker(), _user(), _checked_id(request_id))
    flash(_("You said no. Nothing will be shared on the basis of this request."), "success")
    return redirect(url_for("portal.overview"))


# --- Consents ---


@for_a_person
def consents() -> Any:
    items = person_portal.list_consents(_broker(), _user())
    groups = [(status, [c for c in items if c.get("status") == status]) for status in CONSENT_ORDER]
    return page("consents.html", groups=groups, total=len(items))


@for_a_person
def consent(consent_id: str) -> Any:
    found = person_portal.get_consent(_broker(), _user(), _checked_id(consent_id))
    return page("consent.html", consent=found)


@for_a_person
def withdraw(consent_id: str) -> Any:
    broker, user = _broker(), _user()
    found = person_portal.get_consent(broker, user, _checked_id(consent_id))
    if request.method == "POST":
        person_portal.withdraw_consent(broker, user, consent_id)
        flash(_("Your consent has been withdrawn. From now on nothing is shared on the basis of it."), "success")
        return redirect(url_for("portal.consent", consent_id=consent_id))
    if found.get("status") != "active":
        return page("withdraw.html", consent=found, consequences=None)
    consequences = person_portal.withdrawal_consequences(broker, user, consent_id)
    return page("withdraw.html", consent=found, consequences=consequences)


# --- Who has seen my information ---


def _log_filters() -> tuple[dict[str, Any], dict[str, str], int]:
    if set(request.args) - _LOG_QUERY:
        raise BadRequest("unknown query parameter")
    filters: dict[str, Any] = {}
    errors: dict[str, str] = {}
    organisation = request.args.get("organisation", "")
    if organisation:
        if _ID.match(organisation):
            filters["organisation"] = organisation
        else:
            errors["organisation"] = _("Choose an organisation from the list.")
    category = request.args.get("category", "")
    if category:
        if category in vocabulary_labels.CATEGORIES:
            filters["category"] = category
        else:
            errors["category"] = _("Choose a kind of information from the list.")
    effect = request.args.get("effect", "")
    if effect:
        if effect in vocabulary_labels.EFFECTS:
            filters["effect"] = effect
        else:
            errors["effect"] = _("Choose from the list.")
    for name in ("since", "until"):
        value = request.args.get(name, "")
        if not value:
            continue
        try:
            filters[name] = date.fromisoformat(value)
        except ValueError:
            errors[name] = _("Write the date as year-month-day, for example 2026-03-31.")
    if "since" in filters and "until" in filters and filters["since"] > filters["until"]:
        errors["until"] = _("The end date must not be before the start date.")
        del filters["until"]
    page_number = request.args.get("page", "1")
    number = int(page_number) if page_number.isdigit() and 0 < len(page_number) < 7 else 1
    return filters, errors, max(number, 1)


@for_a_person
def disclosure_log() -> Any:
    broker, user = _broker(), _user()
    filters, errors, number = _log_filters()
    result = person_portal.disclosure_log(broker, user, page=number, per_page=PER_PAGE, **filters)
    organisations = person_portal.log_organisations(broker, user)  # to filter by
    query = {k: request.args[k] for k in ("organisation", "category", "effect", "since", "until") if k in request.args}

    def page_url(n: int) -> str:
        return url_for("portal.log") + "?" + urlencode({**query, "page": n})

    return page(
        "log.html",
        400 if errors else 200,
        result=result,
        filters={k: request.args.get(k, "") for k in ("organisation", "category", "effect", "since", "until")},
        errors=errors,
        organisations=organisations,
        category_ids=list(vocabulary_labels.CATEGORIES),
        filtered=bool(query),
        page_url=page_url,
    )


# --- Shared without my consent ---


@for_a_person
def statutory() -> Any:
    flows = person_portal.statutory_flows(_broker(), _user())
    return page("statutory.html", flows=flows)


# --- My data ---


@for_a_person
def my_data() -> Any:
    data = person_portal.my_data(_broker(), _user())
    return page("my_data.html", data=data)


@for_a_person
def my_data_json() -> Any:
    data = person_portal.my_data(_broker(), _user())
    response = Response(
        json.dumps(data, ensure_ascii=False, indent=2, sort_keys=False, default=str),
        mimetype="application/json",
    )
    response.headers["Content-Disposition"] = 'attachment; filename="my-data.json"'
    return response


# --- Acting for someone else ---


@logged_in
def acting() -> Any:
    user = _user()
    if user.login_person_id is None:
        return redirect(url_for("portal.overview"))
    broker = _broker()
    representations = person_portal.representations_of(broker, user.login_person_id)
    if request.method == "GET":
        return page("acting.html", representations=representations, errors={})
    chosen = request.form.get("person_id", "")
    if chosen in ("", "self"):
        session.pop(ACTING_KEY, None)
        flash(_("You are now acting for yourself."), "success")
        return redirect(url_for("portal.overview"))
    match = next((r for r in representations if r["person_id"] == chosen), None)
    if match is None:
        return page(
            "acting.html",
            400,
            representations=representations,
            errors={"person_id": _("Choose a person from the list.")},
        )
    # The use case checks the mandate again (and on every later request).
    person_portal.portal_user(
        broker, user.login_person_id, acting_for=chosen, roles=user.roles, language=current_language()
    )
    session[ACTING_KEY] = {"person_id": chosen, "name": match.get("name") or "", "mandate": match.get("mandate")}
    flash(_("You are now acting for %(name)s.", name=match.get("name") or ""), "success")
    return redirect(url_for("portal.overview"))
