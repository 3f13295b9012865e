"""The test-only switch that turns the decision lock off (BROKER_TEST_DISABLE_DECISION_LOCK) cannot reach a served
broker: it is refused outside test mode, and a Settings built without `from_env` ignores it outside test mode."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from broker.config import Settings
from broker.domain.errors import ConfigurationError

PRODUCTION = {"BROKER_DATABASE_URL": "postgresql+psycopg://broker@db/broker", "BROKER_ISSUER": "https://broker.example"}


@pytest.mark.parametrize(
    ("mode", "env"),
    [
        ("production", PRODUCTION),
        ("demo", {}),
        ("production", PRODUCTION | {"BROKER_TEST_DISABLE_DECISION_LOCK": "ON"}),
    ],
)
def test_the_decision_lock_switch_is_refused_outside_test_mode(mode: str, env: dict[str, str]) -> None:
    with pytest.raises(
        ConfigurationError, match=f"BROKER_TEST_DISABLE_DECISION_LOCK is allowed only in test mode, not in {mode} mode"
    ):
        Settings.from_env({"BROKER_MODE": mode, "BROKER_TEST_DISABLE_DECISION_LOCK": "on"} | env)


def test_the_decision_lock_switch_given_as_an_override_is_refused_outside_test_mode() -> None:
    with pytest.raises(ConfigurationError, match="BROKER_TEST_DISABLE_DECISION_LOCK is allowed only in test mode"):
        Settings.from_env({"BROKER_MODE": "production"} | PRODUCTION, test_disable_decision_lock=True)


def test_the_decision_lock_switch_turns_the_lock_off_in_test_mode() -> None:
    settings = Settings.from_env({"BROKER_MODE": "test", "BROKER_TEST_DISABLE_DECISION_LOCK": "on"})
    assert settings.test_disable_decision_lock is True
    assert settings.decision_lock is False


@pytest.mark.parametrize("value", [None, "", "off", "OFF"])
def test_the_decision_lock_is_on_unless_switched_off(value: str | None) -> None:
    env = {"BROKER_MODE": "test"} | ({} if value is None else {"BROKER_TEST_DISABLE_DECISION_LOCK": value})
    settings = Settings.from_env(env)
    assert settings.test_disable_decision_lock is False
    assert settings.decision_lock is True


@pytest.mark.parametrize("value", ["1", "yes", "true", "of"])
def test_a_switch_value_other_than_on_or_off_is_refused_by_name(value: str) -> None:
    with pytest.raises(ConfigurationError, match=f"BROKER_TEST_DISABLE_DECISION_LOCK must be on or off, not '{value}'"):
        Settings.from_env({"BROKER_MODE": "test", "BROKER_TEST_DISABLE_DECISION_LOCK": value})


@pytest.mark.parametrize("mode", ["production", "demo"])
def test_a_settings_built_directly_keeps_the_lock_outside_test_mode(mode: str) -> None:
    settings = Settings(
        instance_path=Path("instance"),
        database_url="sqlite://",
        issuer="https://broker.example",
        mode=mode,
        test_disable_decision_lock=True,
    )
    assert settings.decision_lock is True
    with pytest.raises(ConfigurationError, match="BROKER_TEST_DISABLE_DECISION_LOCK is allowed only in test mode"):
        settings.verify_test_switches()
    assert replace(settings, mode="test").decision_lock is False
