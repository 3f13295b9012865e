"""The client portal's web layer (broker/http/portal, docs/portal.md), driven through Flask's test client the way a
browser drives it: the login runs the whole OpenID Connect flow against the development identity provider
(/portal/login → /dev-idp/authorize → a persona chosen → /portal/auth/callback), and every form is posted with the
CSRF token of the page it came from.

The clock is pinned to the present moment (not the suite's usual fixed date): Authlib's client checks the ID
token's `exp` and `iat` against the real time.
"""

from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import pytest
import yaml
from babel.dates import format_date
from babel.messages.extract import extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.mofile import read_mo
from babel.messages.pofile import read_po
from flask.testing import FlaskClient
from sqlalchemy import select
from werkzeug.test import TestResponse

from broker.adapters.orm import ConsentRow, PortalSessionRow
from broker.app import create_app
from broker.config import Settings
from broker.domain import labels
from broker.domain.clock import FixedClock
from broker.domain.errors import ConfigurationError
from broker.http.portal.sessions import IDLE_TIMEOUT, session_id
from broker.services import persons
from schemas.records.examples import EXAMPLES
from tests.support import Env, make_env, new_hetu

ROOT = Path(__file__).resolve().parents[2]
LANGUAGES = ("fi", "sv", "en")
COOKIE = "broker_portal"  # plain-HTTP test issuer: no __Host- prefix, no Secure


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(at=datetime.now(UTC).replace(microsecond=0))


# --- The people of these tests ---


@dataclass
class People:
    ids: dict[str, str]
    hetus: dict[str, str]


def _years_ago(years: int) -> date:
    today = datetime.now(UTC).date()
    return date(today.year - years, 1, 15)


@pytest.fixture
def people(env: Env) -> People:
    """Mikko and Sari (adults), Elias (a minor) and his custodian Leena, all known to the broker; Niko, who can log
    in but has no record in the broker. Written to demo.json, which the development IdP offers as personas."""
    born = {
        "mikko": _years_ago(38),
        "sari": _years_ago(50),
        "elias": _years_ago(10),
        "leena": _years_ago(45),
        "niko": _years_ago(30),
    }
    names = {
        "mikko": "Mikko Laine",
        "sari": "Sari Nieminen",
        "elias": "Elias Korhonen",
        "leena": "Leena Korhonen",
        "niko": "Niko Nobody",
    }
    hetus = {key: new_hetu(day) for key, day in born.items()}
    ids = {key: persons.resolve_person(env.broker, None, hetus[key], names[key]) for key in hetus if key != "niko"}
    demo = {
        "issuer": env.issuer,
        "persons": [
            {"person_id": ids.get(key, "per_none"), "hetu": hetus[key], "name": names[key], "login": key}
            for key in hetus
        ],
    }
    instance = env.broker.settings.instance_path
    instance.mkdir(parents=True, exist_ok=True)
    (instance / "demo.json").write_text(json.dumps(demo), encoding="utf-8")
    # Varha social work serves Elias, has verified that Leena is his custodian, and registers the mandate.
    env.serve(ids["elias"], "varha-social-work")
    registered = env.post(
        "varha-social-work",
        f"/persons/{ids['elias']}/representatives",
        {"hetu": hetus["leena"], "mandate": "custodian"},
    )
    assert registered.status_code == 201, registered.get_json()
    return People(ids=ids, hetus=hetus)


# --- A browser ---


def csrf_of(page: TestResponse) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', page.get_data(as_text=True))
    assert found, page.get_data(as_text=True)
    return html.unescape(found.group(1))


def location(response: TestResponse) -> str:
    assert response.status_code in (302, 303), (response.status_code, response.get_data(as_text=True))
    target = urlsplit(response.headers["Location"])
    return target.path + (f"?{target.query}" if target.query else "")


def session_cookie(client: FlaskClient) -> str | None:
    cookie = client.get_cookie(COOKIE)
    return cookie.value if cookie else None


@dataclass
class Browser:
    client: FlaskClient

    def get(self, path: str, **kwargs: Any) -> TestResponse:
        return self.client.get(path, **kwargs)

    def token(self) -> str:
        return csrf_of(self.client.get("/portal/acting"))

    def post(self, path: str, data: dict[str, Any] | None = None, *, token: str | None = None) -> TestResponse:
        form = dict(data or {})
        form["csrf_token"] = token if token is not None else self.token()
        return self.client.post(path, data=form)


