"""Consent Broker: consents, policy-checked disclosures and a verifiable log."""
