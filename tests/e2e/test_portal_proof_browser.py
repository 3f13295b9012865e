"""The person's own proof, checked in a real browser (issue #5 item 8): Debian's Chromium driven by Playwright
against a served demo broker, whose sequencer thread places the entries and signs checkpoints.

- a demo person opens the proof of an event in "Who has seen my information" and verifies it in the browser
  (verify-proof.js: Web Crypto SHA-256 and Ed25519, nothing else), under the portal's strict
  Content-Security-Policy, with no console error;
- the same page, served with a tampered proof (a byte of the entry, a proof hash, the signature, the tree size,
  the key), says that it is not verified and which check failed;
- a browser without Ed25519 in Web Crypto is told to check the proof on the command line;
- the script's RFC 9162 §2.1.3.2 check against proofs built by the recursive RFC 9162 oracle
  (tests/oracle/rfc9162.py), for every position in trees of 1 to 17 entries, and against systematic tampering,
  each expecting its own failure.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

try:
    from axe_playwright_python.sync_playwright import Axe
    from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Page, Route, expect
except ImportError:  # pragma: no cover - the test extra installs both
    if os.environ.get("CI") == "true":
        raise
    pytest.skip(
        "playwright and axe-playwright-python are not installed: pip install -e '.[test]'", allow_module_level=True
    )

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.e2e.conftest import Served
from tests.oracle import rfc9162

pytestmark = pytest.mark.slow

expect.set_options(timeout=10_000)
PROOF_PATH = re.compile(r"/portal/log/[A-Za-z0-9._:-]+/proof$")
DATA_BLOCK = re.compile(r'(<script type="application/json" id="proof-bundle">)(.*?)(</script>)', re.S)


# --- The person's side ---


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    opened = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-US")
    try:
        yield opened
    finally:
        opened.close()


class Console:
    """Every console error and uncaught exception of a page: a CSP violation is reported as a console error."""

    def __init__(self, page: Page) -> None:
        self.errors: list[str] = []
        page.on("console", self._message)
        page.on("pageerror", lambda error: self.errors.append(f"uncaught: {error}"))

    def _message(self, message: ConsoleMessage) -> None:
        # The browser asks for /favicon.ico on its own; the portal has none.
        if message.type == "error" and not message.location.get("url", "").endswith("/favicon.ico"):
            self.errors.append(f"{message.text} ({message.location.get('url')})")


def log_in(page: Page, served: Served, login: str) -> None:
    """The front page → "Log in" → the identity provider's persona page → back to the portal."""
    page.goto(f"{served.base_url}/portal/")
    page.locator('main a[href="/portal/login"]').click()
    page.wait_for_url(re.compile(r"/dev-idp/authorize\?"))
    page.locator(f'button[name="persona"][value="{login}"]').click()
    page.wait_for_url(re.compile(r"/portal/$"))


def open_a_proof(page: Page, served: Served, row: int = 0) -> str:
    """From "Who has seen my information", the proof of one event; the demo's sequencer places new entries
    within about a second, so a proof still on its way is asked for again. Returns the proof page's path."""
    page.locator('nav.main-nav a[href="/portal/log"]').click()
    page.wait_for_url(re.compile(r"/portal/log$"))
    page.locator("main table tbody tr").nth(row).locator('a[href$="/proof"]').click()
    page.wait_for_url(PROOF_PATH)
    deadline = time.monotonic() + 15
    while page.locator("#proof-verify").count() == 0:
        assert time.monotonic() < deadline, "the proof did not become available"
        time.sleep(0.5)
        page.reload()
    return page.url.removeprefix(served.base_url)


def verify(page: Page) -> Any:
    """Press the button; the result is announced in the live region."""
    button = page.locator("#proof-verify")
    expect(button).to_be_visible()
    button.click()
    result = page.locator("#proof-result")
    expect(result).not_to_have_attribute("data-outcome", "checking")
    expect(result).to_have_attribute("data-outcome", re.compile(r"verified|failed|unsupported"))
    return result