def log_in(env: Env, persona: str, client: FlaskClient | None = None, *, landing: str = "/portal/") -> Browser:
    client = client or env.app.test_client()
    start = client.get("/portal/login")
    authorize = urlsplit(start.headers["Location"])
    assert f"{authorize.scheme}://{authorize.netloc}{authorize.path}" == f"{env.issuer}/dev-idp/authorize"
    page = client.get(f"{authorize.path}?{authorize.query}")
    text = page.get_data(as_text=True)
    action = re.search(r'<form method="post" action="([^"]+)"', text)
    assert action, text
    back = client.post(html.unescape(action.group(1)), data={"csrf_token": csrf_of(page), "persona": persona})
    callback = urlsplit(back.headers["Location"])
    assert f"{callback.scheme}://{callback.netloc}{callback.path}" == f"{env.issuer}/portal/auth/callback"
    done = client.get(f"{callback.path}?{callback.query}")
    assert location(done) == landing, done.get_data(as_text=True)
    return Browser(client)


# --- Partner-side helpers ---


def ask_consent(env: Env, person_id: str, **overrides: Any) -> str:
    body = {
        "person_id": person_id,
        "recipients": ["kisalli", "aurajoki-foundation"],
        "categories": ["service_need_assessment", "health_check_summary"],
        "purposes": ["multisector_planning", "service_delivery"],
        "valid_days": 180,
        "reason": "Jotta voimme suunnitella työtoimintasi yhdessä.",
    } | overrides
    response = env.post("kisalli", "/consent-requests", body)
    assert response.status_code == 201, response.get_json()
    request_id: str = response.get_json()["consent_request_id"]
    return request_id


def deposit(env: Env, org: str, person_id: str, category: str) -> None:
    response = env.post(org, "/records", {"person_id": person_id, "category": category, "content": EXAMPLES[category]})
    assert response.status_code == 201, response.get_json()


def disclose(env: Env, org: str, person_id: str, category: str, purpose: str) -> TestResponse:
    return env.post(org, "/disclosures", {"person_id": person_id, "category": category, "purpose": purpose})


def grant(browser: Browser, request_id: str, choices: dict[str, Any]) -> TestResponse:
    """Review the chosen terms, then grant exactly what the review page carries."""
    review = browser.post(f"/portal/requests/{request_id}/review", choices)
    assert review.status_code == 200, review.get_data(as_text=True)
    text = review.get_data(as_text=True)
    form = re.search(r'<form method="post" action="([^"]+/grant)">(.*?)</form>', text, re.S)
    assert form, text
    fields: dict[str, list[str]] = {}
    for name, value in re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', form.group(2)):
        fields.setdefault(name, []).append(html.unescape(value))
    return browser.client.post(form.group(1), data=fields)


def consent_id_of(response: TestResponse) -> str:
    path = location(response)
    assert path.startswith("/portal/consents/"), path
    return path.rsplit("/", 1)[1]


def visible_text(page: TestResponse) -> str:
    """What the person reads: the page without tags, attributes, and the consent text (whose wording belongs to the
    consent-text service)."""
    text = page.get_data(as_text=True)
    text = re.sub(r'<div class="consent-text".*?</div>', " ", text, flags=re.S)
    text = re.sub(r"<(script|style|head)\b.*?</\1>", " ", text, flags=re.S)
    return html.unescape(re.sub(r"<[^>]+>", " ", text))


# --- Login, sessions, cookies ---


def test_a_login_through_the_dev_idp_rotates_the_session_and_shows_the_persons_overview(
    env: Env, people: People
) -> None:
    client = env.app.test_client()
    client.get("/portal/login")
    before = session_cookie(client)
    assert before is not None
    browser = log_in(env, "mikko", client)
    after = session_cookie(client)
    assert after is not None and after != before
    with env.broker.uow(write=False) as uow:
        assert uow.session.get(PortalSessionRow, session_id(before)) is None
        row = uow.session.get(PortalSessionRow, session_id(after))
        assert row is not None
        stored = json.dumps(row.data)
    # The session holds the broker's person id, never the identity code, the ID token or the cookie's token.
    assert people.ids["mikko"] in stored
    assert people.hetus["mikko"] not in stored and after not in stored and "id_token" not in stored
    overview = browser.get("/portal/")
    assert overview.status_code == 200
    assert "Mikko Laine" in overview.get_data(as_text=True)


def test_the_session_cookie_is_httponly_lax_host_wide_and_holds_only_a_random_token(env: Env, people: People) -> None:
    client = env.app.test_client()
    response = client.get("/portal/")
    cookie = response.headers["Set-Cookie"]
    name, _, rest = cookie.partition("=")
    assert name == COOKIE
    attributes = {part.strip().split("=")[0].lower() for part in rest.split(";")[1:]}
    assert {"httponly", "path", "samesite"} <= attributes and "domain" not in attributes
    assert "Path=/" in cookie and "SameSite=Lax" in cookie
    assert "Secure" not in cookie  # plain-HTTP issuer of the tests
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", rest.split(";")[0])


