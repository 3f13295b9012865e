"""The demo instance: the reference deployment's organisations and partner systems, fictional persons with test
identity codes (individual numbers 900–999), and the service path of the source description —

activation meeting → rehabilitative work activity → work assessment to the health-centre doctor →
multi-sector planning → an interruption notice to the social worker.

Everything is created through the use cases, so the demo's log is a real, verifiable log.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from joserfc.jwk import OKPKey
from sqlalchemy import select

from broker.adapters.orm import OrganisationRow, PartnerRow, PersonRow
from broker.config import Settings
from broker.domain.hetu import make_hetu
from broker.domain.model import DPO_ROLE, DPO_SCOPES, PARTNER_SCOPES, Caller
from broker.migrations import upgrade
from broker.services import Broker

ORGANISATIONS: tuple[tuple[str, str, str, str], ...] = (
    # id, type, name, the demo professional's role
    ("kisalli", "employment_services", "Työllistämispalvelut Kisälli, Lieto", "individual_coach"),
    ("varha-social-work", "social_work", "Varha, aikuissosiaalityö", "social_worker"),
    ("turku-employment", "employment_authority", "Turun seudun työllisyysalue", "employment_expert"),
    ("kela", "kela", "Kela", "kela_expert"),
    ("varha-health", "health_care", "Varha, Liedon terveysasema", "physician"),
    ("aurajoki-foundation", "third_sector_provider", "Aurajoen työkeskussäätiö", "provider_supervisor"),
    ("lieto-youth-outreach", "youth_outreach", "Liedon etsivä nuorisotyö", "outreach_youth_worker"),
    ("ohjaamo-turku", "ohjaamo", "Ohjaamo Turku", "ohjaamo_counsellor"),
    ("demo-employer", "employer", "Demo Oy", "employer_contact"),
    ("demo-college", "education_provider", "Demo-ammattiopisto", "education_counsellor"),
)


DPO_PARTNER = "varha-dpo"
DPO_ORGANISATION = "varha-social-work"


@dataclass(frozen=True)
class DemoPerson:
    key: str
    name: str
    born: date
    individual: int
    login: str

    @property
    def hetu(self) -> str:
        return make_hetu(self.born, self.individual)


PERSONS = (
    DemoPerson("mikko", "Mikko Laine", date(1988, 3, 14), 921, "mikko"),
    DemoPerson("sari", "Sari Nieminen", date(1975, 11, 2), 934, "sari"),
    DemoPerson("elias", "Elias Korhonen", date(2009, 6, 30), 947, "elias"),
    DemoPerson("leena", "Leena Korhonen", date(1980, 9, 8), 958, "leena"),
)


def caller(broker: Broker, org_id: str) -> Caller:
    org_type, role = next((t, r) for i, t, _, r in ORGANISATIONS if i == org_id)
    return Caller(
        partner_id=org_id,
        organisation_id=org_id,
        org_type=org_type,
        actor_id=f"demo-{org_id}-1",
        actor_role=role,
        scopes=frozenset(PARTNER_SCOPES),
        request_id="demo",
    )


def _write_private(path: Path, data: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(data)


def _partner_key(instance: Path, org_id: str) -> OKPKey:
    """Each demo partner's private key lives in instance/partners/<id>.jwk so any OAuth client can act as it."""
    path = instance / "partners" / f"{org_id}.jwk"
    if path.exists():
        return OKPKey.import_key(json.loads(path.read_text()))
    key = OKPKey.generate_key("Ed25519", parameters={"kid": f"{org_id}-1", "alg": "Ed25519", "use": "sig"})
    _write_private(path, json.dumps(key.as_dict(private=True), indent=2))
    return key


def register_organisations(broker: Broker) -> None:
    """The reference deployment's organisations, each with one partner system whose key is in the instance."""
    instance = broker.settings.instance_path
    now = broker.clock.now()
    with broker.uow() as uow:
        for org_id, org_type, name, _ in ORGANISATIONS:
            uow.session.add(OrganisationRow(id=org_id, name=name, org_type=org_type, created_at=now))
        uow.session.flush()
        for org_id, _, name, _ in ORGANISATIONS:
            public = _partner_key(instance, org_id).as_dict(private=False)
            uow.session.add(
                PartnerRow(
                    client_id=org_id,
                    organisation_id=org_id,
                    name=f"{name} (case system)",
                    jwks={"keys": [public]},
                    alg="Ed25519",
                    scopes=list(PARTNER_SCOPES),
                    active=True,
                    created_at=now,
                )
            )
        uow.commit()
    register_dpo_partner(broker)


