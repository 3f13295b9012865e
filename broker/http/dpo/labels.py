"""The workspace's words for its identifiers, as English message ids translated by the catalogues
(broker/translations/). The DPO reads the log's own vocabulary — events, bases, the anomaly rules — so these are
the professional words, unlike the person-facing labels of broker/domain/labels.py, which the person's report
uses for the categories and purposes the person reads.
"""

from __future__ import annotations

from flask_babel import lazy_gettext as _l

EVENTS = {
    "disclosure:permit": _l("Records disclosed on request"),
    "disclosure:deny": _l("Request for records refused"),
    "decision:query": _l("Decision checked, nothing disclosed"),
    "consent:request": _l("Consent requested"),
    "consent:grant": _l("Consent given"),
    "consent:withdraw": _l("Consent withdrawn"),
    "consent:refuse": _l("Consent request refused"),
    "consent:request_expire": _l("Consent request expired without an answer"),
    "consent:expire": _l("Consent expired"),
    "consent:attest": _l("Recipient answered for a withdrawn consent"),
    "record:deposit": _l("Record deposited"),
    "record:erase": _l("Record content erased at the end of its retention"),
    "notice:send": _l("Notice sent"),
    "notice:ack": _l("Notice acknowledged"),
    "token:issue": _l("Access token issued"),
    "token:revoke": _l("Access token revoked"),
    "relationship:start": _l("Service relationship started"),
    "relationship:end": _l("Service relationship ended"),
    "person:resolve": _l("Person looked up"),
    "representation:register": _l("Representative registered"),
    "webhook:register": _l("Webhook endpoint registered"),
    "webhook:disable": _l("Webhook endpoint disabled"),
    "dpo:review": _l("Reviewed by the data-protection officer"),
    "dpo:open_commitment": _l("Professional identified by the data-protection officer"),
    "dpo:report": _l("Log report made by the data-protection officer"),
    "audit:query": _l("Log read"),
}

BASIS_KINDS = {
    "statute": _l("Statute"),
    "consent": _l("Consent"),
    "exception": _l("Statutory exception"),
}

EFFECTS = {
    "permit": _l("Permitted"),
    "deny": _l("Denied"),
}

RULES = {
    "out_of_hours": _l("Outside office hours"),
    "volume_spike": _l("Unusually many requests"),
    "no_relationship": _l("Persons the organisation does not serve"),
    "repeated_denials": _l("Repeated refusals"),
    "enumeration": _l("Many persons without a basis"),
    "statutory_exception": _l("Statutory exception used"),
    "attestation_overdue": _l("Withdrawal not answered"),
}

RULE_DESCRIPTIONS = {
    "out_of_hours": _l(
        "Records were disclosed before 07:00 or after 19:00 on a weekday, or at a weekend (Finnish time)."
    ),
    "volume_spike": _l(
        "One professional made more than three times their own daily average of the previous 30 days, and at "
        "least 20 requests in a day."
    ),
    "no_relationship": _l(
        "One professional received, in one day, the records of at least 5 persons whom their organisation did "
        "not serve at the time."
    ),
    "repeated_denials": _l("At least 5 of one professional's requests were refused within an hour."),
    "enumeration": _l(
        "One organisation's requests or decision checks about at least 20 different persons were refused within 10 "
        "minutes: someone may be going through persons to see whose data they can reach."
    ),
    "statutory_exception": _l(
        "Records were disclosed without consent on a statutory exception; the law requires each such disclosure "
        "to be reviewed."
    ),
    "attestation_overdue": _l(
        "A consent was withdrawn, and an organisation that had received data under it has not said within 14 days "
        "whether it deleted the data or keeps it under a statute (GDPR Art. 17 and 19). The item stays until it "
        "answers or is reviewed, however old the withdrawal."
    ),
}

OUTCOMES = {
    "justified": _l("Justified"),
    "follow_up": _l("Needs follow-up"),
    "reported": _l("Reported onwards"),
}

SUBJECTS = {
    "clients": _l("Clients of rehabilitative work activity and of the employment, social, health and youth services"),
    "minors": _l("Minors among them, and their custodians"),
    "representatives": _l("Legal representatives and attorneys who act for a client"),
    "professionals": _l("Professionals of the organisations, as actors in the log (only as salted commitments)"),
}

MEASURES = {
    "deny_by_default": _l(
        "Deny by default: records leave only on a statute or a valid consent found by the policy at the moment "
        "of the request."
    ),
    "minimum_necessary": _l("Minimum necessary: only the fields that the flow's allow-list names are disclosed."),
    "encryption_at_rest": _l(
        "Records are encrypted at rest with AES-256-GCM, a key per record, wrapped by key-encryption keys that rotate."
    ),
    "identity_code_sealed": _l(
        "Personal identity codes are stored encrypted and found through a keyed hash; they never appear in a "
        "URL, a log or an audit entry."
    ),
    "tamper_evident_log": _l(
        "Every disclosure, refusal and consent change is written to a tamper-evident log (RFC 9162 Merkle tree, "
        "signed checkpoints kept outside the database) in the same transaction."
    ),
    "staff_pseudonymised": _l(
        "Professionals appear in the log only as salted commitments, which the data-protection officer can open."
    ),
    "partner_authentication": _l(
        "Partner systems authenticate with signed client assertions (OAuth 2.0, private_key_jwt) and short-lived "
        "tokens checked on every request."
    ),
    "person_authentication": _l(
        "Persons log in with strong electronic identification (OpenID Connect); sessions are server-side and expire."
    ),
    "dpo_review": _l(
        "The data-protection officer reviews the anomaly queue and every use of a statutory exception, and can "
        "verify the whole log."
    ),
    "retention_erasure": _l("Record content is erased when its retention period ends, and the erasure is logged."),
}

OTHER_RETENTION = {
    "logs": _l("Disclosure and usage logs: 12 years from the event (703/2023 annex)."),
    "consents": _l(
        "Consents: the newest version 12 years after the person's death, earlier versions 12 years after being "
        "superseded (703/2023 annex)."
    ),
}

#: flows.md, "Retention": shown when the retention schedule cannot be read.
FALLBACK_RETENTION = (
    _l("Working-age adult social services and substance-abuse records: 10 years after the matter closes."),
    _l(
        "Employment-service and multi-sector records: 4 years after the client relationship ends (380/2023 122 §, "
        "381/2023 12 §)."
    ),
)

RULE_BASES = {
    "statute": _l("Statute"),
    "consent": _l("Consent"),
    "consent_or_exception": _l("Consent, or a statutory exception"),
}

TABLES = {
    "event": EVENTS,
    "dpo_basis_kind": BASIS_KINDS,
    "dpo_effect": EFFECTS,
    "rule": RULES,
    "rule_description": RULE_DESCRIPTIONS,
    "outcome": OUTCOMES,
    "subject": SUBJECTS,
    "measure": MEASURES,
    "other_retention": OTHER_RETENTION,
    "rule_basis": RULE_BASES,
}


def term(table: str, value: object) -> str:
    """The workspace's word for `value`; an id without one is shown as it is (the DPO reads ids too)."""
    if value is None or value == "":
        return ""
    found = TABLES[table].get(str(value))
    return str(found) if found is not None else str(value)