def test_over_https_the_cookie_is_host_prefixed_and_secure(settings: Settings, clock: FixedClock) -> None:
    secure = make_env(replace(settings, issuer="https://broker.test"), clock)
    try:
        response = secure.app.test_client().get("/portal/", base_url="https://broker.test")
        cookie = response.headers["Set-Cookie"]
        assert cookie.startswith("__Host-broker_portal=")
        assert "Secure" in cookie and "HttpOnly" in cookie and "Path=/" in cookie and "SameSite=Lax" in cookie
        assert "Domain" not in cookie
    finally:
        secure.broker.db.dispose()


def test_logout_deletes_the_session_and_its_cookie(env: Env, people: People) -> None:
    browser = log_in(env, "mikko")
    token = session_cookie(browser.client)
    assert token is not None
    response = browser.post("/portal/logout")
    assert location(response) == "/portal/?logged_out=1"
    assert f"{COOKIE}=;" in response.headers["Set-Cookie"]
    assert session_cookie(browser.client) is None
    with env.broker.uow(write=False) as uow:
        assert uow.session.get(PortalSessionRow, session_id(token)) is None
    # The old cookie opens nothing.
    browser.client.set_cookie(COOKIE, token)
    assert location(browser.get("/portal/consents")) == "/portal/login"


def test_a_session_idle_for_30_minutes_has_ended(env: Env, people: People, clock: FixedClock) -> None:
    browser = log_in(env, "mikko")
    clock.advance(seconds=IDLE_TIMEOUT.total_seconds() - 90)
    assert browser.get("/portal/consents").status_code == 200  # refreshes the idle timeout
    clock.advance(seconds=IDLE_TIMEOUT.total_seconds() - 90)
    assert browser.get("/portal/consents").status_code == 200
    clock.advance(seconds=IDLE_TIMEOUT.total_seconds() + 1)
    assert location(browser.get("/portal/consents")) == "/portal/login"


def test_a_page_asked_for_before_login_is_shown_after_it(env: Env, people: People) -> None:
    client = env.app.test_client()
    assert location(client.get("/portal/log?effect=permit")) == "/portal/login"
    browser = log_in(env, "mikko", client, landing="/portal/log?effect=permit")
    assert browser.get("/portal/log?effect=permit").status_code == 200


def test_a_cancelled_login_says_so_and_logs_no_one_in(env: Env, people: People) -> None:
    client = env.app.test_client()
    authorize = urlsplit(client.get("/portal/login").headers["Location"])
    page = client.get(f"{authorize.path}?{authorize.query}")
    action = re.search(r'<form method="post" action="([^"]+)"', page.get_data(as_text=True))
    assert action
    back = client.post(html.unescape(action.group(1)), data={"csrf_token": csrf_of(page), "action": "cancel"})
    callback = urlsplit(back.headers["Location"])
    answer = client.get(f"{callback.path}?{callback.query}", headers={"Accept-Language": "en"})
    assert answer.status_code == 400
    assert "You cancelled the identification." in answer.get_data(as_text=True)
    assert location(client.get("/portal/consents")) == "/portal/login"


def test_a_callback_with_a_forged_state_is_refused(env: Env, people: People) -> None:
    client = env.app.test_client()
    client.get("/portal/login")
    answer = client.get("/portal/auth/callback?code=devidp_ac_forged&state=forged")
    assert answer.status_code == 400
    assert location(client.get("/portal/consents")) == "/portal/login"


def test_the_dpo_persona_is_logged_in_with_no_person(env: Env, people: People) -> None:
    browser = log_in(env, "dpo")
    page = browser.get("/portal/", headers={"Accept-Language": "en"})
    assert page.status_code == 200
    assert "data-protection officer" in page.get_data(as_text=True)
    assert location(browser.get("/portal/consents")) == "/portal/"


def test_a_person_unknown_to_the_broker_sees_an_empty_overview_that_says_so(env: Env, people: People) -> None:
    browser = log_in(env, "niko")
    page = browser.get("/portal/", headers={"Accept-Language": "en"})
    assert page.status_code == 200
    assert "There is no information about you in this service." in page.get_data(as_text=True)
    for path in ("/portal/consents", "/portal/log", "/portal/my-data"):
        assert location(browser.get(path)) == "/portal/"


# --- Headers and CSRF ---


def test_portal_pages_carry_a_strict_content_security_policy_and_no_store(env: Env, people: People) -> None:
    browser = log_in(env, "mikko")
    for path in ("/portal/", "/portal/log", "/portal/my-data.json"):
        response = browser.get(path)
        csp = response.headers["Content-Security-Policy"]
        assert "default-src 'none'" in csp and "style-src 'self'" in csp and "img-src 'self'" in csp
        assert "frame-ancestors 'none'" in csp and "base-uri 'none'" in csp
        assert re.search(r"form-action 'self'( http://broker\.test)?;", csp)
        assert "script-src" not in csp and "unsafe-inline" not in csp
        assert response.headers["Cache-Control"] == "no-store"
    stylesheet = browser.get("/portal/static/portal.css")
    assert stylesheet.status_code == 200 and stylesheet.mimetype == "text/css"
    stylesheet.close()