def test_a_person_verifies_the_proof_of_a_disclosure_in_the_browser(served: Served, context: BrowserContext) -> None:
    page = context.new_page()
    console = Console(page)
    log_in(page, served, "mikko")
    path = open_a_proof(page, served)
    response = page.goto(served.base_url + path)
    assert response is not None and response.status == 200
    assert "script-src 'self'" in response.headers["content-security-policy"]
    expect(page.locator("main h1")).to_have_text("Proof of a log entry")
    result = verify(page)
    expect(result).to_have_attribute("data-outcome", "verified")
    expect(result).to_have_attribute("role", "status")
    expect(result).to_have_attribute("aria-live", "polite")
    expect(result).to_contain_text("Verified.")
    # The download is the same proof the page checked, minus the keys (given on the command line).
    shown = json.loads(page.locator("#proof-bundle").text_content() or "")
    with page.expect_download() as downloading:
        page.locator('a[href$="/proof.json"]').click()
    download = downloading.value
    assert download.suggested_filename == f"proof-{shown['index']}.json"
    saved = json.loads(download.path().read_text(encoding="utf-8"))
    assert saved == {k: shown[k] for k in ("entry", "index", "tree_size", "inclusion_proof", "checkpoint")}
    # Long hashes and keys wrap: at 320 px the page does not scroll sideways (WCAG 1.4.10).
    page.set_viewport_size({"width": 320, "height": 640})
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 320
    assert not console.errors, console.errors


@pytest.mark.parametrize("lang", ["fi", "sv", "en"])
def test_axe_finds_no_violations_on_the_proof_page_before_and_after_the_check(
    served: Served, browser: Browser, lang: str
) -> None:
    visitor = browser.new_context(viewport={"width": 1280, "height": 900}, locale=lang)
    try:
        page = visitor.new_page()
        log_in(page, served, "mikko")
        open_a_proof(page, served)
        expect(page.locator("html")).to_have_attribute("lang", lang)
        found = [f"before: {v['id']} ({v['impact']})" for v in Axe().run(page).response["violations"]]
        expect(verify(page)).to_have_attribute("data-outcome", "verified")
        found += [f"after: {v['id']} ({v['impact']})" for v in Axe().run(page).response["violations"]]
        assert not found, found
    finally:
        visitor.close()


# --- A tampered proof ---


def _flip(text: str, at: int) -> str:
    """Another base64 letter at `at` (one of the middle letters, so the spelling stays canonical)."""
    return text[:at] + ("A" if text[at] != "A" else "B") + text[at + 1 :]


def _tamper_entry(bundle: dict[str, Any]) -> None:
    entry = json.loads(bundle["entry"])
    # One letter of the purpose: the entry still reads as a valid entry, but it is not the one the log holds.
    bundle["entry"] = bundle["entry"].replace(f'"purpose":"{entry["purpose"]}"', f'"purpose":"{entry["purpose"]}x"')


def _tamper_signature(bundle: dict[str, Any]) -> None:
    text, signature_line = bundle["checkpoint"].rstrip("\n").rsplit("\n", 1)
    prefix, encoded = signature_line.rsplit(" ", 1)
    bundle["checkpoint"] = f"{text}\n{prefix} {_flip(encoded, 40)}\n"


def _another_key(bundle: dict[str, Any]) -> None:
    name = bundle["verifier_keys"][0].split("+", 1)[0]
    bundle["verifier_keys"] = [verifier_key(name, Ed25519PrivateKey.generate())]


TAMPERING: dict[str, tuple[Callable[[dict[str, Any]], None], str, str]] = {
    "a letter of the entry": (_tamper_entry, "root", "does not lead to the top hash"),
    "a hash of the inclusion proof": (
        lambda b: b["inclusion_proof"].__setitem__(0, _flip(b["inclusion_proof"][0], 10)),
        "root",
        "does not lead to the top hash",
    ),
    "the checkpoint's signature": (_tamper_signature, "signature", "signature on the checkpoint does not match"),
    "the tree size": (lambda b: b.__setitem__("tree_size", b["tree_size"] + 1), "size", "number of entries"),
    "a hash left out": (lambda b: b["inclusion_proof"].pop(), "proof", "wrong number of hashes"),
    "the key's key ID": (
        lambda b: b.__setitem__("verifier_keys", [re.sub(r"\+[0-9a-f]{8}\+", "+00000000+", b["verifier_keys"][0])]),
        "key",
        "key ID does not match",
    ),
    "another key": (_another_key, "no-signature", "no signature by the log key"),
}


