"""The access matrix of the partner API, generated from its OpenAPI document: every documented operation, called
by every kind of caller, on every kind of object, gets exactly the status the matrix below names — so no 2xx that
the matrix does not expect — and every 2xx answer carries only documented fields and, where it discloses record
content, only the fields of the allow-list of the policy rule that permitted it (DESIGN.md invariants 1 and 4).

An operation that the document lists and `MATRIX` does not fails `test_every_documented_operation_is_in_the_matrix`
by name: adding an endpoint without deciding here who may call it, on what, fails the build.

**Callers.** Three partner organisations, chosen per operation group:

- *right* — the organisation whose objects these are. For the partner operations Kisälli (employment services): it
  serves the person, the person's consent to its receiving their health-check summary names it (flow F8,
  policies/rules/health.yaml; recorded by the health centre, which keeps the summary), and its inbox holds a notice.
  For the audit log's operations the DPO's system.
- *no basis* — a partner that takes part in the person's service but lacks the basis for the object: Varha's
  adult social work serves the person and is an organisation type F8 admits, but no consent names it, and it is
  named in no consent and addressed by no notice of the matrix. For the audit operations, the same organisation's
  case system, which lacks the `audit:read` scope the DPO's system holds.
- *other type* — an organisation type that no rule gives the object and that does not serve the person: the demo
  employer (for the audit operations, Kisälli).

— and the callers whose credentials must fail, on every operation, whatever the object:

- *dpo* — the DPO's system (scope `audit:read` only): 403 on every partner operation but the FHIR AuditEvent
  search and read, which it reads in full; the right caller of the audit log's.
- *anonymous* — no `Authorization` at all.
- *expired* — the right partner's token after the clock has moved past its lifetime (`access_token_ttl`).
- *revoked* — the right partner's token after the partner revoked it (`POST /oauth/revoke`, RFC 7009).
- *no proof* — the right partner's DPoP-bound token without the DPoP proof it is bound to (RFC 9449 §7.1).
- *portal token*, *client assertion* — tokens of another audience. The broker's access tokens are opaque
  references with no `aud` claim to compare: the audience of an opaque token is where it was issued for. So the
  honest equivalents are credentials this very deployment issued for something else: an access token the
  development OpenID provider (mounted in the same application in test mode, broker/devidp) issued to the
  portal's OpenID client for its userinfo endpoint — shown to work there first — and the partner's own RFC 7523
  client assertion, a JWT whose audience is the token endpoint (the issuer identifier), presented as if it were
  an access token. Each is sent as a partner would send its own token: `Authorization: DPoP …` with a valid proof
  bound to it.

One operation is public and answers every caller alike, credentials or none: the FHIR capability statement
(`GET /api/v1/fhir/metadata`), which says how to authenticate (R4 http.html#capabilities).

**Objects**, named from the right partner's point of view: *own* (the person it serves with a basis, its consent,
its notice, a disclosure made to it, an existing log position), *another person's* (a person none of the three
partners serves, a consent, a notice and a disclosure that name none of them) and *non-existent* (an id no object
has). An operation that addresses no object (the inbox, the newest checkpoint) has only *own*.

The world is built once per backend for the module; an operation that changes its object (ending a relationship,
withdrawing a consent, recording a consent or a record) gets a fresh object for each case, so the cases do not
depend on their order.

Besides the allow-lists, the matrix states what the API lets any partner do today, on any known person: look up
an identity code, declare that it serves the person, ask the person for consent and deposit a record — each logged,
none disclosing anything by itself — and record a consent given in person or on paper, which names the professional
who recorded it and, naming the recorder's own organisation as recipient, opens what the policy allows on consent.
"""

from __future__ import annotations

import base64
import html
import re
import secrets
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from sqlalchemy import select
from werkzeug.test import TestResponse

from broker.adapters.orm import NoticeRow
from broker.demo import DPO_PARTNER
from broker.devidp import PORTAL_CLIENT_ID, portal_client_settings, portal_redirect_uri
from broker.services.notices import NOTICE_KINDS
from broker.services.sequencer import Sequencer, read_head
from policies import Policy
from schemas.records.examples import EXAMPLES
from tests.integration.module_env import BACKENDS, open_module_env
from tests.support import DpopSigner, Env, new_hetu

# --- callers and objects -------------------------------------------------------------------------------------------

RIGHT, NO_BASIS, OTHER_TYPE, DPO = "right", "no_basis", "other_type", "dpo"
ANONYMOUS, EXPIRED, REVOKED, NO_PROOF = "anonymous", "expired", "revoked", "no_proof"
PORTAL_TOKEN, CLIENT_ASSERTION = "portal_token", "client_assertion"
CALLERS = (RIGHT, NO_BASIS, OTHER_TYPE, DPO, ANONYMOUS, EXPIRED, REVOKED, NO_PROOF, PORTAL_TOKEN, CLIENT_ASSERTION)
#: Callers whose credentials never authenticate: 401 on every operation, before anything is looked at.
UNAUTHENTICATED = (ANONYMOUS, EXPIRED, REVOKED, NO_PROOF, PORTAL_TOKEN, CLIENT_ASSERTION)

OWN, OTHER, MISSING = "own", "other", "missing"

PARTNER_CALLERS = {RIGHT: "kisalli", NO_BASIS: "varha-social-work", OTHER_TYPE: "demo-employer", DPO: DPO_PARTNER}
AUDIT_CALLERS = {RIGHT: DPO_PARTNER, NO_BASIS: "varha-social-work", OTHER_TYPE: "kisalli", DPO: DPO_PARTNER}

#: The flow the matrix's disclosures rest on: F8, the health-check summary to employment services on the person's
#: explicit consent, without the physician's notes.
CATEGORY, PURPOSE = "health_check_summary", "service_delivery"
MISSING_PERSON = "per_" + "0" * 32
MISSING_CONSENT = "con_" + "0" * 32
MISSING_NOTICE = "not_" + "0" * 32
MISSING_DISCLOSURE = "dis_" + "0" * 32
BEYOND_THE_LOG = 2**62
#: What the broker's own notice of a withdrawn consent holds (broker/services/notices.py): the consent's terms.
WITHDRAWAL_NOTICE_FIELDS = {"consent_id", "withdrawn_at", "categories", "purposes"}