def test_a_post_without_the_sessions_csrf_token_is_refused(env: Env, people: People) -> None:
    request_id = ask_consent(env, people.ids["mikko"])
    browser = log_in(env, "mikko")
    posts = [
        f"/portal/requests/{request_id}/review",
        f"/portal/requests/{request_id}/grant",
        f"/portal/requests/{request_id}/refuse",
        "/portal/acting",
        "/portal/language",
        "/portal/logout",
    ]
    for path in posts:
        missing = browser.client.post(path, data={"lang": "sv"}, headers={"Accept-Language": "en"})
        wrong = browser.post(path, {"lang": "sv"}, token="x" * 43)
        assert missing.status_code == 400 and wrong.status_code == 400, path
        assert "The form has expired" in missing.get_data(as_text=True)
    # Nothing happened: the request is still pending, and the person is still logged in.
    assert browser.get(f"/portal/requests/{request_id}").status_code == 200
    assert "Say no to the request" in browser.get(
        f"/portal/requests/{request_id}", headers={"Accept-Language": "en"}
    ).get_data(as_text=True)


# --- Every page, in every language ---


@pytest.fixture
def mikkos_things(env: Env, people: People) -> dict[str, str]:
    """A pending request, a granted consent and a log entry of Mikko's."""
    mikko = people.ids["mikko"]
    env.serve(mikko, "kisalli", "turku-employment", "varha-social-work")
    pending = ask_consent(env, mikko)
    answered = ask_consent(env, mikko, recipients=["kisalli"], categories=["service_need_assessment"])
    browser = log_in(env, "mikko")
    granted = grant(
        browser,
        answered,
        {"recipients": ["kisalli"], "categories": ["service_need_assessment"], "confirm_special": "yes"},
    )
    deposit(env, "turku-employment", mikko, "service_need_assessment")
    assert disclose(env, "kisalli", mikko, "service_need_assessment", "multisector_planning").status_code == 200
    return {"request": pending, "consent": consent_id_of(granted)}


def portal_pages(things: dict[str, str]) -> list[str]:
    return [
        "/portal/",
        f"/portal/requests/{things['request']}",
        "/portal/consents",
        f"/portal/consents/{things['consent']}",
        f"/portal/consents/{things['consent']}/withdraw",
        "/portal/log",
        "/portal/log?category=service_need_assessment&effect=permit",
        "/portal/statutory",
        "/portal/my-data",
        "/portal/acting",
    ]


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_page_renders_in_each_language_as_accessible_html(
    env: Env, people: People, mikkos_things: dict[str, str], language: str
) -> None:
    browser = log_in(env, "mikko")
    browser.client.set_cookie("broker_lang", language)
    ids = set(labels.CATEGORIES) | set(labels.PURPOSES) | set(labels.ORG_TYPES)
    for path in portal_pages(mikkos_things):
        page = browser.get(path)
        assert page.status_code == 200, (path, page.get_data(as_text=True))
        text = page.get_data(as_text=True)
        assert f'<html lang="{language}">' in text, path
        assert len(re.findall(r"<h1[ >]", text)) == 1, path
        assert '<a class="skip-link" href="#main">' in text and '<main id="main"' in text, path
        assert "<header" in text and "<nav" in text and "<footer" in text, path
        assert 'href="/portal/static/portal.css"' in text and "<script" not in text and "style=" not in text, path
        # Every control has a label; every table header has a scope.
        for control in re.findall(r'<(?:input|select)\b(?![^>]*type="hidden")[^>]*\bid="([^"]+)"', text):
            assert f'for="{control}"' in text, (path, control)
        assert not re.search(r"<th(?=[\s>])(?![^>]*scope=)", text), path
        # aria-describedby names only ids on the page.
        for described in re.findall(r'aria-describedby="([^"]+)"', text):
            for target in described.split():
                assert f'id="{target}"' in text, (path, target)
        shown = visible_text(page)
        raw = sorted(i for i in ids if re.search(rf"\b{re.escape(i)}\b", shown))
        assert raw == [], (path, raw)


@pytest.mark.parametrize(
    ("accept", "expected"), [("sv-FI,sv;q=0.9", "sv"), ("en-GB", "en"), ("fi", "fi"), ("de-DE,de", "fi"), (None, "fi")]
)
def test_the_language_comes_from_the_browser_among_fi_sv_en_else_finnish(
    env: Env, accept: str | None, expected: str
) -> None:
    headers = {"Accept-Language": accept} if accept else {}
    page = env.app.test_client().get("/portal/", headers=headers)
    assert f'<html lang="{expected}">' in page.get_data(as_text=True)
    assert page.headers["Content-Language"] == expected


