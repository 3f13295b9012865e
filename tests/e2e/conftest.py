"""A real broker: the demo instance served by gunicorn on a free loopback port; a partner system's OAuth
client for it; and a real browser (Debian's Chromium driven by Playwright) for the portal's browser tests."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import pytest
import requests

from broker.client import BrokerClient
from tests.support import create_demo_instance, free_port

if TYPE_CHECKING:
    from authlib.integrations.requests_client import OAuth2Session
    from playwright.sync_api import Browser

ROOT = Path(__file__).resolve().parents[2]
BROKER = [sys.executable, "-m", "broker.cli"]


@dataclass
class Served:
    base_url: str
    instance: Path
    env: dict[str, str]
    demo: dict

    def broker(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*BROKER, *args], env=self.env, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
        )


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    instance = tmp_path_factory.mktemp("e2e") / "instance"
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "BROKER_MODE": "demo", "BROKER_INSTANCE_PATH": str(instance), "BROKER_ISSUER": base_url}
    env.pop("BROKER_DATABASE_URL", None)
    create_demo_instance(env, port)
    log_path = instance.parent / "server.log"
    log = log_path.open("w")
    server = subprocess.Popen(
        [*BROKER, "serve", "--port", str(port), "--workers", "2"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=log,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(f"{base_url}/healthz", timeout=1).ok:
                    break
            except requests.RequestException:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the broker did not start: {log_path.read_text()}")
            time.sleep(0.1)
        demo = json.loads((instance / "demo.json").read_text())
        yield Served(base_url=base_url, instance=instance, env=env, demo=demo)
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


@pytest.fixture(scope="module")
def kisalli(served: Served) -> Iterator[BrokerClient]:
    """Kisälli's system, through the partner client (broker/client)."""
    with BrokerClient.from_demo(served.instance, "kisalli") as client:
        yield client


@pytest.fixture(scope="module")
def health(served: Served) -> Iterator[BrokerClient]:
    """The health centre's system, through the partner client."""
    with BrokerClient.from_demo(served.instance, "varha-health") as client:
        yield client


def partner_session(served: Served, client_id: str) -> OAuth2Session:
    """A demo partner system's OAuth client, built exactly as docs/examples/disclose.py builds it (Authlib,
    `private_key_jwt`, DPoP-bound tokens with a fresh proof on every request), with a fresh access token."""
    spec = importlib.util.spec_from_file_location("disclose_example", ROOT / "docs" / "examples" / "disclose.py")
    assert spec and spec.loader
    example: Any = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    session: OAuth2Session
    session, base_url = example.broker_session(client_id, served.instance)
    assert base_url == served.base_url
    return session


#: How Chromium is started here: headless, no sandbox (root), and nothing that reaches out to the network.
#: Playwright adds `--headless` and a fresh, empty `--user-data-dir` of its own to every launch.
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def chromium_executable() -> str | None:
    """The system's Chromium: `BROKER_CHROMIUM` (a path or a command name), else `chromium` on the PATH.
    Playwright's own browser download is never used."""
    wanted = os.environ.get("BROKER_CHROMIUM") or "chromium"
    return shutil.which(wanted)


def _browser_unavailable(reason: str) -> NoReturn:
    """In CI a missing browser is a failure (.ci/run installs it); on a developer's machine the tests skip."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: browser tests must run)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One headless Chromium per test module; each test opens its own context (cookies, storage)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _browser_unavailable("playwright is not installed: pip install -e '.[test]'")
    executable = chromium_executable()
    if executable is None:
        _browser_unavailable("Chromium not found: install Debian's chromium, or set BROKER_CHROMIUM")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, headless=True, args=list(CHROMIUM_ARGS))
        try:
            yield launched
        finally:
            launched.close()


def consent_to_health(kisalli: BrokerClient, person_id: str, category: str, purpose: str) -> dict[str, Any]:
    """Kisälli records, in person and witnessed, the person's consent to disclose `category` to the health centre
    for `purpose`; the consent as the API answers it."""
    return kisalli.record_consent(
        person_id,
        recipients=["varha-health"],
        categories=[category],
        purposes=[purpose],
        method="in_person",
        witness="Pekka Salo",
    )
