"""A real broker: the demo instance served by gunicorn on a free loopback port."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

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


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    instance = tmp_path_factory.mktemp("e2e") / "instance"
    port = _free_port()
    base_url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "BROKER_MODE": "demo", "BROKER_INSTANCE_PATH": str(instance), "BROKER_ISSUER": base_url}
    env.pop("BROKER_DATABASE_URL", None)
    created = subprocess.run(
        [*BROKER, "demo", "--no-serve", "--port", str(port)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert created.returncode == 0, created.stderr
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