def test_the_language_switch_is_remembered_in_a_cookie_and_returns_to_the_page(env: Env, people: People) -> None:
    browser = log_in(env, "mikko")
    response = browser.post("/portal/language", {"lang": "sv", "next": "/portal/log?effect=deny"})
    assert location(response) == "/portal/log?effect=deny"
    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith("broker_lang=sv;") and "SameSite=Lax" in cookie and "Path=/" in cookie
    page = browser.get("/portal/log", headers={"Accept-Language": "en"})
    assert '<html lang="sv">' in page.get_data(as_text=True)
    assert "Vem har sett mina uppgifter" in page.get_data(as_text=True)
    # Never to another site.
    for target in ("https://evil.example/", "//evil.example/portal/", "/portal/../../evil", "/dev-idp/authorize"):
        assert location(browser.post("/portal/language", {"lang": "en", "next": target})) == "/portal/", target
    assert browser.post("/portal/language", {"lang": "de"}).status_code == 400


def test_dates_are_written_in_the_persons_language(env: Env, people: People, mikkos_things: dict[str, str]) -> None:
    browser = log_in(env, "mikko")
    today = datetime.now(ZoneInfo("Europe/Helsinki")).date()
    for language in LANGUAGES:
        browser.client.set_cookie("broker_lang", language)
        page = browser.get(f"/portal/consents/{mikkos_things['consent']}").get_data(as_text=True)
        assert format_date(today, "long", locale=language) in page, language


# --- Another person's objects are not found ---


def test_another_persons_requests_and_consents_are_404_on_every_portal_url(
    env: Env, people: People, mikkos_things: dict[str, str]
) -> None:
    sari = log_in(env, "sari")
    request_id, consent_id = mikkos_things["request"], mikkos_things["consent"]
    for path in (
        f"/portal/requests/{request_id}",
        f"/portal/consents/{consent_id}",
        f"/portal/consents/{consent_id}/withdraw",
        "/portal/requests/req_doesnotexist",
        "/portal/consents/con_doesnotexist",
    ):
        assert sari.get(path).status_code == 404, path
    choices = {"recipients": ["kisalli"], "categories": ["service_need_assessment"], "confirm_special": "yes"}
    for path, data in (
        (f"/portal/requests/{request_id}/review", choices),
        (f"/portal/requests/{request_id}/grant", choices | {"text_sha256": "0" * 64, "language": "fi"}),
        (f"/portal/requests/{request_id}/refuse", {}),
        (f"/portal/consents/{consent_id}/withdraw", {}),
    ):
        assert sari.post(path, data).status_code == 404, path
    with env.broker.uow(write=False) as uow:
        consent = uow.session.get(ConsentRow, consent_id)
        assert consent is not None and consent.status == "active"
    mikko = log_in(env, "mikko")
    assert mikko.get(f"/portal/requests/{request_id}").status_code == 200


# --- Answering a request ---


def test_a_narrowed_grant_lets_partners_have_only_the_granted_terms(env: Env, people: People) -> None:
    mikko = people.ids["mikko"]
    env.serve(mikko, "kisalli", "aurajoki-foundation", "turku-employment", "varha-health")
    deposit(env, "turku-employment", mikko, "service_need_assessment")
    deposit(env, "varha-health", mikko, "health_check_summary")
    request_id = ask_consent(env, mikko)
    assert disclose(env, "kisalli", mikko, "service_need_assessment", "multisector_planning").status_code == 403

    browser = log_in(env, "mikko")
    browser.client.set_cookie("broker_lang", "en")
    page = browser.get(f"/portal/requests/{request_id}")
    text = page.get_data(as_text=True)
    assert (
        'type="checkbox" id="recipient-aurajoki-foundation" name="recipients" value="aurajoki-foundation" checked'
        in text
    )
    assert "Service-need assessment" in text and "Aurajoen työkeskussäätiö" in text

    # Special categories need the explicit tick: without it the form comes back with the message by the box.
    narrowed = {"recipients": ["kisalli"], "categories": ["service_need_assessment"]}
    refused = browser.post(f"/portal/requests/{request_id}/review", narrowed)
    assert refused.status_code == 400
    body = refused.get_data(as_text=True)
    assert 'id="confirm_special-error"' in body
    assert re.search(r'id="confirm_special"[^>]*aria-describedby="confirm_special-hint confirm_special-error"', body)
    assert 'value="aurajoki-foundation"' in body and 'value="aurajoki-foundation" checked' not in body
    empty = browser.post(f"/portal/requests/{request_id}/review", {"confirm_special": "yes"})
    assert empty.status_code == 400 and 'id="recipients-error"' in empty.get_data(as_text=True)

    # The review shows the exact text; the grant stores the consent with the chosen terms only.
    review = browser.post(f"/portal/requests/{request_id}/review", narrowed | {"confirm_special": "yes"})
    assert review.status_code == 200
    assert re.search(r'name="text_sha256" value="[0-9a-f]{64}"', review.get_data(as_text=True))
    granted = grant(browser, request_id, narrowed | {"confirm_special": "yes"})
    consent_id = consent_id_of(granted)
    with env.broker.uow(write=False) as uow:
        consent = uow.session.get(ConsentRow, consent_id)
        assert consent is not None
        assert consent.recipients == ["kisalli"] and consent.categories == ["service_need_assessment"]
        assert consent.given_by == "person" and consent.method == "portal"

    permitted = disclose(env, "kisalli", mikko, "service_need_assessment", "multisector_planning")
    assert permitted.status_code == 200, permitted.get_json()
    assert permitted.get_json()["basis"]["consent_id"] == consent_id
    # Not the recipient that was unticked, not the category that was unticked.
    assert (
        disclose(env, "aurajoki-foundation", mikko, "service_need_assessment", "multisector_planning").status_code
        == 403
    )
    assert disclose(env, "kisalli", mikko, "health_check_summary", "service_delivery").status_code == 403

    # The consent page shows it, and the request can no longer be answered.
    shown = browser.get(f"/portal/consents/{consent_id}", headers={"Accept-Language": "en"})
    assert "Thank you. Your consent is now valid." in shown.get_data(as_text=True)
    again = browser.get(f"/portal/requests/{request_id}", headers={"Accept-Language": "en"})
    assert "This request can no longer be answered." in again.get_data(as_text=True)