@dataclass(frozen=True)
class Call:
    method: str
    path: str  # with its query, if any
    body: Any = None


@dataclass
class World:
    env: Env
    document: dict[str, Any]
    person: str  # served by Kisälli, social work and the health centre; Kisälli may see its health-check summary
    person_hetu: str
    other_person: str  # served only by the health centre
    other_hetu: str
    consent: str  # the consent of `person` naming Kisälli, the basis of the F8 disclosures
    other_consent: str  # the health centre's consent of `other_person`
    notice: str  # in Kisälli's inbox
    other_notice: str  # in the employment authority's inbox
    served_by_kisalli: str  # served by Kisälli alone; mandates are registered for this person
    representative_hetu: str
    tree_size: int
    portal_token: str
    webhook: str  # Kisälli's webhook endpoint
    other_webhook: str  # the health centre's
    disclosure: str  # the health-check summary of `person` disclosed to Kisälli (F8)
    other_disclosure: str  # the health centre's own request about `other_person`

    @property
    def policy(self) -> Policy:
        return self.env.broker.policy

    def fresh_person(self, *serving: str) -> str:
        person_id = self.env.person(serving[0])
        self.env.serve(person_id, *serving)
        return person_id

    def fresh_consent(self) -> str:
        """A consent of a fresh person whom Kisälli serves, recorded by the health centre and naming Kisälli."""
        return record_consent(self.env, "varha-health", self.fresh_person("kisalli", "varha-health"), ["kisalli"])

    def fresh_withdrawal(self) -> str:
        """A fresh consent under which Kisälli received the health-check summary (F8), then withdrawn at the health
        centre: Kisälli is asked to attest what it did with the data (docs/withdrawal.md)."""
        person_id = self.fresh_person("kisalli", "varha-health")
        deposit = {"person_id": person_id, "category": CATEGORY, "content": EXAMPLES[CATEGORY]}
        assert self.env.post("varha-health", "/records", deposit).status_code == 201
        consent_id = record_consent(self.env, "varha-health", person_id, ["kisalli"])
        ask = {"person_id": person_id, "category": CATEGORY, "purpose": PURPOSE}
        assert self.env.post("kisalli", "/disclosures", ask).status_code == 200
        withdrawn = self.env.post("varha-health", f"/consents/{consent_id}/withdraw", {"reason": "asked"})
        assert withdrawn.status_code == 200, withdrawn.get_json()
        return consent_id


def register_webhook(env: Env, org: str) -> str:
    """A webhook endpoint of `org` at a loopback port where nothing listens: a test call to it is answered 200 with
    `delivered: false` (docs/webhooks.md)."""
    body = {"url": f"http://127.0.0.1:9/events/{secrets.token_hex(8)}", "events": ["consent.withdrawn"]}
    response = env.post(org, "/webhooks", body)
    assert response.status_code == 201, response.get_json()
    webhook_id: str = response.get_json()["webhook_id"]
    return webhook_id


def record_consent(env: Env, org: str, person_id: str, recipients: list[str], category: str = CATEGORY) -> str:
    purpose = PURPOSE if category == CATEGORY else "work_capacity_assessment"
    body = {
        "person_id": person_id,
        "recipients": recipients,
        "categories": [category],
        "purposes": [purpose],
        "method": "in_person",
        "witness": "Pekka Salo",
    }
    response = env.post(org, "/consents", body)
    assert response.status_code == 201, response.get_json()
    consent_id: str = response.get_json()["consent_id"]
    return consent_id


def send_notice(env: Env, sender: str, person_id: str, recipient: str) -> str:
    body = {
        "person_id": person_id,
        "kind": "interruption_notice",
        "recipient": recipient,
        "content": EXAMPLES["interruption_notice"],
    }
    response = env.post(sender, "/notices", body)
    assert response.status_code == 201, response.get_json()
    notice_id: str = response.get_json()["notice_id"]
    return notice_id


def request_disclosure(env: Env, org: str, person_id: str) -> str:
    """`org` asks for the person's health-check summary: the id of the decided request, permitted (200) or refused
    (403, the problem names it) — a disclosure in the log either way."""
    body = {"person_id": person_id, "category": CATEGORY, "purpose": PURPOSE}
    response = env.post(org, "/disclosures", body)
    assert response.status_code in (200, 403), response.get_json()
    disclosure_id: str = response.get_json()["disclosure_id"]
    return disclosure_id


def portal_access_token(env: Env) -> str:
    """An access token of the portal's OpenID client, from a real authorization-code flow with PKCE at the
    development provider (logged in as its DPO persona, which needs no demo data)."""
    settings = env.broker.settings
    verifier = secrets.token_urlsafe(48)
    params = {
        "response_type": "code",
        "client_id": PORTAL_CLIENT_ID,
        "redirect_uri": portal_redirect_uri(settings),
        "scope": "openid",
        "state": secrets.token_urlsafe(16),
        "nonce": secrets.token_urlsafe(16),
        "code_challenge": create_s256_code_challenge(verifier),
        "code_challenge_method": "S256",
    }
    page = env.client.get(f"/dev-idp/authorize?{urlencode(params)}")
    text = page.get_data(as_text=True)
    action = re.search(r'<form method="post" action="([^"]+)"', text)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', text)
    assert page.status_code == 200 and action and csrf, text
    chosen = env.client.post(
        html.unescape(action.group(1)), data={"csrf_token": html.unescape(csrf.group(1)), "persona": "dpo"}
    )
    assert chosen.status_code == 302, chosen.get_data(as_text=True)
    code = parse_qs(urlsplit(chosen.headers["Location"]).query)["code"][0]
    registration = portal_client_settings(settings)
    basic = base64.b64encode(f"{registration['client_id']}:{registration['client_secret']}".encode()).decode()
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": params["redirect_uri"],
        "code_verifier": verifier,
    }
    granted = env.client.post("/dev-idp/token", data=form, headers={"Authorization": f"Basic {basic}"})
    assert granted.status_code == 200, granted.get_data(as_text=True)
    token: str = granted.get_json()["access_token"]
    # A token that works where it belongs: refused by the partner API for its audience, not for being broken.
    info = env.client.get("/dev-idp/userinfo", headers={"Authorization": f"Bearer {token}"})
    assert info.status_code == 200, info.get_data(as_text=True)
    return token


