"""Crashing a served broker on purpose (issue #6, the crash evidence; tests/e2e/test_crash.py).

- `Server` — `broker serve` under gunicorn, in a process group of its own. It finds the master's workers, tells
  which of them holds a client's connection (is in the middle of a request) and which one is the elected audit
  sequencer, SIGKILLs them, and after the master is killed kills what is left of the group and starts it again on
  the same port — what a supervisor does that stops the whole control group when the main process dies
  (systemd's default `KillMode=control-group`).
- `Partner` — a partner system over real HTTP: `private_key_jwt` token requests (RFC 7523) with DPoP proofs, and
  disclosures sent with an `Idempotency-Key` and retried with that key until a final answer.
- `Chaos` — the thread that kills, at points spread over the run, each as soon as its target is mid-request.
- `Tally` — what the clients saw: every answer, every 2xx, every lost connection.
- `check_world` — what the database must hold afterwards.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import secrets
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
import urllib3
from joserfc import jwt
from joserfc.jwk import OKPKey
from sqlalchemy import func, select

from broker.adapters.envelope import Sealed, idempotency_aad, open_sealed
from broker.adapters.leader import ADVISORY_KEY
from broker.adapters.orm import (
    AuditEntryRow,
    AuditHeadRow,
    AuditLeafRow,
    AuditPendingRow,
    DisclosureRow,
    IdempotencyKeyRow,
)
from broker.http.api.idempotency import HEADER as IDEMPOTENCY_KEY
from broker.http.api.idempotency import REPLAYED
from broker.services import Broker
from tests.support import DpopSigner

ROOT = Path(__file__).resolve().parents[2]
BROKER = [sys.executable, "-m", "broker.cli"]
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
#: The audit events that a disclosure row stands beside (broker/services/disclosures.py, notices.py).
DISCLOSURE_EVENTS = ("disclosure:permit", "disclosure:deny", "notice:send")


# -- the process group ---------------------------------------------------------------------------------------------


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, parent pid, process group) of a live process, from /proc/<pid>/stat; None once it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name is in parentheses and may hold spaces: the fields that follow start after the last ")".
    state, ppid, pgrp = raw[raw.rindex(")") + 2 :].split()[:3]
    return state, int(ppid), int(pgrp)


def _pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def _socket_inodes(pid: int) -> set[int]:
    inodes = set()
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return inodes
    for name in names:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{name}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def _established() -> list[tuple[int, int]]:
    """(local port, inode) of every established IPv4 TCP socket of this network namespace.

    Asked of the kernel through sock_diag netlink (linux/inet_diag.h), which filters by state itself: reading
    /proc/net/tcp instead costs tens of milliseconds once thousands of closed connections wait in TIME_WAIT, longer
    than a request lasts, so a worker seen serving would often have finished before it was killed. /proc/net/tcp is
    the fallback where netlink is not available."""
    try:
        return _established_by_netlink()
    except OSError:
        found = []
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            parts = line.split()
            if parts[3] == _ESTABLISHED:
                found.append((int(parts[1].rsplit(":", 1)[1], 16), int(parts[9])))
        return found


_ESTABLISHED = "01"  # TCP_ESTABLISHED, as /proc/net/tcp writes it
_NETLINK_SOCK_DIAG = 4
_SOCK_DIAG_BY_FAMILY = 20
_NLM_F_REQUEST_DUMP = 0x1 | 0x300
_NLMSG_ERROR, _NLMSG_DONE = 2, 3


def _established_by_netlink() -> list[tuple[int, int]]:
    found = []
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, _NETLINK_SOCK_DIAG) as sock:
        # struct inet_diag_req_v2: family, protocol, extensions, padding, the states wanted (a bit mask), and an
        # inet_diag_sockid (48 bytes) that a dump does not use.
        request = struct.pack("=BBBBI", socket.AF_INET, socket.IPPROTO_TCP, 0, 0, 1 << 1) + bytes(48)
        header = struct.pack("=IHHII", 16 + len(request), _SOCK_DIAG_BY_FAMILY, _NLM_F_REQUEST_DUMP, 1, 0)
        sock.send(header + request)
        while True:
            data = sock.recv(1 << 16)
            offset = 0
            while offset < len(data):
                length, kind = struct.unpack_from("=IH", data, offset)
                if kind == _NLMSG_DONE:
                    return found
                if kind == _NLMSG_ERROR:
                    raise OSError("sock_diag answered with an error")
                # struct inet_diag_msg after the 16-byte netlink header: family, state, timer, retransmits (4
                # bytes), the sockid (source port first, big-endian), then expires, queues, uid and the inode.
                body = offset + 16
                (port,) = struct.unpack_from(">H", data, body + 4)
                (inode,) = struct.unpack_from("=I", data, body + 4 + 48 + 16)
                found.append((port, inode))
                offset += (length + 3) & ~3
            if not data:
                return found


class Server:
    """One served broker: `broker serve --workers N` started in a new session, so that its process group is
    ours to kill and nothing else is in it."""

    def __init__(self, env: dict[str, str], port: int, log_path: Path, *, workers: int = 2) -> None:
        self.env = env
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}"
        self.log_path = log_path
        self.workers_wanted = workers
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.start_seconds: list[float] = []
        self.closed = False
        self._lock = threading.Lock()

    @property
    def master(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, timeout: float = 60.0) -> None:
        """Start the server (again) and wait until it answers. Refused once `stop` has been called: a thread that
        restarts a killed master must never leave a server running after the test (nor write into a folder that
        a later run may reuse)."""
        began = time.monotonic()
        with self._lock, self.log_path.open("ab") as log:
            if self.closed:
                raise RuntimeError("the server was stopped for good")
            self.process = subprocess.Popen(
                [*BROKER, "serve", "--port", str(self.port), "--workers", str(self.workers_wanted)],
                env=self.env,
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
                start_new_session=True,
            )
        deadline = began + timeout
        while True:
            try:
                if requests.get(f"{self.base_url}/healthz", timeout=2).ok:
                    break
            except requests.RequestException:
                pass
            if self.process.poll() is not None:
                raise RuntimeError(f"the broker exited with {self.process.returncode}: {self.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the broker did not answer within {timeout:.0f} s: {self.log_tail()}")
            time.sleep(0.05)
        self.starts += 1
        self.start_seconds.append(time.monotonic() - began)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no server log)"

    def group(self) -> list[int]:
        """The live (not zombie) processes of the server's process group."""
        if self.process is None:
            return []
        pgid = self.process.pid
        return [pid for pid in _pids() if (stat := _stat(pid)) is not None and stat[2] == pgid and stat[0] != "Z"]

    def workers(self) -> list[int]:
        if self.process is None or self.process.poll() is not None:
            return []
        master = self.master
        return [pid for pid in _pids() if (stat := _stat(pid)) is not None and stat[1] == master and stat[0] != "Z"]

    def busy_workers(self) -> list[int]:
        """The workers that hold an accepted client connection now: a sync worker holds one from accept to close,
        that is for exactly the time it is serving a request."""
        connected = {inode for local, inode in _established() if local == self.port}
        return [pid for pid in self.workers() if _socket_inodes(pid) & connected]

    def sequencer_worker(self, postgres_url: str | None) -> int | None:
        """The worker elected to sequence the audit log: on SQLite the holder of the election's file lock (an open
        descriptor of `<database>.sequencer`); on PostgreSQL the worker whose connection holds the advisory lock."""
        workers = self.workers()
        if postgres_url is None:
            for pid in workers:
                try:
                    names = os.listdir(f"/proc/{pid}/fd")
                except OSError:
                    continue
                for name in names:
                    try:
                        if os.readlink(f"/proc/{pid}/fd/{name}").endswith(".sequencer"):
                            return pid
                    except OSError:
                        continue
            return None
        ports = _advisory_holder_ports(postgres_url)
        if not ports:
            return None
        inodes = {inode for local, inode in _established() if local in ports}
        return next((pid for pid in workers if _socket_inodes(pid) & inodes), None)

    def kill(self, pid: int) -> bool:
        """SIGKILL one process of the group (checked to be one, so that a recycled pid is never hit)."""
        stat = _stat(pid)
        if self.process is None or stat is None or stat[2] != self.process.pid:
            return False
        os.kill(pid, signal.SIGKILL)
        return True

    def kill_all(self) -> None:
        """SIGKILL the master and everything left in its group, and reap the master."""
        if self.process is None:
            return
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
        self._kill_group()
        self.process.wait(timeout=30)
        deadline = time.monotonic() + 10
        while self.group() and time.monotonic() < deadline:
            self._kill_group()
            time.sleep(0.01)

    def stop(self) -> None:
        """A clean stop (SIGTERM lets gunicorn finish its requests), then nothing may be left of the group; and no
        start after it."""
        with self._lock:
            self.closed = True
        if self.process is None:
            return
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=20)
        self.kill_all()

    def _kill_group(self) -> None:
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)