@pytest.mark.parametrize("what", list(TAMPERING))
def test_a_tampered_proof_says_which_check_failed(served: Served, context: BrowserContext, what: str) -> None:
    tamper, step, words = TAMPERING[what]
    page = context.new_page()
    console = Console(page)
    log_in(page, served, "mikko")
    path = open_a_proof(page, served)

    def serve_tampered(route: Route) -> None:
        original = route.fetch()
        body = original.text()
        found = DATA_BLOCK.search(body)
        assert found, body
        bundle = json.loads(found.group(2))
        assert bundle["inclusion_proof"], "the demo's log holds more than one entry"
        tamper(bundle)
        # As the server writes the data block: JSON with <, > and & escaped, so it cannot end the element.
        data = json.dumps(bundle).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
        route.fulfill(response=original, body=body[: found.start(2)] + data + body[found.end(2) :])

    page.route(served.base_url + path, serve_tampered)
    page.goto(served.base_url + path)
    result = verify(page)
    expect(result).to_have_attribute("data-outcome", "failed")
    expect(result).to_have_attribute("data-step", step)
    expect(result).to_contain_text("Not verified.")
    expect(result).to_contain_text(words)
    assert not console.errors, console.errors


def test_a_browser_without_ed25519_is_pointed_to_the_command_line(served: Served, context: BrowserContext) -> None:
    page = context.new_page()
    # A browser whose Web Crypto has no Ed25519 rejects the key import with NotSupportedError.
    page.add_init_script(
        """
        const importKey = SubtleCrypto.prototype.importKey;
        SubtleCrypto.prototype.importKey = function (format, keyData, algorithm, ...rest) {
          const name = typeof algorithm === "string" ? algorithm : algorithm && algorithm.name;
          if (name === "Ed25519") return Promise.reject(new DOMException("no Ed25519", "NotSupportedError"));
          return importKey.call(this, format, keyData, algorithm, ...rest);
        };
        """
    )
    log_in(page, served, "mikko")
    open_a_proof(page, served)
    result = verify(page)
    expect(result).to_have_attribute("data-outcome", "unsupported")
    expect(result).to_contain_text("cannot check Ed25519 signatures")
    expect(page.locator("main pre code")).to_contain_text("python -m audit verify-entry")


# --- The script against proofs built here ---


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _key_id(name: str, key: Ed25519PrivateKey) -> bytes:
    # C2SP signed-note: SHA-256(name || 0x0A || 0x01 || public key)[:4].
    return hashlib.sha256(name.encode() + b"\n\x01" + key.public_key().public_bytes_raw()).digest()[:4]


def verifier_key(name: str, key: Ed25519PrivateKey) -> str:
    encoded = _b64(b"\x01" + key.public_key().public_bytes_raw())
    return f"{name}+{_key_id(name, key).hex()}+{encoded}"


def _signed(text: str, name: str, key: Ed25519PrivateKey) -> str:
    return f"{text}\n\u2014 {name} {_b64(_key_id(name, key) + key.sign(text.encode()))}\n"


ORIGIN = "proof-test.example/log"


def _entry(index: int, stated: int | None = None) -> str:
    return json.dumps({"event": "disclosure:permit", "index": index if stated is None else stated, "v": 1})


def _bundle(index: int, size: int, key: Ed25519PrivateKey, *, stated: int | None = None) -> dict[str, Any]:
    entries = [_entry(i, stated if i == index else None) for i in range(size)]
    data = [e.encode() for e in entries]
    text = f"{ORIGIN}\n{size}\n{_b64(rfc9162.mth(data))}\n"
    return {
        "entry": entries[index],
        "index": index,
        "tree_size": size,
        "inclusion_proof": [_b64(h) for h in rfc9162.path(index, data)],
        "checkpoint": _signed(text, ORIGIN, key),
        "verifier_keys": [verifier_key(ORIGIN, key)],
    }


