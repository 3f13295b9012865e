"""Holding the broker's FHIR answers to FHIR R4 (4.0.1).

The structure — elements, cardinalities, primitive formats, no unknown elements — is checked by the R4 models of
fhir.resources 6.4 (pyproject.toml says why that version). Those models do not check value-set bindings, so the
required ones the broker's resources touch are checked here against the codes R4 lists for them, with the few
invariants of consent.html, bundle.html and capabilitystatement.html that concern what the broker fills in."""

from __future__ import annotations

from typing import Any

from fhir.resources import __fhir_version__
from fhir.resources.auditevent import AuditEvent
from fhir.resources.bundle import Bundle
from fhir.resources.capabilitystatement import CapabilityStatement
from fhir.resources.consent import Consent

assert __fhir_version__ == "4.0.1", f"fhir.resources models FHIR {__fhir_version__}, not R4"

# Required bindings (R4 terminologies, each value set's page).
CONSENT_STATE = {"draft", "proposed", "active", "rejected", "inactive", "entered-in-error"}  # consent-state-codes
CONSENT_SCOPE = {"adr", "research", "patient-privacy", "treatment"}  # consent-scope
PROVISION_TYPE = {"deny", "permit"}  # consent-provision-type
AUDIT_ACTION = {"C", "R", "U", "D", "E"}  # audit-event-action
AUDIT_OUTCOME = {"0", "4", "8", "12"}  # audit-event-outcome
NETWORK_TYPE = {"1", "2", "3", "4", "5"}  # network-type
BUNDLE_TYPE = {
    "document",
    "message",
    "transaction",
    "transaction-response",
    "batch",
    "batch-response",
    "history",
    "searchset",
    "collection",
}  # bundle-type
SEARCH_MODE = {"match", "include", "outcome"}  # search-entry-mode
PUBLICATION_STATUS = {"draft", "active", "retired", "unknown"}  # publication-status
CAPABILITY_KIND = {"instance", "capability", "requirements"}  # capability-statement-kind
REST_MODE = {"client", "server"}  # restful-capability-mode
TYPE_INTERACTION = {
    "read",
    "vread",
    "update",
    "patch",
    "delete",
    "history-instance",
    "history-type",
    "create",
    "search-type",
}  # type-restful-interaction
VERSIONING = {"no-version", "versioned", "versioned-update"}  # versioning-policy
CONDITIONAL_READ = {"not-supported", "modified-since", "not-match", "full-support"}  # conditional-read-status
SEARCH_PARAM_TYPE = {
    "number",
    "date",
    "string",
    "token",
    "reference",
    "composite",
    "quantity",
    "uri",
    "special",
}  # search-param-type
# restful-security-service (extensible): the codes of its code system.
SECURITY_SERVICE = {"OAuth", "SMART-on-FHIR", "NTLM", "Basic", "Kerberos", "Certificates"}


def validate_consent(resource: dict[str, Any]) -> Consent:
    consent = Consent.parse_obj(resource)
    assert_json_form(resource)
    assert resource["status"] in CONSENT_STATE
    assert [c["code"] for c in resource["scope"]["coding"]] and all(
        c["system"] == "http://terminology.hl7.org/CodeSystem/consentscope" and c["code"] in CONSENT_SCOPE
        for c in resource["scope"]["coding"]
    )
    assert resource.get("policy") or resource.get("policyRule"), "ppc-1: a policy or a policy rule"
    assert resource.get("patient"), "ppc-2: a privacy consent names its patient"
    assert resource["provision"]["type"] in PROVISION_TYPE
    return consent


def validate_audit_event(resource: dict[str, Any]) -> AuditEvent:
    event = AuditEvent.parse_obj(resource)
    assert_json_form(resource)
    assert resource["action"] in AUDIT_ACTION
    assert resource["outcome"] in AUDIT_OUTCOME
    for agent in resource["agent"]:
        if "network" in agent:
            assert agent["network"]["type"] in NETWORK_TYPE
    return event


def assert_json_form(value: Any, where: str = "") -> None:
    """R4 json.html: an element that is present has a value — no nulls, no empty arrays or objects, no empty or
    untrimmed strings."""
    if isinstance(value, dict):
        assert value, f"an empty object at {where or '/'}"
        for name, member in value.items():
            assert_json_form(member, f"{where}/{name}")
    elif isinstance(value, list):
        assert value, f"an empty array at {where}"
        for i, item in enumerate(value):
            assert_json_form(item, f"{where}[{i}]")
    else:
        assert value is not None, f"null at {where}"
        if isinstance(value, str):
            assert value and value == value.strip(), f"an empty or untrimmed string at {where}"


def validate_bundle(document: dict[str, Any]) -> Bundle:
    """Validate a Bundle and every resource in it; returns the parsed Bundle."""
    bundle = Bundle.parse_obj(document)
    assert_json_form(document)
    assert document["type"] in BUNDLE_TYPE
    assert ("total" in document) == (document["type"] in ("searchset", "history")), "bdl-1: total only for a search"
    full_urls = [entry["fullUrl"] for entry in document.get("entry", [])]
    assert len(full_urls) == len(set(full_urls)), "bdl-7: fullUrl unique"
    for entry in document.get("entry", []):
        resource = entry["resource"]
        # R4 bundle.html: a fullUrl in the RESTful form ends with the resource's type and id.
        assert entry["fullUrl"].endswith(f"/{resource['resourceType']}/{resource['id']}"), entry["fullUrl"]
        assert ("search" in entry) == (document["type"] == "searchset"), "bdl-2: search only in a search result"
        if "search" in entry:
            assert entry["search"]["mode"] in SEARCH_MODE
        if resource["resourceType"] == "Consent":
            validate_consent(resource)
        elif resource["resourceType"] == "AuditEvent":
            validate_audit_event(resource)
    return bundle


def validate_capability_statement(document: dict[str, Any]) -> CapabilityStatement:
    """Validate a CapabilityStatement with its required bindings and the invariants of capabilitystatement.html
    that concern a server's REST statement."""
    statement = CapabilityStatement.parse_obj(document)
    assert_json_form(document)
    assert document["status"] in PUBLICATION_STATUS
    assert document["kind"] in CAPABILITY_KIND
    assert document["fhirVersion"] == "4.0.1"
    assert document["format"], "format: 1..*"
    assert document.get("rest") or document.get("messaging") or document.get("document"), "cpb-1"
    assert document.get("description") or document.get("software") or document.get("implementation"), "cpb-2"
    if document["kind"] == "instance":
        assert "implementation" in document, "cpb-14: an instance's statement has its implementation"
    for rest in document.get("rest", []):
        assert rest["mode"] in REST_MODE
        for service in rest.get("security", {}).get("service", []):
            for code in service.get("coding", []):
                if code["system"] == "http://terminology.hl7.org/CodeSystem/restful-security-service":
                    assert code["code"] in SECURITY_SERVICE, code
        types = [resource["type"] for resource in rest.get("resource", [])]
        assert len(types) == len(set(types)), "cpb-9: a resource is described once per mode"
        for resource in rest.get("resource", []):
            for interaction in resource.get("interaction", []):
                assert interaction["code"] in TYPE_INTERACTION, interaction
            assert resource.get("versioning", "no-version") in VERSIONING
            assert resource.get("conditionalRead", "not-supported") in CONDITIONAL_READ
            names = [parameter["name"] for parameter in resource.get("searchParam", [])]
            assert len(names) == len(set(names)), "cpb-12: search parameter names unique per resource"
            for parameter in resource.get("searchParam", []):
                assert parameter["type"] in SEARCH_PARAM_TYPE, parameter
    return statement