def _advisory_holder_ports(postgres_url: str) -> set[int]:
    """The client ports of the PostgreSQL sessions holding the sequencer's advisory lock in the database of
    `postgres_url` (pg_locks shows a bigint key as classid = high 32 bits, objid = low 32 bits, objsubid = 1)."""
    import psycopg

    url = postgres_url.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as connection:
        rows = connection.execute(
            "SELECT a.client_port FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 AND l.classid = %s AND l.objid = %s "
            "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            ((ADVISORY_KEY >> 32) & 0xFFFFFFFF, ADVISORY_KEY & 0xFFFFFFFF),
        ).fetchall()
    return {int(port) for (port,) in rows if port is not None}


# -- what the clients saw ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Seen:
    """The final 2xx for one Idempotency-Key."""

    key: str
    status: int
    disclosure_id: str
    audit_entry_id: int
    replayed: bool  # the answer carried the replay marker: the stored first response
    attempts: tuple[str, ...]  # what each try got: a status code, "aborted" (sent, connection lost), "refused"


@dataclass
class Tally:
    lock: threading.Lock = field(default_factory=threading.Lock)
    statuses: Counter[str] = field(default_factory=Counter)  # every answer and connection outcome, by kind
    seen: dict[str, Seen] = field(default_factory=dict)
    server_errors: list[str] = field(default_factory=list)  # every 500 (and other 5xx but 503): what it said
    unexpected: list[str] = field(default_factory=list)  # a final answer that is not a 2xx
    stuck: list[str] = field(default_factory=list)  # keys without a final answer before the deadline
    tokens: int = 0

    def count(self, what: str) -> None:
        with self.lock:
            self.statuses[what] += 1

    @property
    def finished(self) -> int:
        with self.lock:
            return len(self.seen) + len(self.unexpected) + len(self.stuck)


