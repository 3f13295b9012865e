"""The person's own proof (issue #5 item 8; docs/portal.md, "The proof of an entry"): each event in "Who has seen
my information" offers its audit entry, the inclusion proof and the signed checkpoint, as a page and as the
download `python -m audit verify-entry` reads.

The bundle is checked here without the broker's audit package: the Ed25519 signature with `cryptography`, the
key ID and note format as C2SP signed-note writes them, and the inclusion proof against the recursive RFC 9162
oracle (tests/oracle/rfc9162.py: §2.1.1 MTH, §2.1.3.1 PATH) over every entry in the database. The download is
also checked with the offline verifier itself, `python -m audit verify-entry`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from markupsafe import escape
from sqlalchemy import select
from werkzeug.test import TestResponse

from audit import place_index
from audit.__main__ import main as verify_offline
from broker.adapters.orm import AuditEntryRow, AuditLeafRow, DisclosureRow
from broker.http.portal.proof import DOWNLOAD_MEMBERS
from broker.services import audit_read
from broker.services.sequencer import Sequencer
from tests.integration import test_portal as portal
from tests.integration.test_portal import Browser, People, deposit, disclose, location, log_in
from tests.oracle import rfc9162
from tests.support import Env

# The portal tests' people (Mikko, Sari, Elias and his custodian Leena) and their clock (the real present: the
# login checks the ID token's times against it).
clock = portal.clock
people = portal.people

EN = {"Accept-Language": "en"}
STAFF = re.compile(r"[a-z-]+-staff-\d+")  # the acting professionals' ids in tests/support.py assertions


@pytest.fixture
def mikkos_events(env: Env, people: People) -> dict[str, str]:
    """Two events in Mikko's log: Kisälli receives the decision on his work activity (a law allows it), and the
    Aurajoki foundation is refused his service-need assessment. Their entries are not yet in the tree."""
    mikko = people.ids["mikko"]
    env.serve(mikko, "kisalli", "varha-social-work", "turku-employment")
    deposit(env, "varha-social-work", mikko, "activity_decision")
    deposit(env, "turku-employment", mikko, "service_need_assessment")
    shared = disclose(env, "kisalli", mikko, "activity_decision", "service_delivery")
    assert shared.status_code == 200, shared.get_json()
    refused = disclose(env, "aurajoki-foundation", mikko, "service_need_assessment", "multisector_planning")
    assert refused.status_code == 403, refused.get_json()
    return {"permit": shared.get_json()["disclosure_id"], "deny": refused.get_json()["disclosure_id"]}


def sequence(env: Env) -> None:
    """What the sequencer thread of a served broker does within a second."""
    Sequencer(env.broker).run_once()


def entry_id_of(env: Env, disclosure_id: str) -> int:
    with env.broker.uow(write=False) as uow:
        found = uow.session.scalar(select(DisclosureRow.audit_entry_id).where(DisclosureRow.id == disclosure_id))
    assert found is not None
    return int(found)


def text_of(response: TestResponse) -> str:
    return response.get_data(as_text=True)


# --- An independent check of the bundle ---


def check_independently(env: Env, bundle: dict[str, Any]) -> None:
    """The signature, the key ID, the checkpoint and the inclusion proof, each recomputed from first principles."""
    # C2SP signed-note: <name>+<hex key ID>+base64(0x01 || key); the base64 may itself hold "+".
    [key_text] = bundle["verifier_keys"]
    name, key_id_hex, key_b64 = str(key_text).split("+", 2)
    raw = base64.b64decode(key_b64, validate=True)
    assert raw[0] == 0x01 and len(raw) == 33
    assert hashlib.sha256(name.encode() + b"\n\x01" + raw[1:]).digest()[:4].hex() == key_id_hex
    note = str(bundle["checkpoint"])
    split = note.rindex("\n\n")
    text, signature_lines = note[: split + 1], note[split + 2 :].splitlines()
    signed = [line for line in signature_lines if line.startswith(f"\u2014 {name} ")]
    assert len(signed) == 1
    signature = base64.b64decode(signed[0].rsplit(" ", 1)[1], validate=True)
    assert signature[:4].hex() == key_id_hex and len(signature) == 68
    Ed25519PublicKey.from_public_bytes(raw[1:]).verify(signature[4:], text.encode("utf-8"))  # raises if not
    # C2SP tlog-checkpoint: origin, size, root.
    origin, size_line, root_line = text.splitlines()[:3]
    assert origin == name
    assert int(size_line) == bundle["tree_size"]
    # Every leaf, recomputed from the stored bytes with each index put in (audit.place_index), and the tree they make.
    with env.broker.uow(write=False) as uow:
        stored = uow.session.execute(
            select(AuditLeafRow.idx, AuditEntryRow.entry, AuditEntryRow.split)
            .join(AuditEntryRow, AuditEntryRow.id == AuditLeafRow.entry_id)
            .where(AuditLeafRow.idx < int(size_line))
            .order_by(AuditLeafRow.idx)
        ).all()
    assert [idx for idx, _, _ in stored] == list(range(int(size_line)))
    entries = [place_index(bytes(entry), split, idx) for idx, entry, split in stored]
    assert base64.b64encode(rfc9162.mth(entries)).decode() == root_line
    index = int(bundle["index"])
    entry = str(bundle["entry"]).encode("utf-8")
    assert entry == entries[index]
    assert bundle["inclusion_proof"] == [base64.b64encode(h).decode() for h in rfc9162.path(index, entries)]
    assert json.loads(entry)["index"] == index


# --- The page and the download ---


def test_each_event_in_my_log_links_to_its_proof(env: Env, people: People, mikkos_events: dict[str, str]) -> None:
    sequence(env)
    page = text_of(log_in(env, "mikko").get("/portal/log", headers=EN))
    for disclosure_id in mikkos_events.values():
        assert f'href="/portal/log/{disclosure_id}/proof"' in page
    assert "<script" not in page  # the list itself still runs no script


def test_my_proof_page_shows_the_entry_its_position_and_the_signed_checkpoint(
    env: Env, people: People, mikkos_events: dict[str, str]
) -> None:
    sequence(env)
    bundle = audit_read.proof_bundle(env.broker, entry_id_of(env, mikkos_events["permit"]))
    assert bundle is not None
    response = log_in(env, "mikko").get(f"/portal/log/{mikkos_events['permit']}/proof", headers=EN)
    assert response.status_code == 200
    page = text_of(response)
    assert str(escape(bundle["entry"])) in page
    assert str(escape(bundle["checkpoint"])) in page
    assert all(node in page for node in bundle["inclusion_proof"])
    assert f"<dd>{bundle['index']}</dd>" in page and f"<dd>{bundle['tree_size']}</dd>" in page
    # In plain language: who, what, why, and that the employee is not named.
    for words in ("Information was shared", "Decision on rehabilitative work activity", "Not named."):
        assert words in page, words
    assert "Verify in this browser" in page
    assert f"python -m audit verify-entry proof-{bundle['index']}.json --key '{bundle['verifier_keys'][-1]}'" in page
    # The script that checks it, and the proof as data for it: the same bundle, nothing more.
    assert '<script src="/portal/static/verify-proof.js" defer></script>' in page
    data = re.search(r'<script type="application/json" id="proof-bundle">(.*?)</script>', page, re.S)
    assert data and json.loads(data.group(1)) == bundle
    assert len(re.findall(r"<script\b", page)) == 2


def test_only_the_proof_page_may_run_a_script_and_only_the_portals_own(
    env: Env, people: People, mikkos_events: dict[str, str]
) -> None:
    sequence(env)
    browser = log_in(env, "mikko")
    csp = browser.get(f"/portal/log/{mikkos_events['deny']}/proof").headers["Content-Security-Policy"]
    assert "script-src 'self';" in csp and "default-src 'none'" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp and "connect-src" not in csp
    for path in ("/portal/", "/portal/log", f"/portal/log/{mikkos_events['deny']}/proof.json"):
        assert "script-src" not in browser.get(path).headers["Content-Security-Policy"], path
    script = browser.get("/portal/static/verify-proof.js")
    assert script.status_code == 200 and script.mimetype in {"text/javascript", "application/javascript"}
    script.close()


def test_the_download_is_the_proof_bundle_that_verify_entry_reads(
    env: Env, people: People, mikkos_events: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sequence(env)
    browser = log_in(env, "mikko")
    for disclosure_id in mikkos_events.values():
        bundle = audit_read.proof_bundle(env.broker, entry_id_of(env, disclosure_id))
        assert bundle is not None
        download = browser.get(f"/portal/log/{disclosure_id}/proof.json")
        assert download.status_code == 200 and download.mimetype == "application/json"
        filename = f"proof-{bundle['index']}.json"
        assert download.headers["Content-Disposition"] == f'attachment; filename="{filename}"'
        assert download.get_json() == {name: bundle[name] for name in DOWNLOAD_MEMBERS}
        assert set(DOWNLOAD_MEMBERS) == {"entry", "index", "tree_size", "inclusion_proof", "checkpoint"}
        # The command the page shows, on the file as downloaded.
        (tmp_path / filename).write_bytes(download.get_data())
        assert verify_offline(["verify-entry", str(tmp_path / filename), "--key", bundle["verifier_keys"][-1]]) == 0
        assert capsys.readouterr().out.startswith(f"ok: entry {bundle['index']} is in ")


def test_the_proof_verifies_without_the_broker(env: Env, people: People, mikkos_events: dict[str, str]) -> None:
    sequence(env)
    browser = log_in(env, "mikko")
    for disclosure_id in mikkos_events.values():
        page = text_of(browser.get(f"/portal/log/{disclosure_id}/proof"))
        data = re.search(r'<script type="application/json" id="proof-bundle">(.*?)</script>', page, re.S)
        assert data
        check_independently(env, json.loads(data.group(1)))
    # A later event makes a bigger tree; the older event's proof is then against the newer checkpoint.
    disclose(env, "kisalli", people.ids["mikko"], "activity_decision", "service_delivery")
    sequence(env)
    later = json.loads(
        re.findall(
            r'<script type="application/json" id="proof-bundle">(.*?)</script>',
            text_of(browser.get(f"/portal/log/{mikkos_events['permit']}/proof")),
            re.S,
        )[0]
    )
    check_independently(env, later)


def test_the_proof_names_no_professional(env: Env, people: People, mikkos_events: dict[str, str]) -> None:
    """703/2023 74 §: the person sees the organisation, not the employee. The leaf holds the acting professional
    only as a salted commitment; the staff id is nowhere in what the person gets."""
    sequence(env)
    browser = log_in(env, "mikko")
    for disclosure_id in mikkos_events.values():
        page = text_of(browser.get(f"/portal/log/{disclosure_id}/proof"))
        download = text_of(browser.get(f"/portal/log/{disclosure_id}/proof.json"))
        entry = json.loads(json.loads(download)["entry"])
        assert re.fullmatch(r"[0-9a-f]{64}", entry["actor_commitment"])
        assert not STAFF.search(page) and not STAFF.search(download), disclosure_id
        assert "actor_id" not in entry and "actor" not in entry


# --- Not yet in the tree ---


def test_before_the_sequencer_has_placed_the_entry_the_page_says_the_proof_comes_in_a_moment(
    env: Env, people: People, mikkos_events: dict[str, str]
) -> None:
    browser = log_in(env, "mikko")
    response = browser.get(f"/portal/log/{mikkos_events['permit']}/proof", headers=EN)
    assert response.status_code == 200
    page = text_of(response)
    assert "The proof will be available in a moment" in page
    assert "<script" not in page and "script-src" not in response.headers["Content-Security-Policy"]
    download = browser.get(f"/portal/log/{mikkos_events['permit']}/proof.json", headers=EN)
    assert download.status_code == 503 and download.headers["Retry-After"] == "2"
    assert "The proof will be available in a moment" in text_of(download)
    sequence(env)
    assert "Verify in this browser" in text_of(browser.get(f"/portal/log/{mikkos_events['permit']}/proof", headers=EN))
    assert browser.get(f"/portal/log/{mikkos_events['permit']}/proof.json").status_code == 200


# --- Whose proof ---


def test_another_persons_proof_is_not_found(env: Env, people: People, mikkos_events: dict[str, str]) -> None:
    sequence(env)
    sari = log_in(env, "sari")
    for disclosure_id in (*mikkos_events.values(), "dis_doesnotexist", "not%20an%20id", "x" * 65):
        assert sari.get(f"/portal/log/{disclosure_id}/proof").status_code == 404, disclosure_id
        assert sari.get(f"/portal/log/{disclosure_id}/proof.json").status_code == 404, disclosure_id
    visitor = env.app.test_client()
    assert location(visitor.get(f"/portal/log/{mikkos_events['permit']}/proof")) == "/portal/login"
    assert location(visitor.get(f"/portal/log/{mikkos_events['permit']}/proof.json")) == "/portal/login"
    dpo = log_in(env, "dpo")
    assert location(dpo.get(f"/portal/log/{mikkos_events['permit']}/proof")) == "/portal/"


def test_a_custodian_sees_the_proof_of_the_child_only_while_acting_for_them(env: Env, people: People) -> None:
    elias = people.ids["elias"]
    env.serve(elias, "kisalli")
    refused = disclose(env, "kisalli", elias, "service_need_assessment", "multisector_planning")
    assert refused.status_code == 403, refused.get_json()
    disclosure_id = refused.get_json()["disclosure_id"]
    sequence(env)
    leena: Browser = log_in(env, "leena")
    assert leena.get(f"/portal/log/{disclosure_id}/proof").status_code == 404  # her own log: not hers
    assert location(leena.post("/portal/acting", {"person_id": elias})) == "/portal/"
    page = leena.get(f"/portal/log/{disclosure_id}/proof", headers=EN)
    assert page.status_code == 200 and "A request was refused" in text_of(page)
    assert leena.get(f"/portal/log/{disclosure_id}/proof.json").status_code == 200
    assert location(leena.post("/portal/acting", {"person_id": "self"})) == "/portal/"
    assert leena.get(f"/portal/log/{disclosure_id}/proof.json").status_code == 404


@pytest.mark.parametrize("language", ["fi", "sv", "en"])
def test_the_proof_page_renders_in_each_language_as_accessible_html(
    env: Env, people: People, mikkos_events: dict[str, str], language: str
) -> None:
    sequence(env)
    browser = log_in(env, "mikko")
    browser.client.set_cookie("broker_lang", language)
    for disclosure_id in mikkos_events.values():
        text = text_of(browser.get(f"/portal/log/{disclosure_id}/proof"))
        assert f'<html lang="{language}">' in text
        assert len(re.findall(r"<h1[ >]", text)) == 1 and "style=" not in text
        assert '<a class="skip-link" href="#main">' in text and '<main id="main"' in text
        assert 'id="proof-result" role="status" aria-live="polite"' in text
        assert re.search(r'<button type="button" id="proof-verify" hidden>', text)