def test_a_tampered_review_is_not_granted(env: Env, people: People) -> None:
    mikko = people.ids["mikko"]
    request_id = ask_consent(env, mikko)
    browser = log_in(env, "mikko")
    choices = {"recipients": ["kisalli"], "categories": ["service_need_assessment"], "confirm_special": "yes"}
    review = browser.post(f"/portal/requests/{request_id}/review", choices).get_data(as_text=True)
    digest = re.search(r'name="text_sha256" value="([0-9a-f]{64})"', review)
    assert digest
    # The reviewed hash, but wider terms than were reviewed.
    widened = choices | {
        "recipients": ["kisalli", "aurajoki-foundation"],
        "text_sha256": digest.group(1),
        "language": "fi",
    }
    response = browser.post(f"/portal/requests/{request_id}/grant", widened)
    assert response.status_code == 400
    with env.broker.uow(write=False) as uow:
        assert uow.session.scalars(select(ConsentRow).where(ConsentRow.person_id == mikko)).first() is None


def test_refusing_a_request_records_it_among_my_consents(env: Env, people: People) -> None:
    request_id = ask_consent(env, people.ids["mikko"])
    browser = log_in(env, "mikko")
    assert location(browser.post(f"/portal/requests/{request_id}/refuse")) == "/portal/"
    page = browser.get("/portal/consents", headers={"Accept-Language": "en"}).get_data(as_text=True)
    assert "Request from" in page and "You said no on" in page
    assert browser.post(f"/portal/requests/{request_id}/refuse").status_code == 409


# --- Withdrawing ---


def test_a_withdrawal_in_the_portal_stops_the_partner_at_once(
    env: Env, people: People, mikkos_things: dict[str, str]
) -> None:
    mikko = people.ids["mikko"]
    consent_id = mikkos_things["consent"]
    browser = log_in(env, "mikko")
    browser.client.set_cookie("broker_lang", "en")
    confirm = browser.get(f"/portal/consents/{consent_id}/withdraw", headers={"Accept-Language": "en"})
    text = confirm.get_data(as_text=True)
    assert confirm.status_code == 200
    assert "These organisations are told" in text and "Työllistämispalvelut Kisälli" in text
    assert "This continues, because a law allows it" in text
    done = browser.post(f"/portal/consents/{consent_id}/withdraw")
    assert location(done) == f"/portal/consents/{consent_id}"
    refused = disclose(env, "kisalli", mikko, "service_need_assessment", "multisector_planning")
    assert refused.status_code == 403 and refused.get_json()["code"] == "no_legal_basis"
    page = browser.get(f"/portal/consents/{consent_id}", headers={"Accept-Language": "en"}).get_data(as_text=True)
    assert "Your consent has been withdrawn." in page and "Withdraw this consent" not in page
    again = browser.post(f"/portal/consents/{consent_id}/withdraw")
    assert again.status_code == 409


# --- Acting for someone else ---