def register_dpo_partner(broker: Broker) -> None:
    """The wellbeing services county's data-protection officer's system: scope `audit:read` only (issue #5's
    proofs API). Added to a demo instance made before it existed, too."""
    instance = broker.settings.instance_path
    with broker.uow() as uow:
        if uow.session.get(PartnerRow, DPO_PARTNER) is not None:
            return
        public = _partner_key(instance, DPO_PARTNER).as_dict(private=False)
        uow.session.add(
            PartnerRow(
                client_id=DPO_PARTNER,
                organisation_id=DPO_ORGANISATION,
                name="Varha, tietosuojavastaava (DPO)",
                jwks={"keys": [public]},
                alg="Ed25519",
                scopes=list(DPO_SCOPES),
                active=True,
                created_at=broker.clock.now(),
            )
        )
        uow.commit()


def seed(broker: Broker) -> dict[str, str]:
    """Create organisations, partners, persons and the service path. Returns person key → person_id."""
    from broker.services import consents, disclosures, notices, persons, records
    from broker.services.sequencer import Sequencer
    from schemas.records.examples import EXAMPLES

    register_organisations(broker)
    # The log's first checkpoint reaches the sink before the first disclosure, as a served broker's sequencer
    # would have done (disclosures wait for an exported checkpoint: broker/services/sequencer.py).
    Sequencer(broker).run_once()
    now = broker.clock.now()
    ids: dict[str, str] = {}
    for person in PERSONS:
        ids[person.key] = persons.resolve_person(broker, caller(broker, "kisalli"), person.hetu, person.name)

    mikko = ids["mikko"]
    kisalli, social, employment, health = (
        caller(broker, o) for o in ("kisalli", "varha-social-work", "turku-employment", "varha-health")
    )
    for org in (social, employment, kisalli, health):
        persons.start_relationship(broker, org, mikko)

    # Activation meeting: the employment authority and social work draw up the activation plan (189/2001 8–9 §).
    records.deposit_record(broker, employment, mikko, "activation_plan", EXAMPLES["activation_plan"])
    # Social work decides on rehabilitative work activity; Kisälli produces it (189/2001 13 §; 703/2023 14 §).
    records.deposit_record(broker, social, mikko, "activity_decision", EXAMPLES["activity_decision"])
    disclosures.request_disclosure(
        broker, kisalli, disclosures.DisclosureAsk(mikko, "activity_decision", "service_delivery")
    )
    records.deposit_record(broker, kisalli, mikko, "attendance_report", EXAMPLES["attendance_report"])
    # The work assessment goes to the health-centre doctor only with Mikko's explicit consent (703/2023 53 §).
    consents.record_consent(
        broker,
        kisalli,
        mikko,
        consents.ConsentTerms(
            recipients=["varha-health"],
            categories=["work_assessment"],
            purposes=["work_capacity_assessment"],
            valid_until=now + timedelta(days=180),
            explicit=True,
            language="fi",
        ),
        method="in_person",
        witness="Työvalmentaja Pekka Salo",
    )
    records.deposit_record(broker, kisalli, mikko, "work_assessment", EXAMPLES["work_assessment"])
    disclosures.request_disclosure(
        broker, health, disclosures.DisclosureAsk(mikko, "work_assessment", "work_capacity_assessment")
    )
    # Multi-sector planning among the three authorities (381/2023 15 §).
    records.deposit_record(broker, employment, mikko, "service_need_assessment", EXAMPLES["service_need_assessment"])
    disclosures.request_disclosure(
        broker, social, disclosures.DisclosureAsk(mikko, "service_need_assessment", "multisector_planning")
    )
    # Kisälli asks Mikko to let it see the assessment too (F9b needs consent); he answers in the portal.
    consents.request_consent(
        broker,
        kisalli,
        mikko,
        recipients=["kisalli"],
        categories=["service_need_assessment"],
        purposes=["multisector_planning"],
        valid_days=180,
        reason="Jotta voimme suunnitella työtoimintasi yhdessä monialaisen verkoston kanssa.",
    )
    # The activity is interrupted; Kisälli tells the social worker (703/2023 14 § and 17 §).
    notices.send_notice(
        broker, kisalli, mikko, "interruption_notice", "varha-social-work", EXAMPLES["interruption_notice"]
    )

    # Sari once consented and then withdrew it.
    sari = ids["sari"]
    persons.start_relationship(broker, kisalli, sari)
    given = consents.record_consent(
        broker,
        kisalli,
        sari,
        consents.ConsentTerms(
            recipients=["varha-health"],
            categories=["work_assessment"],
            purposes=["work_capacity_assessment"],
            explicit=True,
            language="fi",
        ),
        method="paper",
        witness=None,
    )
    consents.withdraw_consent(broker, kisalli, given["consent_id"], reason="Asiakas peruutti puhelimessa.")

    # Elias (17) meets outreach youth work; his mother Leena is his custodian, registered by social work, which
    # has verified it. Outreach youth work asks to refer him to Kisälli — a minor's custodian consents too (F14).
    elias = ids["elias"]
    youth = caller(broker, "lieto-youth-outreach")
    persons.start_relationship(broker, social, elias)
    persons.start_relationship(broker, youth, elias)
    leena = next(p for p in PERSONS if p.key == "leena")
    persons.register_representative(broker, social, elias, hetu=leena.hetu, mandate="custodian", valid_until=None)
    consents.request_consent(
        broker,
        youth,
        elias,
        recipients=["kisalli"],
        categories=["youth_referral"],
        purposes=["service_referral"],
        valid_days=90,
        reason="Jotta Kisällin valmentaja voi tutustua tilanteeseesi ennen ensitapaamista.",
    )
    return ids


