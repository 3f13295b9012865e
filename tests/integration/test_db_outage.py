"""Database outage evidence (issue #6, graceful degradation): a served broker — `broker serve`, gunicorn, two workers,
each running the audit sequencer's thread — on a PostgreSQL cluster of its own, whose server is stopped with
`pg_ctlcluster … stop -m immediate` (every backend killed, no shutdown checkpoint: a crash) while partner threads
ask for disclosures and tokens over real HTTP with DPoP-bound tokens, and started again a few seconds later.

What must hold:
- while PostgreSQL is down, every answer is 503 with `Retry-After` and the problem `database_unavailable`; a 2xx
  only for a request already under way when the stop began, or sent after the start began;
- never a 500 (nor any other 5xx), never a lost connection, no request slower than the request timeout;
- the first 2xx comes at most 5 s after PostgreSQL accepts connections again — nothing is restarted;
- every 2xx the clients saw has its disclosure row and its sequenced `disclosure:permit` entry, and
  `broker audit verify` passes afterwards; the server's log holds no unhandled error.

The shared cluster on 5432 is never touched: the test makes (or reuses) a cluster `broker_outage` with
`pg_createcluster` on a free port, stops it again at the end, and leaves it for the next run. It needs
pg_createcluster (Debian's postgresql-common) and root; it skips when pg_createcluster is missing and
BROKER_TEST_POSTGRES_URL is unset (a developer's machine without PostgreSQL), and fails when CI (which sets
BROKER_TEST_POSTGRES_URL) cannot run it.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests
from joserfc import jwt
from joserfc.jwk import OKPKey
from sqlalchemy import select, text

from broker.adapters.orm import AuditEntryRow, AuditLeafRow, DisclosureRow
from broker.app import build_broker
from broker.config import Settings
from tests.support import DpopSigner, create_demo_instance, free_port

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
BROKER = [sys.executable, "-m", "broker.cli"]
CLUSTER = "broker_outage"
DATABASE = "broker_outage"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
REQUEST_TIMEOUT = 10  # BROKER_REQUEST_TIMEOUT of the served broker: gunicorn's worker timeout
DOWN = 3.0  # seconds PostgreSQL stays stopped
FIRST_SUCCESS_WITHIN = 5.0  # seconds after PostgreSQL accepts connections again
DISCLOSING_CLIENTS = 3


# -- a PostgreSQL cluster of the test's own ----------------------------------------------------------------------


@dataclass
class Cluster:
    version: str
    port: int

    def ctl(self, action: str, *options: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        # --skip-systemctl-redirect: pg_ctl itself, also where systemd manages the other clusters (as .ci/run does).
        return subprocess.run(
            ["pg_ctlcluster", "--skip-systemctl-redirect", self.version, CLUSTER, action, *options],
            capture_output=True,
            text=True,
            timeout=60,
            check=check,
        )

    def start_in_background(self) -> subprocess.Popen[str]:
        return subprocess.Popen(
            ["pg_ctlcluster", "--skip-systemctl-redirect", self.version, CLUSTER, "start"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def accepts_connections(self) -> bool:
        try:
            with psycopg.connect(
                host="127.0.0.1", port=self.port, user="postgres", dbname="postgres", connect_timeout=2
            ):
                return True
        except psycopg.OperationalError:
            return False

    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{DATABASE}"


def _listed() -> dict[str, tuple[str, int, str]]:
    """pg_lsclusters: cluster name → (version, port, status), for this test's cluster name only."""
    found = {}
    listing = subprocess.run(["pg_lsclusters", "-h"], capture_output=True, text=True, timeout=30, check=True)
    for line in listing.stdout.splitlines():
        version, name, port, status, *_ = line.split()
        if name == CLUSTER:
            found[name] = (version, int(port), status)
    return found


def _newest_version() -> str:
    versions = [p.name for p in Path("/etc/postgresql").iterdir() if p.name.replace(".", "").isdigit()]
    if not versions:
        pytest.fail("no PostgreSQL version under /etc/postgresql, although pg_createcluster is installed")
    return max(versions, key=lambda v: [int(part) for part in v.split(".")])


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    if shutil.which("pg_createcluster") is None:
        if not os.environ.get("BROKER_TEST_POSTGRES_URL"):
            pytest.skip("pg_createcluster (postgresql-common) is not installed and BROKER_TEST_POSTGRES_URL is unset")
        pytest.fail("BROKER_TEST_POSTGRES_URL is set but pg_createcluster is missing: the outage test needs a cluster")
    # Two runs of this test on one machine (two checkouts) would stop each other's server: they take turns.
    with (Path(tempfile.gettempdir()) / f"{CLUSTER}.lock").open("w") as turn:
        fcntl.flock(turn, fcntl.LOCK_EX)
        yield from _cluster()


