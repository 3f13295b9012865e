"""What a person reads instead of an identifier, in English: these strings are the message ids of the
translation catalogues (broker/translations/), so the portal and the consent texts say the same thing in
Finnish, Swedish and English.

Every id of `policies/rules/vocabulary.yaml` (organisation types, roles, data categories, purposes, statutory
exceptions) and every state, effect and mandate the portal shows has a label here, in the words of
domain/glossary.md: plain language over legal language. Plain strings, no framework: `_l` only marks them for
extraction (`make translations`).
"""

from __future__ import annotations


def _l(message: str) -> str:
    return message


ORG_TYPES: dict[str, str] = {
    "employment_services": _l("Employment services"),
    "social_work": _l("Social work"),
    "employment_authority": _l("Employment authority (formerly TE office)"),
    "kela": _l("Social Insurance Institution (Kela)"),
    "health_care": _l("Health services"),
    "third_sector_provider": _l("Third-sector service provider"),
    "youth_outreach": _l("Outreach youth work"),
    "ohjaamo": _l("Ohjaamo one-stop guidance centre"),
    "employer": _l("Employer"),
    "education_provider": _l("School or college"),
}

ROLES: dict[str, str] = {
    "individual_coach": _l("individual coach"),
    "work_coach": _l("work coach"),
    "service_counsellor": _l("service counsellor"),
    "employment_coordinator": _l("business and employment coordinator"),
    "social_worker": _l("social worker"),
    "employment_expert": _l("employment expert"),
    "kela_expert": _l("Kela expert"),
    "physician": _l("doctor"),
    "nurse": _l("nurse"),
    "outreach_youth_worker": _l("outreach youth worker"),
    "provider_supervisor": _l("work supervisor at the service provider"),
    "ohjaamo_counsellor": _l("Ohjaamo counsellor"),
    "employer_contact": _l("employer's contact person"),
    "education_counsellor": _l("study counsellor"),
}

CATEGORIES: dict[str, str] = {
    "activation_plan": _l("Activation plan"),
    "activity_decision": _l("Decision on rehabilitative work activity"),
    "attendance_report": _l("Attendance report"),
    "interruption_notice": _l("Interruption notice"),
    "work_assessment": _l("Work assessment"),
    "health_check_summary": _l("Summary of the health check for unemployed people"),
    "service_need_assessment": _l("Service-need assessment"),
    "concern_notification": _l("Concern notification"),
    "substance_incident": _l("Substance incident"),
    "rehabilitation_statement": _l("Statement for vocational rehabilitation"),
    "benefit_status": _l("Unemployment benefit status"),
    "cofinancing_entry": _l("Municipal co-financing share"),
    "youth_referral": _l("Outreach youth work referral"),
    "contact_details": _l("Contact details"),
}

#: One sentence on what each category holds, for the request page.
CATEGORY_HINTS: dict[str, str] = {
    "activation_plan": _l("Your plan: goals, measures, place and timetable of your activity."),
    "activity_decision": _l("The decision on your work activity: dates, hours, place, goals and your contact."),
    "attendance_report": _l("The days you attended and how you are progressing."),
    "interruption_notice": _l("That your activity was interrupted, when, and the kind of reason."),
    "work_assessment": _l("What tasks you tried, how many hours you managed and what you think yourself."),
    "health_check_summary": _l("Whether you attended the health check, restrictions on work and recommended services."),
    "service_need_assessment": _l("Your situation and the services you need, assessed together by several services."),
    "concern_notification": _l("A worker's concern about your wellbeing, sent to social services."),
    "substance_incident": _l("A note that you were under the influence of alcohol or drugs at the activity."),
    "rehabilitation_statement": _l("A statement on your capacity to work and your need for rehabilitation."),
    "benefit_status": _l("That you have received unemployment benefit long enough for activation planning."),
    "cofinancing_entry": _l("How long you have received benefit, for the municipality's share of its cost."),
    "youth_referral": _l("Your situation and the support you need, from outreach youth work."),
    "contact_details": _l("Name, phone number and e-mail address."),
}

PURPOSES: dict[str, str] = {
    "activation_planning": _l("Making your activation plan"),
    "service_delivery": _l("Providing your services"),
    "follow_up": _l("Following how your activity goes"),
    "work_capacity_assessment": _l("Assessing your capacity to work"),
    "multisector_planning": _l("Planning your services with several agencies together"),
    "support_need_assessment": _l("Assessing your need for support"),
    "rehabilitation_decision": _l("Deciding on your rehabilitation"),
    "cofinancing_liability": _l("The municipality's share of benefit costs"),
    "service_referral": _l("Guiding you to services"),
}

