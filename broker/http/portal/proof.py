"""The person's own proof (docs/portal.md, "The proof of an entry"): for each event in "Who has seen my
information", the audit entry that records it, its inclusion proof (RFC 9162 §2.1.3) and the signed checkpoint
(C2SP tlog-checkpoint in a C2SP signed-note) it leads to, to be checked in the browser (`verify-proof.js`, Web
Crypto only) or offline with `python -m audit verify-entry`.

The proof shows the person nothing they may not see (703/2023 74 §): the leaf names the professional who acted
only as a salted commitment, which only the data-protection officer can open. Reading a proof is the person
reading their own log, so it is not itself logged.

Routes, on the portal blueprint:

- `GET /portal/log/<disclosure_id>/proof` — the page;
- `GET /portal/log/<disclosure_id>/proof.json` — the download `python -m audit verify-entry` reads.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, Response, g
from flask_babel import gettext as _
from sqlalchemy import select

from broker.adapters.orm import DisclosureRow, OrganisationRow
from broker.domain.errors import NotFoundError
from broker.domain.model import PortalUser
from broker.http.portal.views import _broker, _checked_id, _user, for_a_person, page
from broker.services import Broker, audit_read

#: The members of the download: the file `python -m audit verify-entry FILE --key KEY` reads. The verifier key
#: is not among them: it is given on the command line, from where the person trusts it to come.
DOWNLOAD_MEMBERS = ("entry", "index", "tree_size", "inclusion_proof", "checkpoint")
#: How long to wait before asking again for a proof whose entry has no place in the tree yet: the sequencer
#: integrates entries about once a second (broker/services/sequencer.py).
RETRY_AFTER_SECONDS = 2


@dataclass(frozen=True)
class PersonProof:
    disclosure_id: str
    #: audit_read.proof_bundle's answer; None while the entry waits for the sequencer.
    bundle: dict[str, Any] | None
    #: The entry's members, decoded from `bundle["entry"]` for the plain-language view.
    entry: dict[str, Any] | None
    #: The organisations the entry names, by id: {"id", "name", "org_type"}.
    organisations: dict[str, dict[str, Any]]


def register_proof_pages(bp: Blueprint) -> None:
    bp.add_url_rule("/log/<disclosure_id>/proof", "proof", proof_page, methods=["GET"])
    bp.add_url_rule("/log/<disclosure_id>/proof.json", "proof_json", proof_json, methods=["GET"])


def person_proof(broker: Broker, user: PortalUser, disclosure_id: str) -> PersonProof:
    """The proof of one event in the subject's log. The event is looked up together with the subject, as every
    portal object is (docs/portal.md, "Security"): another person's event is NotFoundError, never a refusal.

    `user` is the one the portal made for this request (`person_portal.portal_user`), which has checked a
    representative's mandate against the database just now."""
    subject = user.subject_id
    if subject is None:
        raise NotFoundError("no person's data to show")
    with broker.uow(write=False) as uow:
        entry_id = uow.session.scalar(
            select(DisclosureRow.audit_entry_id).where(
                DisclosureRow.id == disclosure_id, DisclosureRow.person_id == subject
            )
        )
    if entry_id is None:
        raise NotFoundError("no such event in this person's log")
    bundle = audit_read.proof_bundle(broker, entry_id)
    if bundle is None:
        return PersonProof(disclosure_id, None, None, {})
    entry: dict[str, Any] = json.loads(bundle["entry"])
    detail = entry.get("detail")
    if not isinstance(detail, dict):
        detail = {}
    named = {value for value in (entry.get("organisation"), detail.get("recipient")) if isinstance(value, str)}
    organisations: dict[str, dict[str, Any]] = {}
    if named:
        with broker.uow(write=False) as uow:
            rows = uow.session.execute(
                select(OrganisationRow.id, OrganisationRow.name, OrganisationRow.org_type).where(
                    OrganisationRow.id.in_(named)
                )
            )
            organisations = {r.id: {"id": r.id, "name": r.name, "org_type": r.org_type} for r in rows}
    return PersonProof(disclosure_id, bundle, entry, organisations)


def download_name(bundle: dict[str, Any]) -> str:
    return f"proof-{int(bundle['index'])}.json"


@for_a_person
def proof_page(disclosure_id: str) -> Any:
    found = person_proof(_broker(), _user(), _checked_id(disclosure_id))
    if found.bundle is not None:
        # The one portal page that runs a script: the portal's own verify-proof.js (views._after).
        g.portal_scripts = True
    return page(
        "proof.html",
        proof=found,
        bundle=found.bundle,
        entry=found.entry or {},
        organisations=found.organisations,
        filename=download_name(found.bundle) if found.bundle is not None else None,
    )


@for_a_person
def proof_json(disclosure_id: str) -> Any:
    found = person_proof(_broker(), _user(), _checked_id(disclosure_id))
    if found.bundle is None:
        html, status = page(
            "error.html",
            503,
            title=_("The proof is not ready yet"),
            message=_("The proof will be available in a moment. Please try again shortly."),
        )
        response = Response(html, status=status, mimetype="text/html")
        response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response
    body = {name: found.bundle[name] for name in DOWNLOAD_MEMBERS}
    response = Response(json.dumps(body, ensure_ascii=False, indent=2) + "\n", mimetype="application/json")
    response.headers["Content-Disposition"] = f'attachment; filename="{download_name(found.bundle)}"'
    return response