def _aborted(error: requests.RequestException) -> bool:
    """Whether a failed request may have reached the server: anything but a refused (or unmade) connection."""
    reason = error.args[0] if error.args else None
    reason = getattr(reason, "reason", reason)  # urllib3 wraps connection failures in MaxRetryError
    return not isinstance(reason, urllib3.exceptions.NewConnectionError | urllib3.exceptions.ConnectTimeoutError)


# -- a partner system ----------------------------------------------------------------------------------------------


class Partner:
    """One partner system's client with a DPoP key of its own (one per client thread)."""

    def __init__(
        self,
        base_url: str,
        issuer: str,
        client_id: str,
        key: OKPKey,
        actor: dict[str, str],
        tally: Tally,
        stop: threading.Event | None = None,
    ) -> None:
        self.base_url = base_url
        self.stop = stop or threading.Event()  # set: give up at once (the run has failed already)
        self.issuer = issuer
        self.client_id = client_id
        self.key = key
        self.actor = actor
        self.tally = tally
        self.signer = DpopSigner()
        self.http = requests.Session()
        self.token: str | None = None
        self.token_type = ""

    def _assertion(self) -> str:
        now = int(time.time())
        claims = {
            "iss": self.client_id,
            "sub": self.client_id,
            "aud": self.issuer,
            "iat": now,
            "exp": now + 60,
            "jti": secrets.token_urlsafe(24),  # fresh for every try: a used assertion is refused (RFC 7523 §3)
            "act": self.actor,
        }
        return jwt.encode({"alg": "Ed25519", "kid": self.key.kid}, claims, self.key, algorithms=["Ed25519"])

    def fetch_token(self, deadline: float) -> None:
        """A DPoP-bound access token (RFC 9449 §5), asked for until one comes or the deadline passes."""
        url = f"{self.base_url}/oauth/token"
        while time.monotonic() < deadline and not self.stop.is_set():
            form = {
                "grant_type": "client_credentials",
                "client_assertion_type": ASSERTION_TYPE,
                "client_assertion": self._assertion(),
            }
            try:
                response = self.http.post(url, data=form, headers={"DPoP": self.signer.proof("POST", url)}, timeout=30)
            except requests.RequestException as error:
                self.tally.count("token:" + ("aborted" if _aborted(error) else "refused"))
                time.sleep(0.05)
                continue
            self.signer.remember_nonce(response.headers)
            self.tally.count(f"token:{response.status_code}")
            if response.status_code == 200:
                issued = response.json()
                self.token, self.token_type = issued["access_token"], issued["token_type"]
                self.tally.count(f"token_type:{self.token_type}")
                with self.tally.lock:
                    self.tally.tokens += 1
                return
            if response.status_code >= 500 and response.status_code != 503:
                with self.tally.lock:
                    self.tally.server_errors.append(f"POST /oauth/token {response.status_code}: {response.text[:300]}")
            elif response.status_code not in (400, 429, 503) or (
                response.status_code == 400 and response.json().get("error") != "use_dpop_nonce"
            ):
                raise AssertionError(f"token request refused: {response.status_code} {response.text[:300]}")
            time.sleep(_retry_after(response))
        raise TimeoutError("no access token before the deadline")

    def _auth_headers(self, method: str, url: str) -> dict[str, str]:
        assert self.token is not None
        if self.token_type.lower() == "dpop":
            return self.signer.headers(method, url, self.token)
        return {"Authorization": f"{self.token_type} {self.token}"}

    def disclose(self, key: str, body: dict[str, Any], deadline: float) -> None:
        """Ask until a final answer; every try with the same Idempotency-Key and a fresh DPoP proof."""
        url = f"{self.base_url}/api/v1/disclosures"
        attempts: list[str] = []
        while time.monotonic() < deadline and not self.stop.is_set():
            if self.token is None:
                self.fetch_token(deadline)
            # The key as an sf-string (RFC 9651 §3.3.3), as draft-ietf-httpapi-idempotency-key-header §2.1 has it.
            headers = self._auth_headers("POST", url) | {IDEMPOTENCY_KEY: f'"{key}"'}
            try:
                response = self.http.post(url, json=body, headers=headers, timeout=30)
            except requests.RequestException as error:
                outcome = "aborted" if _aborted(error) else "refused"
                attempts.append(outcome)
                self.tally.count(outcome)
                time.sleep(0.02 if outcome == "aborted" else 0.05)
                continue
            self.signer.remember_nonce(response.headers)
            status = response.status_code
            attempts.append(str(status))
            self.tally.count(str(status))
            if 200 <= status < 300:
                answer = response.json()
                seen = Seen(
                    key=key,
                    status=status,
                    disclosure_id=answer["disclosure_id"],
                    audit_entry_id=int(answer["audit_entry_id"]),
                    replayed=response.headers.get(REPLAYED) == "true",
                    attempts=tuple(attempts),
                )
                with self.tally.lock:
                    self.tally.seen[key] = seen
                return
            if status == 401:
                # An expired or revoked token, or a proof the server wants with its nonce (RFC 9449 §8): the
                # nonce is remembered above; a new token unless only the nonce was asked for.
                if "use_dpop_nonce" not in response.headers.get("WWW-Authenticate", ""):
                    self.token = None
                continue
            if status in (409, 429, 503):
                time.sleep(_retry_after(response))
                continue
            if status >= 500:
                with self.tally.lock:
                    self.tally.server_errors.append(f"{key}: {status} {response.text[:300]}")
                time.sleep(0.05)
                continue
            with self.tally.lock:
                self.tally.unexpected.append(f"{key}: {status} {response.text[:300]}")
            return
        with self.tally.lock:
            self.tally.stuck.append(f"{key}: {attempts[-10:]}")