def create_demo(settings: Settings, *, host: str = "127.0.0.1", port: int = 8000) -> str:
    from broker.app import build_broker, record_policy_version

    instance = settings.instance_path
    instance.mkdir(parents=True, exist_ok=True)
    upgrade(settings.database_url)
    broker = build_broker(settings)
    record_policy_version(broker)
    with broker.uow(write=False) as uow:
        seeded = uow.session.get(OrganisationRow, "kisalli") is not None
        found = uow.session.execute(select(PersonRow.display_name, PersonRow.id))
        existing = {name: person_id for name, person_id in found}
    ids = {p.key: existing[p.name] for p in PERSONS if p.name in existing} if seeded else seed(broker)
    register_dpo_partner(broker)
    from broker.services.sequencer import Sequencer

    Sequencer(broker).run_once()  # the demo starts with its whole log in the tree and a checkpoint exported
    base_url = f"http://{host}:{port}"
    demo: dict[str, Any] = {
        "base_url": base_url,
        "issuer": settings.issuer,
        "partners": [
            {
                "client_id": org_id,
                "organisation": org_id,
                "org_type": org_type,
                "key_file": f"partners/{org_id}.jwk",
                "alg": "Ed25519",
                "scopes": list(PARTNER_SCOPES),
                "roles": sorted(broker.policy.roles_for(org_type)),
                "actor": {"sub": f"demo-{org_id}-1", "role": role},
            }
            for org_id, org_type, _, role in ORGANISATIONS
        ]
        + [
            {
                "client_id": DPO_PARTNER,
                "organisation": DPO_ORGANISATION,
                "org_type": "social_work",
                "key_file": f"partners/{DPO_PARTNER}.jwk",
                "alg": "Ed25519",
                "scopes": list(DPO_SCOPES),
                "roles": [DPO_ROLE],
                "actor": {"sub": "demo-dpo-1", "role": DPO_ROLE},
            }
        ],
        "persons": [{"person_id": ids[p.key], "hetu": p.hetu, "name": p.name, "login": p.login} for p in PERSONS],
    }
    _write_private(instance / "demo.json", json.dumps(demo, indent=2, ensure_ascii=False))
    broker.db.dispose()
    return _summary(base_url, instance, demo, fresh=not seeded)


def _summary(base_url: str, instance: Path, demo: dict[str, Any], *, fresh: bool) -> str:
    mikko = demo["persons"][0]
    return f"""
Consent Broker demo {"created" if fresh else "ready (existing instance kept)"} in {instance.name}/

  Client portal   {base_url}/portal/   (log in as Mikko, Sari, Elias, Leena — Elias's custodian — or the DPO)
  DPO workspace   {base_url}/dpo/      (log in as the DPO: search, reports, anomalies, integrity)
  API docs        {base_url}/api/v1/docs
  OpenAPI         {base_url}/api/v1/openapi.json
  OAuth metadata  {base_url}/.well-known/oauth-authorization-server
  Partner keys    {instance.name}/partners/<partner>.jwk   (demo.json lists them)

Try it — the health centre asks for Mikko's work assessment (permitted by his consent):

  .venv/bin/python docs/examples/disclose.py varha-health {mikko["person_id"]} work_assessment work_capacity_assessment

Verify the log:  BROKER_MODE=demo .venv/bin/broker audit verify
Export it and verify the export without the broker:
  BROKER_MODE=demo .venv/bin/broker audit export log-export && .venv/bin/python -m audit verify log-export
"""
