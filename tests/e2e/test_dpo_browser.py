"""The data-protection officer's workspace in a real browser (issue #5 item 7): Debian's Chromium driven by Playwright
against a served demo broker, with axe-core on every page.

The DPO logs in through the development identity provider, finds a person by identity code (posted, never in the
address), opens the person's log report and downloads it, reviews the use of a statutory exception that a partner
made over the API, checks the integrity of the log with "verify now", and sees the activity charts — all with
no script on any page.

The browser is the system's Chromium (tests/e2e/conftest.py: `browser`); the tests skip without it on a developer's
machine and fail without it in CI.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from typing import Any

import pytest

try:
    from axe_playwright_python.sync_playwright import Axe
    from playwright.sync_api import Browser, BrowserContext, Page, expect
except ImportError:  # pragma: no cover - the test extra installs both
    if os.environ.get("CI") == "true":
        raise
    pytest.skip(
        "playwright and axe-playwright-python are not installed: pip install -e '.[test]'", allow_module_level=True
    )

from tests.e2e.conftest import Served, partner_session
from tests.support import free_port

pytestmark = pytest.mark.slow

expect.set_options(timeout=10_000)
EXCEPTION = {"ground": "care_need_health_or_safety_at_risk", "justification": "Acute risk observed at the workplace."}


def _person(served: Served, login: str) -> dict[str, Any]:
    found: dict[str, Any] = next(p for p in served.demo["persons"] if p["login"] == login)
    return found


@pytest.fixture(scope="module")
def exception_use(served: Served) -> int:
    """The health centre receives Mikko's work assessment on a statutory exception, over the API: an item for the
    anomaly queue. Returns the entry's append id."""
    person_id = _person(served, "mikko")["person_id"]
    health = partner_session(served, "varha-health")
    api = f"{served.base_url}/api/v1"
    assert health.post(f"{api}/persons/{person_id}/relationships").status_code == 200
    answer = health.post(
        f"{api}/disclosures",
        json={
            "person_id": person_id,
            "category": "work_assessment",
            "purpose": "work_capacity_assessment",
            "exception": EXCEPTION,
        },
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["basis"]["kind"] == "exception"
    return int(answer.json()["audit_entry_id"])


@pytest.fixture(scope="module")
def pending_delivery(served: Served) -> str:
    """The health centre's system has registered an endpoint for consent events (on loopback, which demo mode allows,
    at a port where nothing answers), and Kisälli records a consent naming the health centre: a delivery waits for
    a worker (none runs beside `broker serve`). Returns the endpoint's id."""
    api = f"{served.base_url}/api/v1"
    health = partner_session(served, "varha-health")
    registered = health.post(
        f"{api}/webhooks", json={"url": f"http://127.0.0.1:{free_port()}/events", "events": ["consent.granted"]}
    )
    assert registered.status_code == 201, registered.text
    recorded = partner_session(served, "kisalli").post(
        f"{api}/consents",
        json={
            "person_id": _person(served, "sari")["person_id"],
            "recipients": ["varha-health"],
            "categories": ["work_assessment"],
            "purposes": ["work_capacity_assessment"],
            "method": "in_person",
            "witness": "Pekka Salo",
        },
    )
    assert recorded.status_code == 201, recorded.text
    return str(registered.json()["webhook_id"])


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context: BrowserContext = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-US")
    try:
        yield context.new_page()
    finally:
        context.close()


def violations(page: Page, where: str) -> list[str]:
    results = Axe().run(page)
    return [
        f"{where}: {violation['id']} ({violation['impact']}) at {', '.join(map(str, node['target']))}"
        for violation in results.response["violations"]
        for node in violation["nodes"]
    ]


def log_in_as_dpo(page: Page, served: Served) -> None:
    """The workspace sends the visitor to the portal's login, the identity provider's persona page, and back."""
    page.goto(f"{served.base_url}/dpo/")
    page.wait_for_url(re.compile(r"/dev-idp/authorize\?"))
    page.locator('button[name="persona"][value="dpo"]').click()
    page.wait_for_url(re.compile(r"/dpo/$"))


def go(page: Page, path: str) -> None:
    page.locator(f'nav.main-nav a[href="{path}"]').click()
    page.wait_for_url(re.compile(re.escape(path) + r"(\?.*)?$"))


def no_script(page: Page) -> None:
    assert page.locator("script").count() == 0
    assert page.evaluate("() => document.querySelectorAll('[style]').length") == 0


def test_the_dpo_searches_reports_reviews_and_verifies(
    served: Served, page: Page, exception_use: int, pending_delivery: str
) -> None:
    found: list[str] = []
    mikko = _person(served, "mikko")
    log_in_as_dpo(page, served)
    expect(page.locator("h1")).to_have_text("Data-protection officer's workspace")
    found += violations(page, "overview")

    # Search by identity code: the code is posted, and the results page is addressed by the person id.
    go(page, "/dpo/search")
    found += violations(page, "search form")
    page.locator("#hetu").fill(mikko["hetu"])
    page.locator('form[action="/dpo/search/person"] button[type="submit"]').click()
    page.wait_for_url(re.compile(r"/dpo/search\?person_id="))
    assert mikko["hetu"] not in page.url and mikko["person_id"] in page.url
    expect(page.locator("main table.log tbody tr").first).to_be_visible()
    expect(page.locator("main")).to_contain_text("Mikko")
    assert mikko["hetu"] not in page.content()
    no_script(page)
    found += violations(page, "search results")

    # An entry, and the professional behind it.
    page.locator(f'main a[href="/dpo/entries/{exception_use}"]').click()
    page.wait_for_url(re.compile(f"/dpo/entries/{exception_use}$"))
    expect(page.locator("pre.canonical")).to_contain_text('"event":"disclosure:permit"')
    page.locator(f'form[action="/dpo/entries/{exception_use}/actor"] button').click()
    expect(page.locator(".actor-id")).to_have_text("demo-varha-health-1")
    found += violations(page, "entry with the professional")

    # The person's log report, and its downloads.
    page.goto(f"{served.base_url}/dpo/search?person_id={mikko['person_id']}")
    page.locator(f'main a[href="/dpo/persons/{mikko["person_id"]}"]').click()
    page.wait_for_url(re.compile(f"/dpo/persons/{mikko['person_id']}$"))
    expect(page.locator("h1")).to_have_text("Log report")
    expect(page.locator("table.report").first).to_contain_text("Varha, Liedon terveysasema")
    found += violations(page, "report")
    page.locator("#special_reason").check()
    page.locator('main form.filters button[type="submit"]').click()
    page.wait_for_url(re.compile(r"special_reason=yes"))
    expect(page.locator("main")).to_contain_text("the whole log")
    with page.expect_download() as csv_download:
        page.locator('a[href$="report.csv?special_reason=yes"]').click()
    assert csv_download.value.suggested_filename == f"log-report-{mikko['person_id']}.csv"
    with page.expect_download() as pdf_download:
        page.locator('a[href$="report.pdf?special_reason=yes"]').click()
    pdf_path = pdf_download.value.path()
    with open(pdf_path, "rb") as handle:
        assert handle.read(5) == b"%PDF-"

    # The statutory exception waits in the anomaly queue; the DPO reviews it and it moves to "reviewed".
    go(page, "/dpo/anomalies")
    found += violations(page, "anomaly queue")
    item = f"/dpo/anomalies/{exception_use}/statutory_exception"
    page.locator(f'main a[href="{item}"]').click()
    page.wait_for_url(re.compile(re.escape(item) + "$"))
    page.locator('button[type="submit"]', has_text="Save the review").click()
    expect(page.locator(".error-summary")).to_be_visible()  # a note is required
    found += violations(page, "review with errors")
    page.locator("#note").fill("Called the physician: acute danger to the client. Justified under 703/2023 56 §.")
    page.locator("#outcome-justified").check()
    page.locator('button[type="submit"]', has_text="Save the review").click()
    page.wait_for_url(re.compile(r"/dpo/anomalies$"))
    expect(page.locator(".message.success")).to_contain_text("The review has been saved and logged.")
    assert page.locator(f'main a[href="{item}"]').count() == 0
    page.locator('nav.tabs a[href="/dpo/anomalies?tab=reviewed"]').click()
    expect(page.locator("main table")).to_contain_text("Justified under 703/2023 56 §.")
    found += violations(page, "reviewed items")

    # Integrity: verify now.
    go(page, "/dpo/integrity")
    page.locator('form[action="/dpo/integrity/verify"] button').click()
    page.wait_for_url(re.compile(r"/dpo/integrity$"))
    expect(page.locator(".message.success")).to_contain_text("The log was verified")
    expect(page.locator("main")).to_contain_text("In order")
    found += violations(page, "integrity")

    # The register and the charts.
    go(page, "/dpo/register")
    expect(page.locator("h1")).to_have_text("Record of processing activities")
    found += violations(page, "register")
    go(page, "/dpo/activity")
    expect(page.locator('svg[role="img"]')).to_have_count(2)
    no_script(page)
    found += violations(page, "activity")

    # The partners' event deliveries: the health centre's endpoint with its delivery waiting.
    go(page, "/dpo/deliveries")
    expect(page.locator("main")).to_contain_text(pending_delivery)
    no_script(page)
    found += violations(page, "deliveries")
    assert not found, f"{len(found)} axe-core violations:\n" + "\n".join(found)


@pytest.mark.parametrize("lang", ["fi", "sv"])
def test_the_workspace_speaks_finnish_and_swedish(served: Served, browser: Browser, lang: str) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale=lang)
    try:
        page = context.new_page()
        log_in_as_dpo(page, served)
        expect(page.locator("html")).to_have_attribute("lang", lang)
        headings = {"fi": "Tietosuojavastaavan työtila", "sv": "Dataskyddsombudets arbetsyta"}
        expect(page.locator("h1")).to_have_text(headings[lang])
        found = violations(page, f"[{lang}] overview")
        for path in (
            "/dpo/search",
            "/dpo/persons",
            "/dpo/anomalies",
            "/dpo/register",
            "/dpo/integrity",
            "/dpo/deliveries",
        ):
            go(page, path)
            expect(page.locator("html")).to_have_attribute("lang", lang)
            found += violations(page, f"[{lang}] {path}")
        assert not found, "\n".join(found)
    finally:
        context.close()


def test_a_client_cannot_open_the_workspace(served: Served, page: Page) -> None:
    page.goto(f"{served.base_url}/portal/")
    page.locator('main a[href="/portal/login"]').click()
    page.wait_for_url(re.compile(r"/dev-idp/authorize\?"))
    page.locator('button[name="persona"][value="mikko"]').click()
    page.wait_for_url(re.compile(r"/portal/$"))
    response = page.goto(f"{served.base_url}/dpo/")
    assert response is not None and response.status == 403
    expect(page.locator("h1")).to_have_text("No access")