def _vectors() -> list[tuple[str, dict[str, Any], set[str]]]:
    """(what, bundle, the steps that may fail: "ok" for none). Every position in trees of 1 to 17 entries, and
    tampering: bit flips, wrong index or size, truncation, an extra hash, malformed notes and checkpoints."""
    key, other = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    vectors: list[tuple[str, dict[str, Any], set[str]]] = []
    for size in range(1, 18):
        for index in range(size):
            good = _bundle(index, size, key)
            vectors.append((f"{index}/{size}", good, {"ok"}))
            changed = dict(good, entry=good["entry"].replace("permit", "permiT"))
            vectors.append((f"{index}/{size} entry changed", changed, {"root"}))
            for i in range(len(good["inclusion_proof"])):
                raw = bytearray(base64.b64decode(good["inclusion_proof"][i]))
                raw[i % 32] ^= 0x01
                proof = [*good["inclusion_proof"]]
                proof[i] = _b64(bytes(raw))
                vectors.append((f"{index}/{size} hash {i} flipped", dict(good, inclusion_proof=proof), {"root"}))
            if good["inclusion_proof"]:
                short = dict(good, inclusion_proof=good["inclusion_proof"][:-1])
                vectors.append((f"{index}/{size} truncated", short, {"proof"}))
            extra = dict(good, inclusion_proof=[*good["inclusion_proof"], _b64(b"\x07" * 32)])
            vectors.append((f"{index}/{size} extra hash", extra, {"proof"}))
            if size > 1:
                moved = dict(good, index=(index + 1) % size)
                vectors.append((f"{index}/{size} wrong index", moved, {"root", "proof"}))
            vectors.append((f"{index}/{size} index = size", dict(good, index=size), {"position"}))
            wrong_size = dict(good, tree_size=size + 1)
            vectors.append((f"{index}/{size} wrong size", wrong_size, {"size"}))
    good = _bundle(2, 5, key)
    text = good["checkpoint"].split("\n\n")[0] + "\n"
    line = good["checkpoint"].split("\n\n")[1]
    name_and_prefix, encoded = line.rstrip("\n").rsplit(" ", 1)
    sig = bytearray(base64.b64decode(encoded))
    sig[10] ^= 0x80
    cases: list[tuple[str, dict[str, Any], set[str]]] = [
        ("signature flipped", dict(good, checkpoint=f"{text}\n{name_and_prefix} {_b64(bytes(sig))}\n"), {"signature"}),
        ("signed by another key", dict(good, checkpoint=_signed(text, ORIGIN, other)), {"no-signature"}),
        (
            "an unknown signature beside the log's",
            dict(good, checkpoint=good["checkpoint"] + _signed(text, "elsewhere.example/x", other).split("\n\n")[1]),
            {"ok"},
        ),
        ("no blank line", dict(good, checkpoint=text + line), {"note"}),
        ("trailing garbage", dict(good, checkpoint=good["checkpoint"] + "garbage\n"), {"note"}),
        ("no final newline", dict(good, checkpoint=good["checkpoint"].rstrip("\n")), {"note"}),
        ("a control character", dict(good, checkpoint=good["checkpoint"].replace(ORIGIN, ORIGIN + "\t", 1)), {"note"}),
        (
            "leading zero in the size",
            dict(good, checkpoint=_signed(text.replace("\n5\n", "\n05\n"), ORIGIN, key)),
            {"checkpoint"},
        ),
        ("two lines", dict(good, checkpoint=_signed(f"{ORIGIN}\n5\n", ORIGIN, key)), {"checkpoint"}),
        (
            "another log's checkpoint",
            dict(
                good,
                checkpoint=_signed(text.replace(ORIGIN, "other.example/log"), ORIGIN, key),
            ),
            {"origin"},
        ),
        ("an entry naming another index", _bundle(3, 6, key, stated=4), {"entry"}),
        (
            "a key ID of another key",
            dict(good, verifier_keys=[verifier_key(ORIGIN, key).replace(_key_id(ORIGIN, key).hex(), "0badc0de")]),
            {"key"},
        ),
        ("no key", dict(good, verifier_keys=[]), {"bundle"}),
        (
            "a hash of 31 bytes",
            dict(good, inclusion_proof=[_b64(b"\0" * 31), *good["inclusion_proof"][1:]]),
            {"bundle"},
        ),
        ("unpadded base64", dict(good, inclusion_proof=[h.rstrip("=") for h in good["inclusion_proof"]]), {"bundle"}),
        ("index as text", dict(good, index="2"), {"bundle"}),
    ]
    return vectors + cases


def test_the_script_checks_rfc_9162_proofs_and_rejects_each_tampering_at_its_step(
    served: Served, context: BrowserContext
) -> None:
    page = context.new_page()
    log_in(page, served, "mikko")
    open_a_proof(page, served)
    vectors = _vectors()
    outcomes = page.evaluate(
        """async (bundles) => {
          const results = [];
          for (const bundle of bundles) {
            try {
              await ConsentBrokerProof.verifyBundle(bundle);
              results.push("ok");
            } catch (error) {
              results.push(error instanceof ConsentBrokerProof.ProofError ? error.step : `thrown: ${error}`);
            }
          }
          return results;
        }""",
        [bundle for _, bundle, _ in vectors],
    )
    wrong = [
        f"{what}: {got}, expected {sorted(expected)}"
        for (what, _, expected), got in zip(vectors, outcomes, strict=True)
        if got not in expected
    ]
    assert not wrong, f"{len(wrong)} of {len(vectors)}:\n" + "\n".join(wrong[:30])
