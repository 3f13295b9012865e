"""The workspace's pages (docs/dpo.md). Thin views: check the login and the form, call the use case, render.

Access: a request without a login is sent to the portal's login and brought back (GET pages; a POST goes back to
the workspace's front page); a login without the `dpo` role gets 403. Every form is POSTed with the portal
session's CSRF token, checked before any view runs. An identity code is only ever POSTed, and is neither shown,
logged nor put in a URL (DESIGN.md invariant 6). Nothing here commits: the use cases own their transactions.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from datetime import date, timedelta
from typing import Any
from urllib.parse import urlencode

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
from werkzeug.exceptions import BadRequest, Forbidden, HTTPException

from audit import EVENT_TYPES
from broker.domain import labels as vocabulary
from broker.domain.errors import (
    BrokerError,
    ConflictError,
    DatabaseUnavailableError,
    InvalidHetuError,
    InvalidRequestError,
    NotFoundError,
)
from broker.http.dpo import charts, documents
from broker.http.dpo.labels import FALLBACK_RETENTION, term
from broker.http.errors import database_unavailable_response
from broker.http.portal.i18n import LANGUAGES, NAMES, current_language, show_date, show_datetime
from broker.http.portal.labels import label
from broker.http.portal.security import content_security_policy, csrf_token, csrf_valid
from broker.services import Broker, dpo, processing_register, webhooks
from broker.services import anomalies as rules
from broker.services.anomalies import day_start

log = logging.getLogger("broker.dpo")

#: The portal's session keys (broker/http/portal/views.py): the verified login, and the page to return to.
LOGIN_KEY = "login"
NEXT_KEY = "next"
DPO_ROLE = "dpo"
PER_PAGE = 50
_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
_ACTOR = re.compile(r"^[^\x00-\x1f\x7f]{1,120}$")
_SEARCH_QUERY = {
    "person_id",
    "organisation",
    "actor",
    "category",
    "purpose",
    "basis_kind",
    "effect",
    "event",
    "since",
    "until",
    "order",
    "after",
}


def dpo_blueprint(static_folder: str) -> Blueprint:
    bp = Blueprint("dpo", __name__, static_folder=static_folder, static_url_path="/static")
    bp.before_request(_before)
    bp.after_request(_after)
    bp.context_processor(_template_context)
    # An unusable database: 503 and a page that needs nothing from it (broker/http/errors.py), before BrokerError's.
    bp.register_error_handler(DatabaseUnavailableError, database_unavailable_response)
    bp.register_error_handler(BrokerError, _broker_error)
    bp.register_error_handler(HTTPException, _http_error)
    bp.register_error_handler(Exception, _unexpected)
    rules_: list[tuple[str, str, Callable[..., Any], list[str]]] = [
        ("/", "index", index, ["GET"]),
        ("/search", "search", search, ["GET"]),
        ("/search/person", "search_person", search_person, ["POST"]),
        ("/entries/<int:entry_id>", "entry", entry, ["GET"]),
        ("/entries/<int:entry_id>/actor", "actor", actor, ["POST"]),
        ("/persons", "persons", persons, ["GET"]),
        ("/persons/find", "find_person", find_person, ["POST"]),
        ("/persons/<person_id>", "report", report, ["GET"]),
        ("/persons/<person_id>/report.csv", "report_csv", report_csv, ["GET"]),
        ("/persons/<person_id>/report.pdf", "report_pdf", report_pdf, ["GET"]),
        ("/anomalies", "anomalies", anomalies, ["GET"]),
        ("/anomalies/<int:entry_id>/<rule>", "anomaly", anomaly, ["GET", "POST"]),
        ("/register", "register", register, ["GET"]),
        ("/register.csv", "register_csv", register_csv, ["GET"]),
        ("/integrity", "integrity", integrity, ["GET"]),
        ("/integrity/verify", "verify", verify, ["POST"]),
        ("/activity", "activity", activity, ["GET"]),
        ("/deliveries", "deliveries", deliveries, ["GET"]),
    ]
    for rule, endpoint, view, methods in rules_:
        bp.add_url_rule(rule, endpoint, view, methods=methods)
    return bp


# --- Request plumbing ---


def _broker() -> Broker:
    broker: Broker = current_app.extensions["broker"]
    return broker


def _officer() -> dpo.Officer:
    officer: dpo.Officer = g.dpo_officer
    return officer


def _before() -> Response | None:
    if request.endpoint == "dpo.static":
        return None
    if request.method == "POST" and not csrf_valid():
        raise BadRequest("csrf")
    login = session.get(LOGIN_KEY)
    if not isinstance(login, dict):
        session[NEXT_KEY] = request.full_path.rstrip("?") if request.method == "GET" else url_for("dpo.index")
        return redirect(url_for("portal.login"))
    if DPO_ROLE not in (login.get("roles") or ()):
        raise Forbidden("not a data-protection officer")
    name = str(login.get("name") or "")
    # The DPO's actor id in the log and in reviews: the identity provider's stable subject (kept at login), or for
    # a session from before it was kept, the verified name.
    subject = str(login.get("subject") or "")
    g.dpo_officer = dpo.Officer(actor_id=(subject or name)[:120] or DPO_ROLE, name=name)
    return None


def _after(response: Response) -> Response:
    if request.endpoint == "dpo.static":
        return response
    provider = current_app.extensions["portal"].provider
    response.headers["Content-Security-Policy"] = content_security_policy((provider.authorization_origin(),))
    response.headers["Cache-Control"] = "no-store"
    response.headers["Content-Language"] = current_language()
    response.vary.add("Cookie")
    return response


def _here() -> str:
    """Where the language switch brings the DPO back to: this page, or for an answered POST the front page."""
    if request.method == "GET":
        return request.full_path.rstrip("?")
    if request.view_args and "entry_id" in request.view_args and "rule" not in request.view_args:
        return url_for("dpo.entry", entry_id=request.view_args["entry_id"])
    return url_for("dpo.index")


def _template_context() -> dict[str, Any]:
    return {
        "csrf_token": csrf_token,
        "label": label,
        "term": term,
        "show_date": show_date,
        "show_datetime": show_datetime,
        "local_time": documents.local_time,
        "role_name": _role_name,
        "lang": current_language(),
        "languages": LANGUAGES,
        "language_names": NAMES,
        "login": session.get(LOGIN_KEY),
        "here": _here(),
        "messages": get_flashed_messages(with_categories=True),
    }


def _role_name(role: str) -> str:
    """A professional role in words; a role the policy does not define (the DPO's, the system's) as it is."""
    return label("role", role) if role in vocabulary.ROLES else role


def page(template: str, status: int = 200, **context: Any) -> tuple[str, int]:
    return render_template(f"dpo/{template}", **context), status


def _download(data: bytes, mimetype: str, filename: str) -> Response:
    response = Response(data, mimetype=mimetype)
    response.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


def _checked_id(value: str) -> str:
    if not _ID.match(value):
        raise NotFoundError("no such object")
    return value


# --- Errors, as pages ---


def _broker_error(error: BrokerError) -> tuple[str, int]:
    if isinstance(error, NotFoundError):
        return page("error.html", 404, title=_("Page not found"), message=_("There is nothing here."))
    if isinstance(error, ConflictError):
        return page(
            "error.html",
            409,
            title=_("This has already changed"),
            message=_("Someone has already done this. Open the page again to see where it stands."),
        )
    log.warning("dpo request failed: %s", error.code)
    return page("error.html", 400, title=_("We could not do that"), message=_("Check the form and try again."))


def _http_error(error: HTTPException) -> tuple[str, int]:
    status = error.code or 500
    if status == 400 and error.description == "csrf":
        return page(
            "error.html",
            400,
            title=_("The form has expired"),
            message=_("For your security, the form was not sent. Go back, reload the page and try again."),
        )
    if status == 403:
        return page(
            "error.html",
            403,
            title=_("No access"),
            message=_("These pages are for the data-protection officer only."),
        )
    if status == 404:
        return page("error.html", 404, title=_("Page not found"), message=_("There is nothing here."))
    if status == 405:
        return page(
            "error.html", 405, title=_("We could not do that"), message=_("This page cannot be opened this way.")
        )
    return page("error.html", status, title=_("We could not do that"), message=_("Check the form and try again."))


def _unexpected(error: Exception) -> tuple[str, int]:
    if isinstance(error, HTTPException):
        return _http_error(error)
    log.exception("dpo error", extra={"request_id": g.get("request_id")})
    return page(
        "error.html",
        500,
        title=_("Something went wrong"),
        message=_("The service could not complete your request. Nothing was changed. Please try again later."),
    )


# --- Front page ---


def index() -> Any:
    return page("index.html", integrity=dpo.integrity_status(_broker()))


# --- Searching the log ---


def _date(name: str, errors: dict[str, str]) -> date | None:
    value = request.args.get(name, "")
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        errors[name] = _("Write the date as year-month-day, for example 2026-03-31.")
        return None


def _choice(name: str, allowed: Any, errors: dict[str, str], message: str) -> str | None:
    value = request.args.get(name, "")
    if not value:
        return None
    if value not in allowed:
        errors[name] = message
        return None
    return value


def _search_form() -> tuple[dpo.LogSearch, dict[str, str]]:
    if set(request.args) - _SEARCH_QUERY:
        raise BadRequest("unknown query parameter")
    broker = _broker()
    errors: dict[str, str] = {}
    person_id = request.args.get("person_id", "").strip() or None
    if person_id is not None and not _ID.match(person_id):
        errors["person_id"] = _("A person id is letters, digits and the marks . _ : - only.")
        person_id = None
    organisation = request.args.get("organisation", "") or None
    if organisation is not None and not _ID.match(organisation):
        errors["organisation"] = _("Choose an organisation from the list.")
        organisation = None
    actor_id = request.args.get("actor", "").strip() or None
    if actor_id is not None and not _ACTOR.match(actor_id):
        errors["actor"] = _("A professional's id is at most 120 characters.")
        actor_id = None
    choose = _("Choose from the list.")
    category = _choice("category", broker.policy.categories, errors, choose)
    purpose = _choice("purpose", broker.policy.purposes, errors, choose)
    basis_kind = _choice("basis_kind", dpo.BASIS_KINDS, errors, choose)
    effect = _choice("effect", dpo.EFFECTS, errors, choose)
    event = _choice("event", EVENT_TYPES, errors, choose)
    since, until = _date("since", errors), _date("until", errors)
    if since is not None and until is not None and since > until:
        errors["until"] = _("The end date must not be before the start date.")
        until = None
    order = request.args.get("order", "newest")
    if order not in ("newest", "oldest"):
        errors["order"] = choose
        order = "newest"
    after = request.args.get("after", "")
    cursor = int(after) if after.isdigit() and len(after) < 19 else None
    return (
        dpo.LogSearch(
            person_id=person_id,
            organisation=organisation,
            actor_id=actor_id,
            category=category,
            purpose=purpose,
            basis_kind=basis_kind,
            effect=effect,
            event=event,
            since=day_start(since) if since is not None else None,
            until=day_start(until + timedelta(days=1)) if until is not None else None,
            newest_first=order == "newest",
            cursor=cursor,
            limit=PER_PAGE,
        ),
        errors,
    )


def _search_page(status: int = 200, **extra: Any) -> tuple[str, int]:
    broker = _broker()
    form = {name: request.args.get(name, "") for name in _SEARCH_QUERY - {"after"}}
    context: dict[str, Any] = {
        "form": form,
        "organisations": dpo.organisations(broker),
        "categories": sorted(broker.policy.categories),
        "purposes": sorted(broker.policy.purposes),
        "basis_kinds": dpo.BASIS_KINDS,
        "effects": dpo.EFFECTS,
        "events": sorted(EVENT_TYPES),
        "errors": {},
        "result": None,
        "person": None,
        "person_errors": {},
    }
    context.update(extra)
    return page("search.html", status, **context)


def search() -> Any:
    if not request.args:
        return _search_page()
    query, errors = _search_form()
    if errors:
        return _search_page(400, errors=errors)
    result = dpo.search_log(_broker(), _officer(), query)
    person = None
    if query.person_id is not None:
        try:
            person = dpo.person_summary(_broker(), query.person_id)
        except NotFoundError:
            person = None
    kept = {k: v for k, v in request.args.items() if k != "after" and v}
    next_url = (
        url_for("dpo.search") + "?" + urlencode({**kept, "after": result["next_cursor"]})
        if result["next_cursor"] is not None
        else None
    )
    first_url = url_for("dpo.search") + "?" + urlencode(kept)
    return _search_page(
        result=result, person=person, next_url=next_url, first_url=first_url, first_page=query.cursor is None
    )


def search_person() -> Any:
    """A search by identity code: POSTed, so that the code is in no URL, history or server log; the page it leads
    to names the person by their opaque id only."""
    hetu = request.form.get("hetu", "").strip()
    if not hetu:
        return _search_page(400, person_errors={"hetu": _("Write the personal identity code.")})
    try:
        person_id = dpo.find_person(_broker(), _officer(), hetu)
    except InvalidHetuError:
        return _search_page(400, person_errors={"hetu": _("This is not a valid personal identity code.")})
    if person_id is None:
        return _search_page(404, person_errors={"hetu": _("No one with this personal identity code is known here.")})
    return redirect(url_for("dpo.search", person_id=person_id))


# --- One entry ---


def entry(entry_id: int) -> Any:
    found = dpo.open_entry(_broker(), _officer(), entry_id)
    return page("entry.html", entry=found, opened=None)


def actor(entry_id: int) -> Any:
    """Open the entry's actor commitment: the professional's id, shown once in this answer (not in a URL) and
    logged as `dpo:open_commitment`."""
    opened = dpo.open_commitment(_broker(), _officer(), entry_id)
    found = dpo.open_entry(_broker(), _officer(), entry_id)
    return page("entry.html", entry=found, opened=opened)


# --- A person's log request ---


def persons() -> Any:
    person_id = request.args.get("person_id", "").strip()
    if set(request.args) - {"person_id"}:
        raise BadRequest("unknown query parameter")
    if person_id:
        if not _ID.match(person_id):
            return page(
                "persons.html",
                400,
                errors={"person_id": _("A person id is letters, digits and the marks . _ : - only.")},
            )
        return redirect(url_for("dpo.report", person_id=person_id))
    return page("persons.html", errors={})


def find_person() -> Any:
    hetu = request.form.get("hetu", "").strip()
    if not hetu:
        return page("persons.html", 400, errors={"hetu": _("Write the personal identity code.")})
    try:
        person_id = dpo.find_person(_broker(), _officer(), hetu)
    except InvalidHetuError:
        return page("persons.html", 400, errors={"hetu": _("This is not a valid personal identity code.")})
    if person_id is None:
        return page("persons.html", 404, errors={"hetu": _("No one with this personal identity code is known here.")})
    return redirect(url_for("dpo.report", person_id=person_id))


def _special_reason() -> bool:
    if set(request.args) - {"special_reason"}:
        raise BadRequest("unknown query parameter")
    return request.args.get("special_reason") == "yes"


def report(person_id: str) -> Any:
    special = _special_reason()
    found = dpo.person_report(_broker(), _officer(), _checked_id(person_id), special_reason=special, form="html")
    query = "?special_reason=yes" if special else ""
    return page(
        "report.html",
        report=found,
        csv_url=url_for("dpo.report_csv", person_id=person_id) + query,
        pdf_url=url_for("dpo.report_pdf", person_id=person_id) + query,
        basis_parts=documents.basis_parts,
        disclosure_event=documents.disclosure_event,
    )


def report_csv(person_id: str) -> Any:
    special = _special_reason()
    found = dpo.person_report(_broker(), _officer(), _checked_id(person_id), special_reason=special, form="csv")
    return _download(documents.report_csv(found), "text/csv; charset=utf-8", f"log-report-{person_id}.csv")


def report_pdf(person_id: str) -> Any:
    special = _special_reason()
    found = dpo.person_report(_broker(), _officer(), _checked_id(person_id), special_reason=special, form="pdf")
    return _download(documents.report_pdf(found), "application/pdf", f"log-report-{person_id}.pdf")


# --- The anomaly queue ---


def _days(source: Any) -> int:
    value = str(source.get("days", "") or dpo.QUEUE_DAYS)
    if not value.isdigit() or not 1 <= int(value) <= dpo.MAX_QUEUE_DAYS:
        raise BadRequest("days")
    return int(value)


def anomalies() -> Any:
    if set(request.args) - {"tab", "days"}:
        raise BadRequest("unknown query parameter")
    tab = request.args.get("tab", "open")
    if tab not in ("open", "reviewed"):
        raise BadRequest("tab")
    days = _days(request.args)
    if tab == "reviewed":
        return page("anomalies.html", tab=tab, days=days, reviewed=dpo.reviewed_anomalies(_broker(), _officer()))
    queue = dpo.anomaly_queue(_broker(), _officer(), days=days)
    return page("anomalies.html", tab=tab, days=days, queue=queue, rule_ids=rules.RULES)


def anomaly(entry_id: int, rule: str) -> Any:
    broker, officer = _broker(), _officer()
    days = _days(request.form if request.method == "POST" else request.args)
    if request.method == "GET":
        item = dpo.anomaly_item(broker, entry_id, rule, days=days)
        return page("anomaly.html", item=item, days=days, errors={}, form={})
    note = request.form.get("note", "")
    outcome = request.form.get("outcome", "")
    errors: dict[str, str] = {}
    if not note.strip():
        errors["note"] = _("Write a note: what you checked and what you concluded.")
    elif len(note.strip()) > dpo.NOTE_MAX:
        errors["note"] = _("The note is too long: at most %(max)d characters.", max=dpo.NOTE_MAX)
    if outcome not in dpo.OUTCOMES:
        errors["outcome"] = _("Choose the outcome.")
    if not errors:
        try:
            dpo.review_anomaly(broker, officer, entry_id, rule, note=note, outcome=outcome, days=days)
        except InvalidRequestError as error:
            errors[error.field or "note"] = _("Check the form and try again.")
    if errors:
        item = dpo.anomaly_item(broker, entry_id, rule, days=days)
        return page("anomaly.html", 400, item=item, days=days, errors=errors, form={"note": note, "outcome": outcome})
    flash(_("The review has been saved and logged."), "success")
    return redirect(url_for("dpo.anomalies", days=days) if days != dpo.QUEUE_DAYS else url_for("dpo.anomalies"))


# --- The register of processing activities ---


def _retention_texts(register_: dict[str, Any]) -> dict[str, str]:
    """Category → its retention in words, for the CSV."""
    retention = register_["retention"]
    if retention is None:
        return {}
    out = {}
    for entry_ in retention["categories"]:
        if entry_["years"] is None:
            out[entry_["category"]] = _("no period set: kept")
        else:
            out[entry_["category"]] = _(
                "%(years)d years after the service relationship ends (%(reference)s)",
                years=entry_["years"],
                reference=entry_["reference"],
            )
    return out


def register() -> Any:
    found = processing_register.processing_register(_broker())
    return page("register.html", register=found, fallback_retention=FALLBACK_RETENTION)


def register_csv() -> Any:
    found = processing_register.processing_register(_broker())
    data = documents.register_csv(found, _retention_texts(found))
    return _download(data, "text/csv; charset=utf-8", "register-of-processing.csv")


# --- Integrity ---


def integrity() -> Any:
    return page("integrity.html", integrity=dpo.integrity_status(_broker()))


def verify() -> Any:
    result = dpo.record_verification(_broker())
    if result["ok"]:
        flash(_("The log was verified: %(size)d entries, everything in order.", size=result["size"]), "success")
    else:
        flash(_("The log did not verify. See the result below."), "error")
    return redirect(url_for("dpo.integrity"))


# --- Activity ---


def activity() -> Any:
    if request.args:
        raise BadRequest("unknown query parameter")
    found = dpo.activity(_broker(), days=30)
    days = found["days"]
    day_chart = charts.stacked_columns(
        [d["day"].strftime("%d.%m.") for d in days],
        [(d["permits"], d["denials"]) for d in days],
        [
            _(
                "%(day)s: %(permits)d disclosed, %(denials)d refused",
                day=show_date(d["day"]),
                permits=d["permits"],
                denials=d["denials"],
            )
            for d in days
        ],
    )
    orgs = found["organisations"]
    org_chart = charts.stacked_bars(
        [o["name"] for o in orgs],
        [(o["permits"], o["denials"]) for o in orgs],
        [
            _(
                "%(org)s: %(permits)d disclosed, %(denials)d refused",
                org=o["name"],
                permits=o["permits"],
                denials=o["denials"],
            )
            for o in orgs
        ],
    )
    totals = {"permits": sum(d["permits"] for d in days), "denials": sum(d["denials"] for d in days)}
    return page("activity.html", activity=found, day_chart=day_chart, org_chart=org_chart, totals=totals)


# --- Event deliveries to partner systems ---


def deliveries() -> Any:
    """Each organisation's webhook endpoints with their delivery counts, and the newest deliveries given up
    (docs/webhooks.md). Event ids and types only, no person: nothing here is logged as a read of the log."""
    if request.args:
        raise BadRequest("unknown query parameter")
    broker = _broker()
    overview = webhooks.delivery_overview(broker)
    failed = webhooks.all_deliveries(broker, status="failed", limit=PER_PAGE)
    names = {org["organisation"]: org["name"] for org in overview}
    return page(
        "deliveries.html",
        overview=overview,
        failed=failed,
        names=names,
        endpoint_disabled=webhooks.ENDPOINT_DISABLED,
    )