def _cluster() -> Iterator[Cluster]:
    existing = _listed().get(CLUSTER)
    if existing is None:
        version = _newest_version()
        created = subprocess.run(
            ["pg_createcluster", version, CLUSTER, "-p", str(free_port()), "--", "--auth=trust"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert created.returncode == 0, created.stdout + created.stderr
        existing = _listed()[CLUSTER]
    version, port, status = existing
    found = Cluster(version, port)
    if status != "online":
        started = found.ctl("start", check=False)
        assert started.returncode == 0, f"the test's cluster did not start: {started.stdout}{started.stderr}"
    with psycopg.connect(
        host="127.0.0.1", port=port, user="postgres", dbname="postgres", autocommit=True, connect_timeout=5
    ) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
        admin.execute(f"CREATE DATABASE {DATABASE}")
        # The test kills PostgreSQL's processes, not the machine: what they wrote is in the kernel's page cache with
        # or without fsync, so turning it off changes nothing the test shows — and spares the restart seconds of
        # syncing the data directory before crash recovery, and its end-of-recovery checkpoint the syncs.
        admin.execute("ALTER SYSTEM SET fsync = off")
        admin.execute("SELECT pg_reload_conf()")
    try:
        yield found
    finally:
        found.ctl("stop", check=False)  # left for the next run, not running


# -- the served broker ---------------------------------------------------------------------------------------------


@dataclass
class Served:
    base_url: str
    instance: Path
    env: dict[str, str]
    demo: dict[str, Any]
    log: Path

    def settings(self) -> Settings:
        return Settings.from_env(self.env)


@pytest.fixture(scope="module")
def served(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    instance = tmp_path_factory.mktemp("outage") / "instance"
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "BROKER_MODE": "demo",
        "BROKER_INSTANCE_PATH": str(instance),
        "BROKER_ISSUER": base_url,
        "BROKER_DATABASE_URL": cluster.url(),
        # Tighter than the defaults, so that "no request slower than the request timeout" says more: 2 + 2 + 5 < 10.
        "BROKER_REQUEST_TIMEOUT": str(REQUEST_TIMEOUT),
        "BROKER_DB_CONNECT_TIMEOUT": "2",
        "BROKER_DB_POOL_TIMEOUT": "2",
        "BROKER_DB_STATEMENT_TIMEOUT": "5",
        # A few clients asking as fast as they are answered are well over a partner's rate limit: this is a test of
        # the database, not of the limits (broker/http/limits.py).
        "BROKER_RATE_LIMITS": "off",
    }
    create_demo_instance(env, port)
    log_path = instance.parent / "server.log"
    with log_path.open("w") as log:
        server = subprocess.Popen(
            [*BROKER, "serve", "--port", str(port), "--workers", "2"],
            env=env,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
            start_new_session=True,  # its own process group, ended whole below
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(f"{base_url}/readyz", timeout=2).ok:
                    break
            except requests.RequestException:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the broker did not start: {log_path.read_text()}")
            time.sleep(0.1)
        demo = json.loads((instance / "demo.json").read_text())
        yield Served(base_url=base_url, instance=instance, env=env, demo=demo, log=log_path)
    finally:
        os.killpg(server.pid, 15)
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, 9)
            server.wait()


# -- partner systems -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    what: str  # "disclose" | "token"
    started: float
    ended: float
    status: int | None  # None: no HTTP answer (the connection failed)
    code: str | None = None
    retry_after: str | None = None
    disclosure_id: str | None = None
    audit_entry_id: int | None = None
    error: str | None = None


@dataclass
class Answers:
    lock: threading.Lock = field(default_factory=threading.Lock)
    all: list[Answer] = field(default_factory=list)

    def add(self, answer: Answer) -> None:
        with self.lock:
            self.all.append(answer)

    def ok(self, what: str) -> int:
        with self.lock:
            return sum(1 for a in self.all if a.what == what and a.status is not None and 200 <= a.status < 300)


class Partner:
    """A partner system's client over real HTTP: `private_key_jwt` assertions (RFC 7523) and DPoP-bound tokens
    (RFC 9449, tests.support.DpopSigner), each client with a key pair of its own."""

    def __init__(self, served: Served, client_id: str) -> None:
        entry = next(p for p in served.demo["partners"] if p["client_id"] == client_id)
        self.served = served
        self.client_id = client_id
        self.key = OKPKey.import_key(json.loads((served.instance / entry["key_file"]).read_text()))
        self.actor = entry["actor"]
        self.signer = DpopSigner()
        self.http = requests.Session()
        self.token: str | None = None
        self.token_type = "Bearer"

    def _assertion(self) -> str:
        now = int(time.time())
        claims = {
            "iss": self.client_id,
            "sub": self.client_id,
            "aud": self.served.demo["issuer"],
            "iat": now,
            "exp": now + 60,
            "jti": secrets.token_urlsafe(24),
            "act": self.actor,
        }
        return jwt.encode({"alg": "Ed25519", "kid": self.key.kid}, claims, self.key, algorithms=["Ed25519"])

    def token_request(self) -> requests.Response:
        url = f"{self.served.base_url}/oauth/token"
        form = {
            "grant_type": "client_credentials",
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": self._assertion(),
        }
        response = self.http.post(
            url, data=form, headers={"DPoP": self.signer.proof("POST", url)}, timeout=REQUEST_TIMEOUT + 5
        )
        self.signer.remember_nonce(response.headers)
        if response.status_code == 200:
            issued = response.json()
            self.token, self.token_type = issued["access_token"], issued["token_type"]
        return response

    def fetch_token(self) -> None:
        for _ in range(3):  # a second try only for a DPoP nonce the server may ask for (RFC 9449 §8)
            if self.token_request().status_code == 200:
                return
        raise AssertionError(f"{self.client_id} got no token")

    def disclose(self, person_id: str) -> requests.Response:
        url = f"{self.served.base_url}/api/v1/disclosures"
        assert self.token is not None
        if self.token_type.lower() == "dpop":
            headers = self.signer.headers("POST", url, self.token)
        else:
            headers = {"Authorization": f"{self.token_type} {self.token}"}
        body = {"person_id": person_id, "category": "work_assessment", "purpose": "work_capacity_assessment"}
        response = self.http.post(url, json=body, headers=headers, timeout=REQUEST_TIMEOUT + 5)
        self.signer.remember_nonce(response.headers)
        return response


def _ask(answers: Answers, what: str, call: Any) -> Answer:
    began = time.monotonic()
    try:
        response = call()
    except requests.RequestException as error:
        answer = Answer(what, began, time.monotonic(), None, error=type(error).__name__)
        answers.add(answer)
        return answer
    ended = time.monotonic()
    body: dict[str, Any] = {}
    if response.headers.get("Content-Type", "").startswith(("application/json", "application/problem+json")):
        body = response.json()
    answer = Answer(
        what,
        began,
        ended,
        response.status_code,
        code=body.get("code") or body.get("error"),
        retry_after=response.headers.get("Retry-After"),
        disclosure_id=body.get("disclosure_id"),
        audit_entry_id=body.get("audit_entry_id"),
    )
    answers.add(answer)
    return answer


def _keep_asking(answers: Answers, stop: threading.Event, what: str, call: Any) -> None:
    while not stop.is_set():
        answer = _ask(answers, what, call)
        # Sooner than Retry-After says: the test measures how soon the broker can answer again, not the client.
        time.sleep(0.1 if answer.status == 503 else 0.02)


# -- the test ------------------------------------------------------------------------------------------------------


def test_a_postgresql_stopped_and_started_under_load_gives_only_503s_while_down_and_recovers_by_itself(
    cluster: Cluster, served: Served
) -> None:
    mikko = next(p["person_id"] for p in served.demo["persons"] if p["login"] == "mikko")
    health = [Partner(served, "varha-health") for _ in range(DISCLOSING_CLIENTS)]
    kela = Partner(served, "kela")
    for partner in health:
        partner.fetch_token()
    answers = Answers()
    stop = threading.Event()
    threads = [
        threading.Thread(
            target=_keep_asking, args=(answers, stop, "disclose", lambda p=p: p.disclose(mikko)), daemon=True
        )
        for p in health
    ]
    threads.append(
        threading.Thread(target=_keep_asking, args=(answers, stop, "token", kela.token_request), daemon=True)
    )
    for thread in threads:
        thread.start()
    try:
        _wait(lambda: answers.ok("disclose") >= 10 and answers.ok("token") >= 2, 15, "no disclosures before the stop")

        stopping = time.monotonic()
        cluster.ctl("stop", "-m", "immediate")
        stopped = time.monotonic()
        time.sleep(DOWN)
        starting = time.monotonic()
        start = cluster.start_in_background()
        while not cluster.accepts_connections():
            assert time.monotonic() - starting < 60, "the test's cluster did not come back"
            time.sleep(0.02)
        back = time.monotonic()
        output, _ = start.communicate(timeout=60)
        assert start.returncode == 0, output
        _wait(lambda: any(a.status == 200 and a.ended > back for a in answers.all), 15, "no disclosure after the start")
        time.sleep(1.0)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=REQUEST_TIMEOUT + 10)

    seen = list(answers.all)
    lost = [a for a in seen if a.status is None]
    assert not lost, f"{len(lost)} requests lost their connection, e.g. {lost[:3]}"
    assert all(a.status in (200, 503) for a in seen), sorted({a.status for a in seen})
    slow = [a for a in seen if a.ended - a.started >= REQUEST_TIMEOUT]
    assert not slow, f"{len(slow)} requests took the request timeout or longer, e.g. {slow[:3]}"
    unavailable = [a for a in seen if a.status == 503]
    assert all(a.code == "database_unavailable" and (a.retry_after or "").isdigit() for a in unavailable), {
        (a.code, a.retry_after) for a in unavailable
    }
    while_down = [a for a in seen if a.started >= stopped and a.ended <= starting]
    assert {a.what for a in while_down if a.status == 503} == {"disclose", "token"}, "the outage was not seen"
    assert all(a.status == 503 for a in while_down), [a for a in while_down if a.status != 503][:3]
    # A 2xx only for a request under way before the stop had killed the server, or sent after the start began.
    assert all(a.started < stopped or a.ended > starting for a in seen if a.status == 200)
    first = min(a.ended for a in seen if a.what == "disclose" and a.status == 200 and a.ended > back)
    assert first - back <= FIRST_SUCCESS_WITHIN, f"the first disclosure came {first - back:.1f} s after PostgreSQL"
    print(  # the evidence, for the log of the run (pytest -s)
        f"\n{len(seen)} requests, {len(unavailable)} answered 503; PostgreSQL took {stopped - stopping:.2f} s to stop, "
        f"was down {DOWN:.0f} s, took {back - starting:.2f} s to accept connections; the first disclosure came "
        f"{first - back:.2f} s after that"
    )

    disclosed = [a for a in seen if a.what == "disclose" and a.status == 200]
    broker = build_broker(served.settings())
    try:
        _wait(lambda: _pending(broker) == 0, 30, "the sequencer did not sequence what was appended")
        with broker.uow(write=False) as uow:
            rows = {
                row.id: row.audit_entry_id
                for row in uow.session.execute(select(DisclosureRow.id, DisclosureRow.audit_entry_id))
            }
            entries = {
                row.id: row
                for row in uow.session.execute(
                    select(AuditEntryRow.id, AuditLeafRow.idx, AuditEntryRow.event, AuditEntryRow.entry)
                    .outerjoin(AuditLeafRow, AuditLeafRow.entry_id == AuditEntryRow.id)
                    .where(AuditEntryRow.event == "disclosure:permit")
                )
            }
    finally:
        broker.db.dispose()
    for answer in disclosed:
        assert rows.get(answer.disclosure_id) == answer.audit_entry_id, f"{answer.disclosure_id} has no row"
        entry = entries.get(answer.audit_entry_id)  # type: ignore[arg-type]
        assert entry is not None and entry.idx is not None, f"{answer.disclosure_id}: no sequenced permit entry"
        assert json.loads(bytes(entry.entry))["detail"]["disclosure_id"] == answer.disclosure_id

    verified = subprocess.run(
        [*BROKER, "audit", "verify"], env=served.env, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr
    log = served.log.read_text(errors="replace")
    assert '"unhandled error"' not in log and "Traceback" not in log, log[-3000:]
    assert '"database unavailable"' in log


def _pending(broker: Any) -> int:
    with broker.uow(write=False) as uow:
        return int(uow.session.scalar(text("SELECT count(*) FROM audit_pending")) or 0)


def _wait(condition: Any, seconds: float, failure: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, failure
        time.sleep(0.05)