EXCEPTIONS: dict[str, str] = {
    "manifestly_unable_to_look_after_self": _l(
        "You could clearly not look after your own health or safety, so social services were contacted without consent."
    ),
    "lacks_capacity_no_representative": _l(
        "You could not decide on consent and had no legal representative, so the information your care needed "
        "was shared."
    ),
    "care_need_health_or_safety_at_risk": _l(
        "You clearly needed care and your health or safety was at risk, so the information needed for your care "
        "was shared."
    ),
}

CONSENT_STATUSES: dict[str, str] = {
    "active": _l("Valid"),
    "expired": _l("Expired"),
    "withdrawn": _l("Withdrawn"),
    "refused": _l("Refused"),
}

REQUEST_STATUSES: dict[str, str] = {
    "pending": _l("Waiting for your answer"),
    "granted": _l("Answered: yes"),
    "refused": _l("Answered: no"),
    "expired": _l("Expired without an answer"),
    "withdrawn": _l("Cancelled"),
}

EFFECTS: dict[str, str] = {
    "permit": _l("Shared"),
    "deny": _l("Not shared"),
}

BASIS_KINDS: dict[str, str] = {
    "statute": _l("A law allows it"),
    "consent": _l("Your consent"),
    "exception": _l("An exception in law"),
    "none": _l("No basis"),
}

MANDATES: dict[str, str] = {
    "custodian": _l("custodian of a minor"),
    "guardian_personal": _l("guardian in personal matters"),
    "continuing_poa_personal": _l("attorney under a continuing power of attorney"),
}

ACTIONS: dict[str, str] = {
    "request": _l("Asked for consent"),
    "grant": _l("Consent given"),
    "record": _l("Consent recorded"),
    "refuse": _l("Refused"),
    "withdraw": _l("Withdrawn"),
    "expire": _l("Expired"),
    "end": _l("Ended"),
}

ACTORS: dict[str, str] = {
    "person": _l("you"),
    "representative": _l("your representative"),
    "professional": _l("a professional"),
    "system": _l("the service automatically"),
}

METHODS: dict[str, str] = {
    "portal": _l("in this service, after identification"),
    "in_person": _l("in person, recorded by a professional"),
    "paper": _l("on paper"),
}

#: What an organisation that received data under a withdrawn consent did with it (docs/withdrawal.md).
ATTESTATION_STATUSES: dict[str, str] = {
    "pending": _l("Waiting for the answer"),
    "overdue": _l("No answer in time"),
    "deleted": _l("Deleted"),
    "retained": _l("Kept because a law requires it"),
}

#: The laws under which an organisation may keep data after a withdrawal (broker/services/attestations.py,
#: RETENTION_STATUTES), by their names and numbers in the statute book.
STATUTES: dict[str, str] = {
    "703/2023": _l("Act on the Processing of Client Data in Healthcare and Social Welfare (703/2023)"),
    "380/2023": _l("Act on the Organisation of Employment Services (380/2023)"),
    "381/2023": _l("Act on Multisectoral Joint Services Promoting Employment (381/2023)"),
    "785/1992": _l("Act on the Status and Rights of Patients (785/1992)"),
    "94/2022": _l("Decree of the Ministry of Social Affairs and Health on Patient Documents (94/2022)"),
    "831/1994": _l("Archives Act (831/1994)"),
}

#: How a log entry came about: the organisation asked for the information, or it was sent to it (a notice).
KINDS: dict[str, str] = {
    "request": _l("They asked for it"),
    "notice": _l("Sent to them"),
}

UNKNOWN = _l("Other")

TABLES: dict[str, dict[str, str]] = {
    "org_type": ORG_TYPES,
    "role": ROLES,
    "category": CATEGORIES,
    "category_hint": CATEGORY_HINTS,
    "purpose": PURPOSES,
    "exception": EXCEPTIONS,
    "consent_status": CONSENT_STATUSES,
    "request_status": REQUEST_STATUSES,
    "effect": EFFECTS,
    "basis_kind": BASIS_KINDS,
    "mandate": MANDATES,
    "action": ACTIONS,
    "actor": ACTORS,
    "method": METHODS,
    "kind": KINDS,
    "attestation_status": ATTESTATION_STATUSES,
    "statute": STATUTES,
}