def _retry_after(response: requests.Response) -> float:
    """The server's Retry-After in seconds (RFC 9110 §10.2.3), capped; a short pause when it gives none."""
    try:
        return min(float(response.headers.get("Retry-After", "")), 2.0)
    except ValueError:
        return 0.05


# -- the chaos -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Kill:
    kind: str  # "worker" | "sequencer" | "master"
    pid: int
    mid_request: bool  # the target (for the master: some worker) held a client connection when it was killed
    progress: int  # disclosures finished when it happened
    at: float  # seconds since the chaos started
    restart_seconds: float | None = None


class Chaos(threading.Thread):
    """Carries out a `kill_plan`: each kill waits until `progress()` (disclosures finished) reaches its point, then
    takes its target as soon as that is in the middle of a request. After killing the master it starts the server
    again and calls `after_restart`."""

    def __init__(
        self,
        server: Server,
        plan: list[tuple[int, str]],
        progress: Callable[[], int],
        after_restart: Callable[[], None],
        rng: random.Random,
        postgres_url: str | None,
    ) -> None:
        super().__init__(name="chaos", daemon=True)
        self.server = server
        self.plan = plan
        self.progress = progress
        self.after_restart = after_restart
        self.rng = rng
        self.postgres_url = postgres_url
        self.kills: list[Kill] = []
        self.done = 0  # kills of the plan carried out
        # How far past a kill point the clients may go: half the mean distance between kill points.
        self.slack = max(8, (plan[-1][0] - plan[0][0]) // (2 * len(plan)) if plan else 8)
        self.findings: list[str] = []  # what went wrong besides the kills: a master that exited by itself, …
        self.failure: BaseException | None = None
        self.stopping = threading.Event()  # set by the test when the clients are done
        self.aborted = threading.Event()  # set here when the chaos has failed: the clients stop too
        self._began = time.monotonic()

    def allowance(self) -> float:
        """How many disclosures the clients may have begun: up to a little past the kill after the one in hand.
        A restart holds the chaos back for seconds while the clients go on; were they let run ahead, the last kills
        would find them done. Held here, they are released as the next kill starts, and it finds them at work."""
        following = self.plan[self.done + 1 : self.done + 2]
        return following[0][0] + self.slack if following else math.inf

    def run(self) -> None:
        try:
            for milestone, kind in self.plan:
                while self.progress() < milestone and not self.stopping.is_set():
                    self._watch()
                    time.sleep(0.005)
                if self.stopping.is_set():
                    break
                self._strike(kind)
                self.done += 1
            while not self.stopping.is_set():
                self._watch()
                time.sleep(0.005)
        except BaseException as error:  # reported by the test
            self.failure = error
            self.aborted.set()

    def _watch(self) -> None:
        """A master that exits without being killed (gunicorn halts when a worker fails to boot) is a finding:
        it is noted with the end of the server's log, and the server is started again so that the run goes on."""
        assert self.server.process is not None
        code = self.server.process.poll()
        if code is None:
            return
        self.findings.append(f"the master exited by itself with {code}: {self.server.log_tail()}")
        self.server.kill_all()
        self.server.start()
        self.after_restart()

    def _strike(self, kind: str) -> None:
        """Kill a target of `kind` as soon as it holds a client's connection; when none has within 1.5 s, one is
        killed all the same (and the kill is recorded as between requests)."""
        target = None
        if kind == "sequencer":
            target = self._sequencer()
            if target is None:  # none elected for seconds: a finding of its own, not a reason to wait forever
                if not self.stopping.is_set():
                    self.findings.append("no worker was the elected audit sequencer for 10 s")
                return
        deadline = time.monotonic() + 1.5
        while not self.stopping.is_set():
            self._watch()
            busy = self.server.busy_workers()
            late = time.monotonic() > deadline
            if kind == "master":
                if busy or late:
                    self._kill_master(mid_request=bool(busy))
                    return
            else:
                candidates = [target] if target is not None else (self.server.workers() if late else busy)
                chosen = [pid for pid in candidates if pid in busy] or (candidates if late else [])
                if chosen:
                    pid = self.rng.choice(chosen)
                    if self.server.kill(pid):
                        self._record(kind, pid, pid in busy)
                        return
                    if target is not None:  # it died meanwhile (a boot failure?): find the new sequencer
                        target = self._sequencer()
                        if target is None:
                            return
            time.sleep(0.001)

    def _sequencer(self, timeout: float = 10.0) -> int | None:
        """The sequencer's worker; after a kill the other worker is elected within its next round (1 s)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self.stopping.is_set():
            self._watch()
            found = self.server.sequencer_worker(self.postgres_url)
            if found is not None:
                return found
            time.sleep(0.05)
        return None

    def _kill_master(self, *, mid_request: bool) -> None:
        master = self.server.master
        began = time.monotonic()
        self.server.kill_all()
        self.server.start()
        restarted = time.monotonic() - began
        self._record("master", master, mid_request, restarted)
        self.after_restart()

    def _record(self, kind: str, pid: int, mid_request: bool, restart: float | None = None) -> None:
        self.kills.append(Kill(kind, pid, mid_request, self.progress(), time.monotonic() - self._began, restart))


def kill_plan(count: int, total: int, rng: random.Random) -> list[tuple[int, str]]:
    """`count` kills at random points of a run of `total` disclosures, one in each of `count` equal stretches of
    its first 85 % (so that the last kills still find the clients at work when a restart has held the kills back),
    a quarter of them the master, a fifth the sequencer's worker, the rest whichever worker is serving."""
    masters = max(1, count // 4)
    sequencers = max(1, count // 5)
    kinds = ["master"] * masters + ["sequencer"] * sequencers + ["worker"] * (count - masters - sequencers)
    rng.shuffle(kinds)
    stretch = 0.85 * total / (count + 1)
    return [(int(stretch * (i + rng.uniform(0.5, 1.5))), kind) for i, kind in enumerate(kinds)]


# -- what the database must hold -----------------------------------------------------------------------------------


def last_append_id(broker: Broker) -> int:
    with broker.uow(write=False) as uow:
        return int(uow.session.scalar(select(func.max(AuditEntryRow.id))) or 0)


def wait_until_sequenced(broker: Broker, up_to: int | None = None, timeout: float = 60.0) -> int:
    """Wait for the served sequencer to give every entry appended so far (or up to the append id `up_to`) its tree
    position — and, for all of them, to export the checkpoint of the whole tree to the sink (the export follows the
    commit of the last batch). Returns how many entries are still waiting (0 unless the timeout passed)."""
    waiting = select(func.count()).select_from(AuditPendingRow)
    if up_to is not None:
        waiting = waiting.where(AuditPendingRow.entry_id <= up_to)
    deadline = time.monotonic() + timeout
    while True:
        with broker.uow(write=False) as uow:
            pending = int(uow.session.scalar(waiting) or 0)
            head = uow.session.execute(select(AuditHeadRow.size, AuditHeadRow.exported_size)).first()
        exported = up_to is not None or (head is not None and head.exported_size == head.size)
        if (pending == 0 and exported) or time.monotonic() > deadline:
            return pending
        time.sleep(0.05)


def disclosure_ids(broker: Broker, partner: str, person_id: str) -> set[str]:
    """The disclosure rows of `partner` for `person_id`."""
    with broker.uow(write=False) as uow:
        return _disclosure_ids(uow.session, partner, person_id)


def _disclosure_ids(session: Any, partner: str, person_id: str) -> set[str]:
    return set(
        session.scalars(
            select(DisclosureRow.id).where(DisclosureRow.partner == partner, DisclosureRow.person_id == person_id)
        )
    )


def check_world(broker: Broker, tally: Tally, *, partner: str, person_id: str, before: set[str]) -> list[str]:
    """Everything wrong with the database against what the clients saw; empty when all holds:

    - every 2xx the client saw has its audit entry: the `audit_entry_id` it carried names a sequenced
      `disclosure:permit` entry for that person and partner, whose `disclosure_id` is the one answered, and the
      disclosure row the person sees points at that entry;
    - every disclosure row has its audit entry and every disclosure entry its row, one to one;
    - no key was disclosed twice: the run added exactly one disclosure row per key, the one the client was given
      (every answer for a key, first or replayed, named it), and the response stored for each key is that one."""
    problems: list[str] = []
    with broker.uow(write=False) as uow:
        session = uow.session
        entries = {
            row.id: row
            for row in session.execute(
                select(
                    AuditEntryRow.id,
                    AuditLeafRow.idx,
                    AuditEntryRow.entry,
                    AuditEntryRow.event,
                    AuditEntryRow.person_id,
                    AuditEntryRow.organisation,
                )
                .outerjoin(AuditLeafRow, AuditLeafRow.entry_id == AuditEntryRow.id)
                .where(AuditEntryRow.event.in_(DISCLOSURE_EVENTS))
            )
        }
        rows = {
            row.id: row
            for row in session.execute(
                select(DisclosureRow.id, DisclosureRow.audit_entry_id, DisclosureRow.effect, DisclosureRow.kind)
            )
        }
        run_rows = _disclosure_ids(session, partner, person_id) - before
        stored = {
            row.key: row
            for row in session.scalars(select(IdempotencyKeyRow).where(IdempotencyKeyRow.client_id == partner))
        }

    by_entry: dict[int, list[str]] = {}
    for row in rows.values():
        by_entry.setdefault(row.audit_entry_id, []).append(row.id)
        entry = entries.get(row.audit_entry_id)
        if entry is None:
            problems.append(f"disclosure {row.id} has no disclosure audit entry (append id {row.audit_entry_id})")
        elif row.kind == "request" and (
            _detail(entry).get("disclosure_id") != row.id or entry.event != f"disclosure:{row.effect}"
        ):
            problems.append(f"disclosure {row.id}: its audit entry {entry.id} records something else")
    for entry_id, entry in entries.items():
        owners = by_entry.get(entry_id, [])
        if len(owners) != 1:
            problems.append(f"audit entry {entry_id} ({entry.event}) has {len(owners)} disclosure rows")

    for seen in tally.seen.values():
        entry = entries.get(seen.audit_entry_id)
        if entry is None:
            problems.append(f"{seen.key}: the 2xx named audit entry {seen.audit_entry_id}, which is not a disclosure")
            continue
        if (
            entry.event != "disclosure:permit"
            or entry.person_id != person_id
            or entry.organisation != partner
            or _detail(entry).get("disclosure_id") != seen.disclosure_id
        ):
            problems.append(f"{seen.key}: audit entry {seen.audit_entry_id} is not the permit answered")
        if entry.idx is None:
            problems.append(f"{seen.key}: audit entry {seen.audit_entry_id} was never sequenced")
        row = rows.get(seen.disclosure_id)
        if row is None or row.audit_entry_id != seen.audit_entry_id:
            problems.append(f"{seen.key}: disclosure {seen.disclosure_id} is missing or names another entry")
        kept = stored.get(seen.key)
        if kept is None:
            problems.append(f"{seen.key}: no response is stored for the key")
            continue
        sealed = Sealed(ciphertext=kept.ciphertext, nonce=kept.nonce, wrapped_key=kept.wrapped_key, kek_id=kept.kek_id)
        body = json.loads(open_sealed(sealed, idempotency_aad(partner, seen.key), broker.keys))
        if kept.status != seen.status or body.get("disclosure_id") != seen.disclosure_id:
            problems.append(f"{seen.key}: the stored response ({kept.status}) is not the answer the client was given")

    answered = [seen.disclosure_id for seen in tally.seen.values()]
    if len(set(answered)) != len(answered):
        twice = [d for d, n in Counter(answered).items() if n > 1]
        problems.append(f"{len(twice)} disclosures were answered for two keys, e.g. {twice[0]}")
    if run_rows != set(answered):
        extra = sorted(run_rows - set(answered))
        missing = sorted(set(answered) - run_rows)
        problems.append(
            f"the run made {len(run_rows)} disclosures for {len(answered)} keys answered: "
            f"{len(extra)} no client was given (a key disclosed twice?) e.g. {extra[:3]}, "
            f"{len(missing)} answered but not stored e.g. {missing[:3]}"
        )
    if len(stored) != len(tally.seen):
        problems.append(f"{len(stored)} responses are stored for the {len(tally.seen)} keys answered")
    return problems


def _detail(entry: Any) -> dict[str, Any]:
    detail = json.loads(bytes(entry.entry)).get("detail")
    return detail if isinstance(detail, dict) else {}