@pytest.fixture(scope="module", params=BACKENDS)
def world(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    folder: Path = tmp_path_factory.mktemp("matrix")
    with open_module_env(folder, request.param) as env:
        person_hetu, other_hetu = new_hetu(), new_hetu()
        person = env.person("kisalli", person_hetu)
        env.serve(person, "kisalli", "varha-social-work", "varha-health")
        other_person = env.person("varha-health", other_hetu)
        env.serve(other_person, "varha-health")
        for person_id in (person, other_person):
            deposit = {"person_id": person_id, "category": CATEGORY, "content": EXAMPLES[CATEGORY]}
            response = env.post("varha-health", "/records", deposit)
            assert response.status_code == 201, response.get_json()
        # The consent is recorded where the record is kept — the health centre, which discloses under it.
        consent = record_consent(env, "varha-health", person, ["kisalli"])
        other_consent = record_consent(env, "varha-health", other_person, ["varha-health"], "work_assessment")
        # The broker tells Kisälli when a consent naming it is withdrawn by another organisation: Kisälli's notice.
        withdrawn = record_consent(env, "varha-health", person, ["kisalli", "varha-health"], "work_assessment")
        response = env.post("varha-health", f"/consents/{withdrawn}/withdraw", {"reason": "the person asked"})
        assert response.status_code == 200, response.get_json()
        with env.broker.uow(write=False) as uow:
            notice = uow.session.scalars(select(NoticeRow.id).where(NoticeRow.recipient_org == "kisalli")).one()
        # Social work's inbox gets an F5 notice (its content is checked against F5's allow-list when listed); the
        # employment authority's an F6 one, about a person no caller serves.
        send_notice(env, "kisalli", person, "varha-social-work")
        other_notice = send_notice(env, "kisalli", other_person, "turku-employment")
        served_by_kisalli = env.person("kisalli")
        env.serve(served_by_kisalli, "kisalli")
        # Disclosures, for the FHIR AuditEvent read: Kisälli's F8 request, and one none of the callers made or got.
        disclosure = request_disclosure(env, "kisalli", person)
        other_disclosure = request_disclosure(env, "varha-health", other_person)
        # The no-proof cases mean something only if the broker binds its tokens to the partner's DPoP key.
        _, token_type = fresh_token(env, "kisalli")
        assert token_type == "DPoP", f"access tokens are issued as {token_type!r}, not bound to a DPoP key"
        Sequencer(env.broker).run_once()  # a signed checkpoint and tree positions for the audit operations
        with env.broker.uow(write=False) as uow:
            head = read_head(uow)
        assert head is not None and head.size > 0
        yield World(
            env=env,
            document=env.client.get("/api/v1/openapi.json").get_json(),
            person=person,
            person_hetu=person_hetu,
            other_person=other_person,
            other_hetu=other_hetu,
            consent=consent,
            other_consent=other_consent,
            notice=notice,
            other_notice=other_notice,
            served_by_kisalli=served_by_kisalli,
            representative_hetu=new_hetu(),
            tree_size=head.size,
            portal_token=portal_access_token(env),
            webhook=register_webhook(env, "kisalli"),
            other_webhook=register_webhook(env, "varha-health"),
            disclosure=disclosure,
            other_disclosure=other_disclosure,
        )


# --- the checks of a 2xx answer, beyond its documented fields ------------------------------------------------------


def allow_list(world: World, basis: Mapping[str, Any] | None, category: str) -> set[str]:
    """The fields the rule named in `basis` lets through for `category`."""
    assert basis is not None and basis.get("rule"), f"a disclosure without the rule that permitted it: {basis}"
    return set(world.policy.rule(basis["rule"]).fields[category])


def check_disclosure(world: World, org: str, body: Any) -> None:
    assert body["category"] == CATEGORY and body["records"], "the matrix's disclosure must carry records"
    for record in body["records"]:
        allowed = allow_list(world, record["basis"], record["category"])
        assert set(record["content"]) <= allowed, f"{set(record['content']) - allowed} outside rule {record['basis']}"


def check_decision(world: World, org: str, body: Any) -> None:
    if body["effect"] == "permit":
        assert set(body["fields"]) <= allow_list(world, body["basis"], CATEGORY)
    else:
        assert body["effect"] == "deny" and body["basis"] is None and body["fields"] == []


def check_notice_sent(world: World, org: str, body: Any) -> None:
    category, _ = NOTICE_KINDS[body["kind"]]
    assert set(body["fields"]) <= allow_list(world, body["basis"], category)


def check_notices(world: World, org: str, body: Any) -> None:
    notices = body if isinstance(body, list) else [body]
    with world.env.broker.uow(write=False) as uow:
        addressed = set(uow.session.scalars(select(NoticeRow.id).where(NoticeRow.recipient_org == org)))
    for notice in notices:
        assert notice["notice_id"] in addressed, f"{org} was shown notice {notice['notice_id']} addressed elsewhere"
        if notice["basis"] is None:  # the broker's own notice of a withdrawal: the consent's terms, no record
            assert set(notice["content"]) <= WITHDRAWAL_NOTICE_FIELDS
        else:
            category, _ = NOTICE_KINDS[notice["kind"]]
            allowed = allow_list(world, notice["basis"], category)
            assert set(notice["content"]) <= allowed, f"{set(notice['content']) - allowed} outside {notice['basis']}"


def check_consents(world: World, org: str, body: Any) -> None:
    for consent in body if isinstance(body, list) else [body]:
        assert org == consent["requester"] or org in consent["recipients"], f"{org} was shown {consent['consent_id']}"


def _fhir_orgs(references: Any) -> set[str]:
    return {ref["identifier"]["value"] for ref in references if ref.get("type") == "Organization"}


def check_fhir_consents(world: World, org: str, body: Any) -> None:
    """A FHIR Consent names its requester as `organization` and its recipients as the provision's actors."""
    for entry in body.get("entry", []):
        consent = entry["resource"]
        named = _fhir_orgs(consent["organization"]) | _fhir_orgs(a["reference"] for a in consent["provision"]["actor"])
        assert org in named, f"{org} was shown {consent['id']}"


def check_fhir_audit_events(world: World, org: str, body: Any) -> None:
    """A partner sees the disclosures made to its organisation or by its own system; the DPO's system all."""
    if org == DPO_PARTNER:
        return
    for entry in body.get("entry", []):
        event = entry["resource"]
        recipients = _fhir_orgs(a["who"] for a in event["agent"] if a["type"]["coding"][0]["code"] == "110152")
        systems = {
            a["who"]["identifier"]["value"] for a in event["agent"] if a["type"]["coding"][0]["code"] == "110150"
        }
        assert org in recipients | systems, f"{org} was shown {event['id']}"


def check_fhir_consent(world: World, org: str, body: Any) -> None:
    check_fhir_consents(world, org, {"entry": [{"resource": body}]})


def check_fhir_audit_event(world: World, org: str, body: Any) -> None:
    check_fhir_audit_events(world, org, {"entry": [{"resource": body}]})


# --- the matrix ----------------------------------------------------------------------------------------------------

# (world, object kind, whether the request is expected to change its object) → the request
Build = Callable[[World, str, bool], Call]
Check = Callable[[World, str, Any], None]


def every(status: int, *kinds: str) -> dict[str, int]:
    return dict.fromkeys(kinds or (OWN, OTHER, MISSING), status)


@dataclass(frozen=True)
class Operation:
    build: Build  # the request on an object of the given kind; a fresh object when the request is to change it
    # Statuses of the right, no-basis and other-type callers by object kind; the objects the operation takes are
    # the right caller's keys. The DPO gets 403 on a partner operation, the right caller's status on the log's.
    expect: Mapping[str, Mapping[str, int]]
    audit: bool = False  # an operation of the audit log (scope audit:read): the right caller is the DPO's system
    check: Check | None = None  # what a 2xx answer must also satisfy
    # The DPO's statuses by object kind, for a partner operation that DPO systems may call too (its part of the
    # answer differs); None: 403, as on every other partner operation.
    dpo: Mapping[str, int] | None = None
    public: bool = False  # needs no credentials: every caller gets the right caller's status, whatever it sends

    @property
    def objects(self) -> tuple[str, ...]:
        return tuple(self.expect[RIGHT])

    def status(self, caller: str, kind: str) -> int:
        if self.public:
            return self.expect[RIGHT][kind]
        if caller in UNAUTHENTICATED:
            return 401
        if caller == DPO:
            if self.dpo is not None:
                return self.dpo[kind]
            return self.expect[RIGHT][kind] if self.audit else 403
        return self.expect[caller][kind]


def _persons(world: World, kind: str) -> str:
    return {OWN: world.person, OTHER: world.other_person, MISSING: MISSING_PERSON}[kind]


def _fresh(world: World, kind: str, fresh: bool) -> str:
    """A person served by Kisälli (own) or by the health centre only (another person's): a fresh one when the
    request is expected to change it, else the world's."""
    if kind == MISSING or not fresh:
        return _served_by_kisalli(world, kind)
    return world.fresh_person("kisalli" if kind == OWN else "varha-health")


def _ask(world: World, kind: str, path: str) -> Call:
    return Call("POST", path, {"person_id": _persons(world, kind), "category": CATEGORY, "purpose": PURPOSE})


def _hetu(world: World, kind: str) -> str:
    # A code never seen before: the look-up creates the person.
    return {OWN: world.person_hetu, OTHER: world.other_hetu}.get(kind) or new_hetu()


CONSENT_TERMS = {"recipients": ["kisalli"], "categories": [CATEGORY], "purposes": [PURPOSE]}


def _withdrawable(world: World, kind: str, fresh: bool) -> str:
    """Withdrawing changes the consent: a fresh one when the withdrawal is expected to succeed."""
    return world.fresh_consent() if kind == OWN and fresh else _consent(world, kind)


def _consent(world: World, kind: str) -> str:
    return {OWN: world.consent, OTHER: world.other_consent, MISSING: MISSING_CONSENT}[kind]


def _attestable(world: World, kind: str, fresh: bool) -> str:
    """Attesting answers the question once: a fresh withdrawal when the attestation is expected to succeed."""
    return world.fresh_withdrawal() if kind == OWN and fresh else _consent(world, kind)


def check_attestations(world: World, org: str, body: Any) -> None:
    for attestation in body if isinstance(body, list) else [body]:
        assert attestation["organisation"] == org, f"{org} was shown {attestation['attestation_id']}"


def _webhook(world: World, kind: str, fresh: bool = False) -> str:
    """Disabling changes the endpoint: a fresh one when the request is expected to succeed."""
    if kind == OWN and fresh:
        return register_webhook(world.env, "kisalli")
    return {OWN: world.webhook, OTHER: world.other_webhook, MISSING: "whk_" + "0" * 32}[kind]


def check_organisation(world: World, org: str, body: Any) -> None:
    """Endpoints, deliveries and events each name the organisation they belong to: the caller's own."""
    if isinstance(body, dict) and "webhook_id" not in body:  # a page of deliveries or of events
        body = body["deliveries"] if "deliveries" in body else body["events"]
    for item in body if isinstance(body, list) else [body]:
        assert item["organisation"] == org, f"{org} was shown {item}"


def _disclosure(world: World, kind: str) -> str:
    return {OWN: world.disclosure, OTHER: world.other_disclosure, MISSING: MISSING_DISCLOSURE}[kind]


def _fhir_id(broker_id: str) -> str:
    # A FHIR id cannot hold "_" (R4 datatypes.html#id): a resource's id is the broker's with "-" (services/fhir.py).
    return broker_id.replace("_", "-")


def _notice(world: World, kind: str) -> str:
    return {OWN: world.notice, OTHER: world.other_notice, MISSING: MISSING_NOTICE}[kind]


def _served_by_kisalli(world: World, kind: str) -> str:
    return {OWN: world.served_by_kisalli, OTHER: world.other_person, MISSING: MISSING_PERSON}[kind]


V1 = "/api/v1"
MATRIX: dict[tuple[str, str], Operation] = {
    # Any partner turns any identity code into the person's opaque id; a code seen for the first time creates the
    # person. The answer is an id, nothing about the person, and each look-up is logged (person:resolve).
    ("POST", f"{V1}/persons/resolve"): Operation(
        build=lambda w, kind, fresh: Call("POST", f"{V1}/persons/resolve", {"hetu": _hetu(w, kind)}),
        expect={RIGHT: every(200), NO_BASIS: every(200), OTHER_TYPE: every(200)},
    ),
    # A partner declares that it serves a person (logged as relationship:start); only an unknown person is refused.
    ("POST", f"{V1}/persons/{{person_id}}/relationships"): Operation(
        build=lambda w, kind, fresh: Call("POST", f"{V1}/persons/{_fresh(w, kind, fresh)}/relationships"),
        expect={RIGHT: every(200, OWN, OTHER) | every(404, MISSING)}
        | {caller: every(200, OWN, OTHER) | every(404, MISSING) for caller in (NO_BASIS, OTHER_TYPE)},
    ),
    # Only the organisation serving the person can end its own relationship; anyone else has none to end (409).
    ("POST", f"{V1}/persons/{{person_id}}/relationships/end"): Operation(
        build=lambda w, kind, fresh: Call("POST", f"{V1}/persons/{_fresh(w, kind, fresh)}/relationships/end"),
        expect={RIGHT: {OWN: 200, OTHER: 409, MISSING: 404}}
        | {caller: every(409, OWN, OTHER) | every(404, MISSING) for caller in (NO_BASIS, OTHER_TYPE)},
    ),
    # A mandate opens the person's whole portal: only an organisation serving the person registers one.
    ("POST", f"{V1}/persons/{{person_id}}/representatives"): Operation(
        build=lambda w, kind, fresh: Call(
            "POST",
            f"{V1}/persons/{_served_by_kisalli(w, kind)}/representatives",
            {"hetu": w.representative_hetu, "mandate": "guardian_personal"},
        ),
        expect={RIGHT: {OWN: 201, OTHER: 409, MISSING: 404}}
        | {caller: every(409, OWN, OTHER) | every(404, MISSING) for caller in (NO_BASIS, OTHER_TYPE)},
    ),
    # Any partner may ask any person for a consent; the person answers (or not) in the portal.
    ("POST", f"{V1}/consent-requests"): Operation(
        build=lambda w, kind, fresh: Call(
            "POST",
            f"{V1}/consent-requests",
            {"person_id": _persons(w, kind), **CONSENT_TERMS, "reason": "to plan the work activity"},
        ),
        expect={caller: every(201, OWN, OTHER) | every(404, MISSING) for caller in (RIGHT, NO_BASIS, OTHER_TYPE)},
    ),
    # A partner sees the consents in which it is requester or recipient, of any person; an unknown person is 404.
    ("GET", f"{V1}/consents"): Operation(
        build=lambda w, kind, fresh: Call("GET", f"{V1}/consents?person_id={_persons(w, kind)}"),
        expect={caller: every(200, OWN, OTHER) | every(404, MISSING) for caller in (RIGHT, NO_BASIS, OTHER_TYPE)},
        check=check_consents,
    ),
    # A professional records a consent given to them in person or on paper; the consent names its recorder.
    ("POST", f"{V1}/consents"): Operation(
        build=lambda w, kind, fresh: Call(
            "POST",
            f"{V1}/consents",
            {"person_id": _fresh(w, kind, fresh), **CONSENT_TERMS, "method": "paper"},
        ),
        expect={caller: every(201, OWN, OTHER) | every(404, MISSING) for caller in (RIGHT, NO_BASIS, OTHER_TYPE)},
    ),
    # A consent exists only for the organisations named in it: for everyone else it is 404, never 403.
    ("POST", f"{V1}/consents/{{consent_id}}/withdraw"): Operation(
        build=lambda w, kind, fresh: Call(
            "POST", f"{V1}/consents/{_withdrawable(w, kind, fresh)}/withdraw", {"reason": "asked"}
        ),
        expect={RIGHT: {OWN: 200, OTHER: 404, MISSING: 404}, NO_BASIS: every(404), OTHER_TYPE: every(404)},
        check=check_consents,
    ),
    # Only an organisation that received data under a withdrawn consent answers for it; for the others the consent
    # is not theirs to see (404 `unknown_consent`), or they were not asked (404 `unknown_attestation`).
    ("POST", f"{V1}/consents/{{consent_id}}/attestation"): Operation(
        build=lambda w, kind, fresh: Call(
            "POST", f"{V1}/consents/{_attestable(w, kind, fresh)}/attestation", {"outcome": "deleted"}
        ),
        expect={RIGHT: {OWN: 200, OTHER: 404, MISSING: 404}, NO_BASIS: every(404), OTHER_TYPE: every(404)},
        check=check_attestations,
    ),
    # Each organisation lists the attestations asked of it, and only those.
    ("GET", f"{V1}/attestations"): Operation(
        build=lambda w, kind, fresh: Call("GET", f"{V1}/attestations?status=all"),
        expect={caller: every(200, OWN) for caller in (RIGHT, NO_BASIS, OTHER_TYPE)},
        check=check_attestations,
    ),
    ("GET", f"{V1}/consents/{{consent_id}}/receipt"): Operation(
        build=lambda w, kind, fresh: Call("GET", f"{V1}/consents/{_consent(w, kind)}/receipt"),
        expect={RIGHT: {OWN: 200, OTHER: 404, MISSING: 404}, NO_BASIS: every(404), OTHER_TYPE: every(404)},
    ),
    # The consent as an ISO/IEC TS 27560 record: like the receipt, only for the organisations named in it.
    ("GET", f"{V1}/consents/{{consent_id}}/record"): Operation(
        build=lambda w, kind, fresh: Call("GET", f"{V1}/consents/{_consent(w, kind)}/record"),
        expect={RIGHT: {OWN: 200, OTHER: 404, MISSING: 404}, NO_BASIS: every(404), OTHER_TYPE: every(404)},
    ),
    # FHIR: the consents a partner may list, as Consent resources; an unknown person is 404.
    ("GET", f"{V1}/fhir/Consent"): Operation(
        build=lambda w, kind, fresh: Call("GET", f"{V1}/fhir/Consent?patient={_persons(w, kind)}"),
        expect={caller: every(200, OWN, OTHER) | every(404, MISSING) for caller in (RIGHT, NO_BASIS, OTHER_TYPE)},
        check=check_fhir_consents,
    ),
    # FHIR AuditEvents of any known person: a partner (scope disclosures) gets the disclosures made to it or by it,
    # the DPO's system (scope audit:read) every one.
    ("GET", f"{V1}/fhir/AuditEvent"): Operation(
        build=lambda w, kind, fresh: Call("GET", f"{V1}/fhir/AuditEvent?patient={_persons(w, kind)}"),
        expect={caller: every(200, OWN, OTHER) | every(404, MISSING) for caller in (RIGHT, NO_BASIS, OTHER_TYPE)},
        dpo=every(200, OWN, OTHER) | every(404, MISSING),
        check=check_fhir_audit_events,
    ),
    # FHIR reads by id, with the searches' visibility: a consent only for the organisations named in it, a
    # disclosure for the partner it was made to or by, and for the DPO's system every one; 404 for anyone else.
    ("GET", f"{V1}/fhir/Consent/{{resource_id}}"): Operation(
        build=lambda w, kind, fresh: Call("GET", f"{V1}/fhir/Consent/{_fhir_id(_consent(w, kind))}"),
        expect={RIGHT: {OWN: 200, OTHER: 404, MISSING: 404}, NO_BASIS: every(404), OTHER_TYPE: every(404)},
        check=check_fhir_consent,
    ),
    ("GET", f"{V1}/fhir/AuditEvent/{{resource_id}}"): Operation(
        build=lambda w, kind, fresh: Call("GET", f"{V1}/fhir/AuditEvent/{_fhir_id(_disclosure(w, kind))}"),
        expect={RIGHT: {OWN: 200, OTHER: 404, MISSING: 404}, NO_BASIS: every(404), OTHER_TYPE: every(404)},
        dpo=every(200, OWN, OTHER) | every(404, MISSING),
        check=check_fhir_audit_event,
    ),
    # The capability statement is public (R4 http.html#capabilities): the same answer to anyone.
    ("GET", f"{V1}/fhir/metadata"): Operation(
        build=lambda w, kind, fresh: Call("GET", f"{V1}/fhir/metadata"),
        expect={caller: every(200, OWN) for caller in (RIGHT, NO_BASIS, OTHER_TYPE)},
        public=True,
    ),
    # Any partner deposits its own records about a known person; what leaves again is decided per disclosure.
    ("POST", f"{V1}/records"): Operation(
        build=lambda w, kind, fresh: Call(
            "POST",
            f"{V1}/records",
            {
                "person_id": _fresh(w, kind, fresh),
                "category": "attendance_report",
                "content": EXAMPLES["attendance_report"],
            },
        ),
        expect={caller: every(201, OWN, OTHER) | every(404, MISSING) for caller in (RIGHT, NO_BASIS, OTHER_TYPE)},
    ),
    # F8: only Kisälli, on the person's consent, gets the summary, without the physician's notes.
    ("POST", f"{V1}/disclosures"): Operation(
        build=lambda w, kind, fresh: _ask(w, kind, f"{V1}/disclosures"),
        expect={RIGHT: {OWN: 200, OTHER: 403, MISSING: 404}}
        | {caller: every(403, OWN, OTHER) | every(404, MISSING) for caller in (NO_BASIS, OTHER_TYPE)},
        check=check_disclosure,
    ),
    # The dry run answers every partner about a known person, with the effect the disclosure would have.
    ("POST", f"{V1}/decisions"): Operation(
        build=lambda w, kind, fresh: _ask(w, kind, f"{V1}/decisions"),
        expect={caller: every(200, OWN, OTHER) | every(404, MISSING) for caller in (RIGHT, NO_BASIS, OTHER_TYPE)},
        check=check_decision,
    ),
    # F5: the work-activity producer tells social work of an interruption, about a person social work serves.
    ("POST", f"{V1}/notices"): Operation(
        build=lambda w, kind, fresh: Call(
            "POST",
            f"{V1}/notices",
            {
                "person_id": _persons(w, kind),
                "kind": "interruption_notice",
                "recipient": "varha-social-work",
                "content": EXAMPLES["interruption_notice"],
            },
        ),
        expect={RIGHT: {OWN: 201, OTHER: 403, MISSING: 404}}
        | {caller: every(403, OWN, OTHER) | every(404, MISSING) for caller in (NO_BASIS, OTHER_TYPE)},
        check=check_notice_sent,
    ),
    # Each organisation reads its own inbox, and only that.
    ("GET", f"{V1}/inbox"): Operation(
        build=lambda w, kind, fresh: Call("GET", f"{V1}/inbox?include_acknowledged=true"),
        expect={caller: every(200, OWN) for caller in (RIGHT, NO_BASIS, OTHER_TYPE)},
        check=check_notices,
    ),
    # Acknowledging twice keeps the first acknowledgement, so the own notice serves every case.
    ("POST", f"{V1}/inbox/{{notice_id}}/ack"): Operation(
        build=lambda w, kind, fresh: Call("POST", f"{V1}/inbox/{_notice(w, kind)}/ack"),
        expect={RIGHT: {OWN: 200, OTHER: 404, MISSING: 404}, NO_BASIS: every(404), OTHER_TYPE: every(404)},
        check=check_notices,
    ),
    # Any partner registers webhook endpoints for its own organisation, and sees and manages only its own: another
    # organisation's endpoint is 404, never 403. The events and their delivery status are the organisation's own too.
    ("POST", f"{V1}/webhooks"): Operation(
        build=lambda w, kind, fresh: Call(
            "POST",
            f"{V1}/webhooks",
            {"url": f"https://partner.example/events/{secrets.token_hex(8)}", "events": ["consent.granted"]},
        ),
        expect={caller: every(201, OWN) for caller in (RIGHT, NO_BASIS, OTHER_TYPE)},
        check=check_organisation,
    ),
    ("GET", f"{V1}/webhooks"): Operation(
        build=lambda w, kind, fresh: Call("GET", f"{V1}/webhooks"),
        expect={caller: every(200, OWN) for caller in (RIGHT, NO_BASIS, OTHER_TYPE)},
        check=check_organisation,
    ),
    ("GET", f"{V1}/webhooks/{{webhook_id}}"): Operation(
        build=lambda w, kind, fresh: Call("GET", f"{V1}/webhooks/{_webhook(w, kind)}"),
        expect={RIGHT: {OWN: 200, OTHER: 404, MISSING: 404}, NO_BASIS: every(404), OTHER_TYPE: every(404)},
        check=check_organisation,
    ),
    ("DELETE", f"{V1}/webhooks/{{webhook_id}}"): Operation(
        build=lambda w, kind, fresh: Call("DELETE", f"{V1}/webhooks/{_webhook(w, kind, fresh)}"),
        expect={RIGHT: {OWN: 204, OTHER: 404, MISSING: 404}, NO_BASIS: every(404), OTHER_TYPE: every(404)},
    ),
    ("POST", f"{V1}/webhooks/{{webhook_id}}/test"): Operation(
        build=lambda w, kind, fresh: Call("POST", f"{V1}/webhooks/{_webhook(w, kind)}/test"),
        expect={RIGHT: {OWN: 200, OTHER: 404, MISSING: 404}, NO_BASIS: every(404), OTHER_TYPE: every(404)},
    ),
    ("GET", f"{V1}/webhooks/{{webhook_id}}/deliveries"): Operation(
        build=lambda w, kind, fresh: Call("GET", f"{V1}/webhooks/{_webhook(w, kind)}/deliveries"),
        expect={RIGHT: {OWN: 200, OTHER: 404, MISSING: 404}, NO_BASIS: every(404), OTHER_TYPE: every(404)},
        check=check_organisation,
    ),
    ("GET", f"{V1}/events"): Operation(
        build=lambda w, kind, fresh: Call("GET", f"{V1}/events?tokens=true"),
        expect={caller: every(200, OWN) for caller in (RIGHT, NO_BASIS, OTHER_TYPE)},
        check=check_organisation,
    ),
    # The audit log is the DPO's (scope audit:read); partners' case systems, even of the DPO's own organisation,
    # never read it. The DPO sees every person's entries; positions beyond the log are 400 or 404.
    ("GET", f"{V1}/audit/checkpoint"): Operation(
        build=lambda w, kind, fresh: Call("GET", f"{V1}/audit/checkpoint"),
        expect={RIGHT: every(200, OWN), NO_BASIS: every(403, OWN), OTHER_TYPE: every(403, OWN)},
        audit=True,
    ),
    ("GET", f"{V1}/audit/proofs/inclusion"): Operation(
        build=lambda w, kind, fresh: Call(
            "GET",
            f"{V1}/audit/proofs/inclusion?index=0&tree_size={w.tree_size if kind == OWN else BEYOND_THE_LOG}",
        ),
        expect={
            RIGHT: {OWN: 200, MISSING: 400},
            NO_BASIS: every(403, OWN, MISSING),
            OTHER_TYPE: every(403, OWN, MISSING),
        },
        audit=True,
    ),
    ("GET", f"{V1}/audit/proofs/consistency"): Operation(
        build=lambda w, kind, fresh: Call(
            "GET", f"{V1}/audit/proofs/consistency?first=1&second={w.tree_size if kind == OWN else BEYOND_THE_LOG}"
        ),
        expect={
            RIGHT: {OWN: 200, MISSING: 400},
            NO_BASIS: every(403, OWN, MISSING),
            OTHER_TYPE: every(403, OWN, MISSING),
        },
        audit=True,
    ),
    ("GET", f"{V1}/audit/entries"): Operation(
        build=lambda w, kind, fresh: Call("GET", f"{V1}/audit/entries?person_id={_persons(w, kind)}"),
        expect={RIGHT: every(200), NO_BASIS: every(403), OTHER_TYPE: every(403)},
        audit=True,
    ),
    # Every organisation's webhook endpoints and given-up deliveries, for the DPO's systems only.
    ("GET", f"{V1}/audit/webhooks"): Operation(
        build=lambda w, kind, fresh: Call("GET", f"{V1}/audit/webhooks"),
        expect={RIGHT: every(200, OWN), NO_BASIS: every(403, OWN), OTHER_TYPE: every(403, OWN)},
        audit=True,
    ),
    ("GET", f"{V1}/audit/webhook-deliveries"): Operation(
        build=lambda w, kind, fresh: Call("GET", f"{V1}/audit/webhook-deliveries?status=pending"),
        expect={RIGHT: every(200, OWN), NO_BASIS: every(403, OWN), OTHER_TYPE: every(403, OWN)},
        audit=True,
    ),
    ("GET", f"{V1}/audit/entries/{{index}}"): Operation(
        build=lambda w, kind, fresh: Call("GET", f"{V1}/audit/entries/{0 if kind == OWN else BEYOND_THE_LOG}"),
        expect={
            RIGHT: {OWN: 200, MISSING: 404},
            NO_BASIS: every(403, OWN, MISSING),
            OTHER_TYPE: every(403, OWN, MISSING),
        },
        audit=True,
    ),
}

CASES = [
    pytest.param(operation, caller, kind, id=f"{operation[0]} {operation[1]} | {caller} | {kind}")
    for operation, entry in MATRIX.items()
    for kind in entry.objects
    for caller in CALLERS
]


# --- sending a request as a kind of caller -------------------------------------------------------------------------


def fresh_token(env: Env, org: str) -> tuple[str, str]:
    """A new access token of `org` (not the cached one) and its type."""
    response = env.token_response(org)
    assert response.status_code == 200, response.get_data(as_text=True)
    issued = response.get_json()
    return issued["access_token"], issued["token_type"]


def forget_cached_tokens(env: Env) -> None:
    # The clock moved past every token's lifetime: the environment's cached tokens would all be refused now.
    env._tokens.clear()


def send(world: World, operation: Operation, caller: str, call: Call) -> TestResponse:
    env = world.env
    orgs = AUDIT_CALLERS if operation.audit else PARTNER_CALLERS
    right = orgs[RIGHT]
    url = env.issuer + call.path
    if caller in orgs:
        return env.call(orgs[caller], call.method, call.path, call.body)
    if caller == ANONYMOUS:
        return env.call(None, call.method, call.path, call.body)
    if caller == NO_PROOF:
        return env.call(right, call.method, call.path, call.body, proof=False)
    if caller == EXPIRED:
        token, scheme = fresh_token(env, right)
        env.clock.advance(seconds=env.broker.settings.access_token_ttl + 1)
        forget_cached_tokens(env)
        headers = env.signer(right).headers(call.method, url, token, scheme=scheme)
    elif caller == REVOKED:
        token, scheme = fresh_token(env, right)
        form = {
            "token": token,
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": env.assertion(right),
        }
        revoked = env.client.post("/oauth/revoke", data=form)
        assert revoked.status_code == 200, revoked.get_data(as_text=True)
        headers = env.signer(right).headers(call.method, url, token, scheme=scheme)
    elif caller == PORTAL_TOKEN:
        headers = DpopSigner(now=lambda: env.clock.now().timestamp()).headers(call.method, url, world.portal_token)
    elif caller == CLIENT_ASSERTION:
        assertion = env.assertion(right)
        headers = DpopSigner(now=lambda: env.clock.now().timestamp()).headers(call.method, url, assertion)
    else:
        raise AssertionError(f"unknown caller {caller}")
    return env.call(None, call.method, call.path, call.body, headers=headers)


# --- the fields of an answer ---------------------------------------------------------------------------------------


def _resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        node: Any = document
        for part in schema["$ref"].removeprefix("#/").split("/"):
            node = node[part]
        schema = node
    return schema


def _alternatives(document: dict[str, Any], schema: dict[str, Any]) -> list[dict[str, Any]]:
    schema = _resolve(document, schema)
    found = [schema]
    for key in ("allOf", "anyOf", "oneOf"):
        for part in schema.get(key, []):
            found += _alternatives(document, part)
    return found


def undocumented(document: dict[str, Any], schema: dict[str, Any], value: Any, where: str = "") -> list[str]:
    """The paths of the members of `value` that `schema` does not name (objects with named properties only)."""
    found: list[str] = []
    for option in _alternatives(document, schema):
        if isinstance(value, list) and "items" in option:
            for i, item in enumerate(value):
                found += undocumented(document, option["items"], item, f"{where}[{i}]")
        elif isinstance(value, dict) and "properties" in option:
            properties = option["properties"]
            for name, member in value.items():
                if name not in properties:
                    found.append(f"{where}.{name}")
                else:
                    found += undocumented(document, properties[name], member, f"{where}.{name}")
    return found


def documented_schema(
    world: World, operation: tuple[str, str], status: int, media_type: str = "application/json"
) -> dict[str, Any]:
    method, path = operation
    response = world.document["paths"][path][method.lower()]["responses"].get(str(status))
    assert response is not None, f"{method} {path} answered {status}, which its documentation does not list"
    assert media_type in response["content"], f"{method} {path} answered {media_type}, which it does not document"
    schema: dict[str, Any] = response["content"][media_type]["schema"]
    return schema


# --- the tests -----------------------------------------------------------------------------------------------------


def test_every_documented_operation_is_in_the_matrix(world: World) -> None:
    documented = {
        (method.upper(), path)
        for path, item in world.document["paths"].items()
        for method in item
        if method in ("get", "put", "post", "patch", "delete")
    }
    missing = sorted(f"{method} {path}" for method, path in documented - set(MATRIX))
    assert not missing, (
        f"operations with no entry in the access matrix (tests/integration/test_access_matrix.py): {missing}"
    )
    stale = sorted(f"{method} {path}" for method, path in set(MATRIX) - documented)
    assert not stale, f"matrix entries for operations the OpenAPI document does not have: {stale}"


@pytest.mark.parametrize(("operation", "caller", "kind"), CASES)
def test_access(world: World, operation: tuple[str, str], caller: str, kind: str) -> None:
    entry = MATRIX[operation]
    expected = entry.status(caller, kind)
    call = entry.build(world, kind, 200 <= expected < 300)
    response = send(world, entry, caller, call)
    body = response.get_json(silent=True)
    got = response.status_code
    shown = repr(body) if len(repr(body)) <= 400 else repr(body)[:400] + "…"
    what = f"{call.method} {call.path} by {caller} on {kind}: expected {expected}, got {got}: {shown}"
    if 200 <= got < 300:
        assert 200 <= expected < 300, f"UNEXPECTED {got}: {what}"
    assert got == expected, what
    if got >= 400:
        assert response.mimetype == "application/problem+json", what
        return
    if got == 204:  # No Content (RFC 9110 §15.3.5): nothing to check but that nothing came
        assert response.get_data() == b"", what
        return
    # JSON, or for the FHIR operations FHIR's JSON (R4 http.html#mime-type).
    assert response.mimetype in ("application/json", "application/fhir+json"), what
    extra = undocumented(world.document, documented_schema(world, operation, got, response.mimetype), body)
    assert not extra, f"undocumented fields {extra}: {what}"
    if entry.check is not None:
        orgs = AUDIT_CALLERS if entry.audit else PARTNER_CALLERS
        entry.check(world, orgs[caller], body)