def test_a_custodian_acting_for_a_minor_grants_and_the_consent_records_both(env: Env, people: People) -> None:
    elias, leena = people.ids["elias"], people.ids["leena"]
    request_id = ask_consent(
        env, elias, recipients=["kisalli"], categories=["contact_details"], purposes=["service_referral"]
    )
    browser = log_in(env, "leena")
    acting = browser.get("/portal/acting", headers={"Accept-Language": "en"})
    assert "Elias Korhonen" in acting.get_data(as_text=True)
    # Leena's own pages first: Elias's request is not hers.
    assert browser.get(f"/portal/requests/{request_id}").status_code == 404
    assert browser.post("/portal/acting", {"person_id": people.ids["mikko"]}).status_code == 400
    assert location(browser.post("/portal/acting", {"person_id": elias})) == "/portal/"
    overview = browser.get("/portal/", headers={"Accept-Language": "en"}).get_data(as_text=True)
    assert "You are acting for Elias Korhonen" in overview and "custodian of a minor" in overview
    granted = grant(browser, request_id, {"recipients": ["kisalli"], "categories": ["contact_details"]})
    consent_id = consent_id_of(granted)
    with env.broker.uow(write=False) as uow:
        consent = uow.session.get(ConsentRow, consent_id)
        assert consent is not None
        assert consent.person_id == elias
        assert consent.given_by == "representative" and consent.representative_id == leena
        assert consent.mandate == "custodian"
    page = browser.get(f"/portal/consents/{consent_id}", headers={"Accept-Language": "en"}).get_data(as_text=True)
    assert "Given by" in page and "Leena Korhonen" in page
    # Back to herself: Elias's consent is no longer hers to see.
    assert location(browser.post("/portal/acting", {"person_id": "self"})) == "/portal/"
    assert browser.get(f"/portal/consents/{consent_id}").status_code == 404


# --- Who has seen my information, shared without consent, my data ---


def test_the_log_filters_and_pages(env: Env, people: People, mikkos_things: dict[str, str]) -> None:
    mikko = people.ids["mikko"]
    for _ in range(22):
        disclose(env, "aurajoki-foundation", mikko, "service_need_assessment", "multisector_planning")
    browser = log_in(env, "mikko")
    first = browser.get("/portal/log", headers={"Accept-Language": "en"}).get_data(as_text=True)
    assert "23 events" in first and "Page 1 of 2." in first and "Next page" in first
    assert 'aria-current="page"' in first
    second = browser.get("/portal/log?page=2", headers={"Accept-Language": "en"}).get_data(as_text=True)
    assert "Page 2 of 2." in second
    shared = browser.get("/portal/log?effect=permit", headers={"Accept-Language": "en"}).get_data(as_text=True)
    assert "One event" in shared and "Your consent" in shared
    by_org = browser.get("/portal/log?organisation=aurajoki-foundation&effect=deny", headers={"Accept-Language": "en"})
    assert "22 events" in by_org.get_data(as_text=True)
    bad = browser.get("/portal/log?since=31.3.2026", headers={"Accept-Language": "en"})
    assert bad.status_code == 400
    body = bad.get_data(as_text=True)
    assert 'id="since-error"' in body and 'aria-describedby="since-error"' in body
    assert browser.get("/portal/log?sort=desc").status_code == 400


def test_shared_without_consent_says_that_withdrawing_does_not_stop_it(
    env: Env, people: People, mikkos_things: dict[str, str]
) -> None:
    browser = log_in(env, "mikko")
    page = browser.get("/portal/statutory", headers={"Accept-Language": "en"}).get_data(as_text=True)
    assert "withdrawing a consent does not stop it" in page
    assert "381/2023" in page  # the statute of the multi-sector flow among the authorities that serve Mikko


def test_my_data_is_a_page_and_a_json_download(env: Env, people: People, mikkos_things: dict[str, str]) -> None:
    browser = log_in(env, "mikko")
    page = browser.get("/portal/my-data", headers={"Accept-Language": "en"})
    assert page.status_code == 200 and "Mikko Laine" in page.get_data(as_text=True)
    download = browser.get("/portal/my-data.json")
    assert download.status_code == 200 and download.mimetype == "application/json"
    assert download.headers["Content-Disposition"] == 'attachment; filename="my-data.json"'
    data = download.get_json()
    assert data["person"]["id"] == people.ids["mikko"]
    assert [c["id"] for c in data["consents"]] == [mikkos_things["consent"]]


# --- Labels and catalogues ---


def test_every_identifier_of_the_vocabulary_has_a_label() -> None:
    vocabulary = yaml.safe_load((ROOT / "policies" / "rules" / "vocabulary.yaml").read_text(encoding="utf-8"))
    roles = {role for entry in vocabulary["org_types"].values() for role in entry["roles"]}
    assert set(vocabulary["org_types"]) == set(labels.ORG_TYPES)
    assert roles == set(labels.ROLES)
    assert set(vocabulary["categories"]) == set(labels.CATEGORIES) == set(labels.CATEGORY_HINTS)
    assert set(vocabulary["purposes"]) == set(labels.PURPOSES)
    assert set(vocabulary["exceptions"]) == set(labels.EXCEPTIONS)
    assert set(persons.MANDATES) == set(labels.MANDATES)


def _extracted_messages() -> set[str | tuple[str, ...]]:
    with (ROOT / "babel.cfg").open(encoding="utf-8") as config:
        method_map, options_map = parse_mapping_cfg(config)
    keywords = {"_": None, "gettext": None, "ngettext": (1, 2), "_l": None, "lazy_gettext": None}
    found: set[str | tuple[str, ...]] = set()
    for _, _, message, _, _ in extract_from_dir(str(ROOT), method_map, options_map, keywords=keywords):
        found.add(tuple(message) if isinstance(message, tuple | list) else message)
    return found


@pytest.mark.parametrize("language", LANGUAGES)
def test_the_catalogue_translates_every_text_and_its_compiled_form_is_up_to_date(language: str) -> None:
    po_path = ROOT / "broker" / "translations" / language / "LC_MESSAGES" / "messages.po"
    with po_path.open("rb") as handle:
        catalogue = read_po(handle, locale=language)
    with po_path.with_suffix(".mo").open("rb") as handle:
        compiled = read_mo(handle)
    entries = {(tuple(m.id) if isinstance(m.id, list | tuple) else m.id): m for m in catalogue if m.id}
    missing = _extracted_messages() - set(entries)
    assert not missing, f"run `make translations`: {sorted(map(str, missing))[:5]}"
    for key, message in entries.items():
        strings = message.string if isinstance(message.string, tuple | list) else (message.string,)
        assert all(strings), f"{language}: no translation for {key!r}"
        assert not message.fuzzy, f"{language}: fuzzy translation for {key!r}"
        assert compiled.get(message.id) is not None, f"{language}: {key!r} is not compiled; run `make translations`"
        compiled_strings = compiled[message.id].string
        if isinstance(compiled_strings, list | tuple):
            compiled_strings = tuple(compiled_strings)
        assert compiled_strings == (tuple(strings) if len(strings) > 1 else strings[0]), (
            f"{language}: the .mo is out of date for {key!r}; run `make translations`"
        )


def test_when_the_mandate_ends_the_representative_is_back_to_acting_for_themself(
    env: Env, people: People, clock: FixedClock
) -> None:
    elias = people.ids["elias"]
    until = (clock.now() + timedelta(minutes=10)).isoformat()
    renewed = env.post(
        "varha-social-work",
        f"/persons/{elias}/representatives",
        {"hetu": people.hetus["leena"], "mandate": "custodian", "valid_until": until},
    )
    assert renewed.status_code == 201, renewed.get_json()
    browser = log_in(env, "leena")
    browser.client.set_cookie("broker_lang", "en")
    assert location(browser.post("/portal/acting", {"person_id": elias})) == "/portal/"
    assert "You are acting for Elias Korhonen" in browser.get("/portal/consents").get_data(as_text=True)
    clock.advance(minutes=11)
    assert location(browser.get("/portal/consents")) == "/portal/"
    page = browser.get("/portal/").get_data(as_text=True)
    assert "You can no longer act for this person." in page and "You are acting for" not in page


# --- Configuration ---


def test_production_has_no_portal_unless_its_openid_provider_is_configured(env: Env, settings: Settings) -> None:
    production = replace(settings, mode="production", issuer="https://broker.example")
    without = create_app(production, broker=env.broker).test_client()
    assert without.get("/portal/").status_code == 404
    configured = replace(
        production,
        oidc_metadata_url="https://idp.example/.well-known/openid-configuration",
        oidc_client_id="broker-portal",
        oidc_client_secret="s3cret",
    )
    app = create_app(configured, broker=env.broker)
    response = app.test_client().get("/portal/", base_url="https://broker.example")
    assert response.status_code == 200
    assert response.headers["Set-Cookie"].startswith("__Host-broker_portal=")
    config = app.extensions["portal"]
    assert config.trust_roles is False  # DPO access never comes from the citizen's identity provider
    assert config.provider.redirect_uri == "https://broker.example/portal/auth/callback"
    assert "form-action 'self' https://idp.example;" in response.headers["Content-Security-Policy"]
    assert "s3cret" not in repr(configured)


@pytest.mark.parametrize(
    ("env_vars", "error"),
    [
        ({"BROKER_OIDC_CLIENT_ID": "portal"}, "BROKER_OIDC_METADATA_URL"),
        ({"BROKER_OIDC_METADATA_URL": "https://idp.example/.well-known/openid-configuration"}, "CLIENT_ID"),
        (
            {
                "BROKER_OIDC_METADATA_URL": "http://idp.example/.well-known/openid-configuration",
                "BROKER_OIDC_CLIENT_ID": "p",
            },
            "https",
        ),
    ],
)
def test_a_half_configured_openid_provider_stops_a_production_start(env_vars: dict[str, str], error: str) -> None:
    base = {"BROKER_DATABASE_URL": "sqlite://", "BROKER_ISSUER": "https://broker.example"}
    with pytest.raises(ConfigurationError, match=error):
        Settings.from_env(base | env_vars)
    assert Settings.from_env(base).portal_enabled is False
    assert Settings.from_env(base | {"BROKER_MODE": "demo"}).portal_enabled is True
