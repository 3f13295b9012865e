"""What the HTTP benchmarks share (bench/http_disclosure.py, bench/scale.py, bench/scaling.py): demo instances on
SQLite or on a scratch PostgreSQL database, served with `broker serve`; the partner's side (a private_key_jwt
assertion, a DPoP-bound token, single-use DPoP proofs signed in bulk); wrk runs with bench/wrk_report.lua and
their summaries; the checks every run must pass; and the results files.

A benchmark, not a test: it sends traffic to 127.0.0.1 only.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import importlib.metadata
import json
import math
import os
import platform
import resource
import secrets
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
LUA = HERE / "wrk_report.lua"
RESULTS = HERE / "results"
BROKER = [sys.executable, "-m", "broker.cli"]
PARTNER = "varha-health"
ASK = {"category": "work_assessment", "purpose": "work_capacity_assessment"}
WORKERS = 2
PROOF_MARGIN = 2.0  # proofs signed per expected request (see proof_env)
DPOP_MAX_AGE = 60  # the broker's default: how old a proof's `iat` may be (Settings.dpop_max_age)
POSTGRES_ENV = "BROKER_BENCH_POSTGRES_URL"
INSTALL_WRK = "wrk is not installed. On Debian/Ubuntu: apt-get install -y wrk (as root; run apt-get update first)"


class BenchError(SystemExit):
    """A benchmark that cannot go on: the message names what was wrong (and the exit status is 1)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)


# --- machine and software ---


def software_info(wrk: str | None, postgres_url: str | None = None) -> dict[str, Any]:
    versions: dict[str, Any] = {"python": platform.python_version(), "sqlite": sqlite3.sqlite_version}
    for name in ("flask", "gunicorn", "sqlalchemy", "psycopg", "flask-smorest", "marshmallow", "authlib", "joserfc"):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    if wrk:
        out = subprocess.run([wrk, "-v"], capture_output=True, text=True, check=False)
        banner = (out.stdout or out.stderr).strip()
        versions["wrk"] = banner.splitlines()[0].split(" Copyright")[0] if banner else None
    if postgres_url:
        versions["postgresql"] = postgres_settings(postgres_url)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False
    )  # read-only: which commit was measured (the working tree may hold changes on top of it)
    versions["broker_commit"] = commit.stdout.strip() or None
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    versions["working_tree_changed"] = bool(dirty.stdout.strip())
    return versions


def postgres_settings(url: str) -> dict[str, Any]:
    """The server's version and the settings that move a benchmark's figures."""
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            found: dict[str, Any] = {
                "version": str(connection.execute(text("SHOW server_version")).scalar()).split(" ")[0]
            }
            for name in ("synchronous_commit", "fsync", "shared_buffers", "max_connections", "wal_level"):
                found[name] = connection.execute(text(f"SHOW {name}")).scalar()
    finally:
        engine.dispose()
    return found


def find_wrk() -> str:
    wrk = shutil.which("wrk")
    if wrk is None:
        raise BenchError(INSTALL_WRK)
    return wrk


# --- PostgreSQL scratch databases ---


def postgres_url(given: str | None) -> str | None:
    """The PostgreSQL server to use: `--postgres URL`, else BROKER_BENCH_POSTGRES_URL, else None."""
    url = given or os.environ.get(POSTGRES_ENV) or None
    if url is not None and not url.startswith(("postgresql://", "postgresql+psycopg://")):
        raise BenchError(f"not a PostgreSQL URL (postgresql+psycopg://user@host:port/database): {url.split('@')[-1]}")
    if url is not None and database_name(url) in {"test", "postgres", "template0", "template1"}:
        raise BenchError(
            f"the benchmarks want a scratch database of their own, not {database_name(url)!r}: e.g. "
            "createdb -h 127.0.0.1 -U postgres broker_bench and postgresql+psycopg://postgres@127.0.0.1:5432/broker_bench"
        )
    return url


def database_name(url: str) -> str:
    from sqlalchemy.engine import make_url

    return str(make_url(url).database or "")


def with_database(url: str, name: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).set(database=name).render_as_string(hide_password=False)


@contextlib.contextmanager
def scratch_database(server_url: str, purpose: str, *, keep: bool = False) -> Iterator[str]:
    """A fresh database on the server of `server_url`, named after that URL's database, `purpose` and a random
    suffix (broker_bench_http_1a2b3c4d), dropped afterwards unless `keep`. A database of its own, not a schema:
    the audit sequencer is elected with an advisory lock, which PostgreSQL scopes to the database, and a broker
    of another session on the same database would otherwise hold the election (tests/e2e/test_crash.py does the
    same). The database of `server_url` itself is only connected to, never written."""
    name = f"{database_name(server_url) or 'broker_bench'}_{purpose}_{secrets.token_hex(4)}"
    create_database(server_url, name)
    try:
        yield with_database(server_url, name)
    finally:
        if keep:
            print(f"kept database {name}")
        else:
            drop_database(server_url, name)


def _admin(server_url: str) -> Any:
    from sqlalchemy import create_engine

    return create_engine(server_url, isolation_level="AUTOCOMMIT")


def create_database(server_url: str, name: str) -> None:
    from sqlalchemy import text

    if not name.replace("_", "").isalnum():
        raise BenchError(f"not a plain database name: {name!r}")
    engine = _admin(server_url)
    try:
        with engine.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        engine.dispose()


def drop_database(server_url: str, name: str) -> None:
    from sqlalchemy import text

    if name in {"test", "postgres", "template0", "template1", database_name(server_url)}:
        raise BenchError(f"refusing to drop the database {name!r}")
    engine = _admin(server_url)
    try:
        with engine.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        engine.dispose()


def database_exists(server_url: str, name: str) -> bool:
    from sqlalchemy import text

    engine = _admin(server_url)
    try:
        with engine.connect() as connection:
            return bool(connection.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}).scalar())
    finally:
        engine.dispose()


def backend_pids(database_url: str) -> list[int]:
    """The server processes of every connection to the database of `database_url` but this one."""
    from sqlalchemy import create_engine, text

    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                text("SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()")
            )
            return [int(pid) for (pid,) in rows]
    finally:
        engine.dispose()


# --- instances and servers ---


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def broker_env(instance: Path, issuer: str, database_url: str | None) -> dict[str, str]:
    """The environment of a demo instance in `instance`, on SQLite in its folder or on `database_url`."""
    env = {**os.environ, "BROKER_MODE": "demo", "BROKER_INSTANCE_PATH": str(instance), "BROKER_ISSUER": issuer}
    # One partner at thousands of requests a second, by design: its rate limit (600 a minute) would refuse nearly all.
    env["BROKER_RATE_LIMITS"] = "off"
    for name in ("BROKER_DATABASE_URL", "BROKER_REQUIRE_DPOP", "BROKER_AUDIT_SINK", "BROKER_AUDIT_SEQUENCER"):
        env.pop(name, None)  # as deployed: DPoP required, the sequencer on, the sink in the instance folder
    if database_url:
        env["BROKER_DATABASE_URL"] = database_url
    return env


def create_demo(env: dict[str, str], port: int) -> dict[str, Any]:
    """`broker demo --no-serve` with `env`; returns its demo.json."""
    created = subprocess.run(
        [*BROKER, "demo", "--no-serve", "--port", str(port)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if created.returncode != 0:
        raise BenchError(f"broker demo --no-serve failed:\n{created.stdout}\n{created.stderr}")
    demo: dict[str, Any] = json.loads((Path(env["BROKER_INSTANCE_PATH"]) / "demo.json").read_text())
    return demo


def wait_ready(url: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1) as response:
            if response.status == 200:
                return
        if process.poll() is not None or time.monotonic() > deadline:
            raise BenchError(f"server did not start ({url}):\n{log.read_text()[-4000:]}")
        time.sleep(0.1)


@contextlib.contextmanager
def _process(command: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`command` running for the block, its output in `log`; terminated at the end (killed if it will not stop)."""
    with log.open("ab") as handle:
        process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT)
        try:
            yield process
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@contextlib.contextmanager
def serve(command: list[str], env: dict[str, str], log: Path, ready_url: str) -> Iterator[subprocess.Popen[bytes]]:
    """A server for the block, once `ready_url` answers."""
    with _process(command, env, log) as process:
        wait_ready(ready_url, process, log)
        yield process


@contextlib.contextmanager
def background(command: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A process beside the servers for the block (one that serves nothing: the audit sequencer run apart). It must
    still be running when the block ends."""
    with _process(command, env, log) as process:
        yield process
        if process.poll() is not None:
            raise BenchError(f"{' '.join(command)} exited with {process.returncode} during the run; see {log}")


def broker_command(port: int, workers: int = WORKERS, prefix: Sequence[str] = ()) -> list[str]:
    return [*prefix, *BROKER, "serve", "--port", str(port), "--workers", str(workers)]


def bare_command(port: int, workers: int = WORKERS, prefix: Sequence[str] = ()) -> list[str]:
    """The reference app under the broker's gunicorn settings (broker/wsgi.py): sync workers, no preload, no
    access log."""
    return [
        *prefix,
        sys.executable,
        "-m",
        "gunicorn",
        f"--bind=127.0.0.1:{port}",
        f"--workers={workers}",
        "--worker-class=sync",
        "--timeout=30",
        "--graceful-timeout=10",
        "--log-level=warning",
        "bench.bare_insert:create_app()",
    ]


def taskset(cpus: str | None) -> list[str]:
    return ["taskset", "-c", cpus] if cpus and shutil.which("taskset") else []


def dpop_max_age(duration: int) -> int:
    """The broker's proof window for a run: its default, or longer when a measured run would outlast it (the
    proofs are all signed just before the run starts)."""
    return max(DPOP_MAX_AGE, duration + 30)


# --- the partner side ---


def http_json(
    url: str, *, data: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(url, data=data, headers=headers or {}, method="POST" if data is not None else "GET")
    try:
        with urllib.request.urlopen(req, timeout=30) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        raw = error.read()
        try:
            return error.code, json.loads(raw or b"{}")
        except ValueError:
            return error.code, {"body": raw[:500].decode("utf-8", "replace")}


def build_assertion(instance: Path, partner: dict[str, Any], issuer: str) -> str:
    """A private_key_jwt client assertion (RFC 7523) as docs/examples/disclose.py's Authlib client builds it:
    `aud` = the issuer, a fresh `jti`, a 60 s lifetime, the `act` claim naming the professional."""
    from joserfc import jwt
    from joserfc.jwk import OKPKey

    key = OKPKey.import_key(json.loads((instance / partner["key_file"]).read_text()))
    now = int(time.time())
    claims = {
        "iss": partner["client_id"],
        "sub": partner["client_id"],
        "aud": issuer,
        "iat": now,
        "exp": now + 60,
        "jti": secrets.token_urlsafe(24),
        "act": partner["actor"],
    }
    return jwt.encode({"alg": "Ed25519", "kid": key.kid}, claims, key, algorithms=["Ed25519"])


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class DpopKey:
    """The partner's DPoP key pair (RFC 9449) and proofs signed with it, in bulk: the header is encoded once, each
    proof gets its own `jti`, and the signature comes straight from the Ed25519 key (joserfc's general path would
    cost several times more per proof)."""

    def __init__(self) -> None:
        from joserfc.jwk import OKPKey

        self.key = OKPKey.generate_key("Ed25519")
        public = self.key.as_dict(private=False)
        jwk = {"kty": public["kty"], "crv": public["crv"], "x": public["x"]}
        self._header = _b64(json.dumps({"typ": "dpop+jwt", "alg": "Ed25519", "jwk": jwk}).encode())

    def proofs(self, method: str, url: str, count: int, token: str | None = None) -> list[str]:
        """`count` proofs for `method url` (with `ath` for `token`), all with `iat` = now."""
        base: dict[str, Any] = {"htm": method, "htu": url.split("?")[0], "iat": int(time.time())}
        if token is not None:
            base["ath"] = _b64(hashlib.sha256(token.encode()).digest())
        private = self.key.private_key
        if not isinstance(private, Ed25519PrivateKey):
            raise TypeError("the DPoP key is not an Ed25519 key")
        sign = private.sign
        signed = []
        for _ in range(count):
            payload = _b64(json.dumps({"jti": secrets.token_urlsafe(16), **base}).encode())
            signing_input = f"{self._header}.{payload}"
            signed.append(f"{signing_input}.{_b64(sign(signing_input.encode()))}")
        return signed


@dataclass
class Partner:
    """The partner `varha-health` of a demo instance, reached at `base_url`, whose public URL is `issuer`."""

    instance: Path
    demo: dict[str, Any]
    base_url: str
    issuer: str
    dpop: DpopKey = field(default_factory=DpopKey)

    @property
    def disclosures_url(self) -> str:
        return f"{self.issuer}/api/v1/disclosures"  # `htu`: the URL as the issuer names it

    def token(self) -> str:
        """An access token: client_credentials with a private_key_jwt assertion, bound to the DPoP key."""
        partner = next(p for p in self.demo["partners"] if p["client_id"] == PARTNER)
        form = urllib.parse.urlencode(
            {
                "grant_type": "client_credentials",
                "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                "client_assertion": build_assertion(self.instance, partner, self.issuer),
                "scope": "disclosures",
            }
        ).encode()
        [proof] = self.dpop.proofs("POST", f"{self.issuer}/oauth/token", 1)
        headers = {"Content-Type": "application/x-www-form-urlencoded", "DPoP": proof}
        status, body = http_json(f"{self.base_url}/oauth/token", data=form, headers=headers)
        if status != 200 or body.get("token_type") != "DPoP":
            raise BenchError(f"token request failed: {status} {body}")
        token: str = body["access_token"]
        return token

    def disclose(self, person_id: str, *, base_url: str | None = None, attempts: int = 1) -> dict[str, Any]:
        """One disclosure of the person's work assessment, which must be permitted with records. A 503 (the audit
        log not yet anchored after a start) is retried up to `attempts` times, a second apart."""
        body = json.dumps({"person_id": person_id, **ASK}).encode()
        for attempt in range(attempts):
            token = self.token()
            [proof] = self.dpop.proofs("POST", self.disclosures_url, 1, token)
            headers = {"Content-Type": "application/json", "Authorization": f"DPoP {token}", "DPoP": proof}
            status, answer = http_json(f"{base_url or self.base_url}/api/v1/disclosures", data=body, headers=headers)
            if status == 503 and attempt + 1 < attempts:
                time.sleep(1)
                continue
            if status != 200 or not answer.get("records"):
                raise BenchError(f"the disclosure of person {person_id} is not permitted: {status} {answer}")
            return answer
        raise AssertionError("unreachable")


def demo_person(demo: dict[str, Any], name: str = "Mikko Laine") -> str:
    person_id: str = next(p["person_id"] for p in demo["persons"] if p["name"] == name)
    return person_id


# --- wrk ---


@dataclass(frozen=True)
class Load:
    threads: int
    connections: int
    duration: int
    warmup: int
    timeout: int = 10
    prefix: tuple[str, ...] = ()  # what wrk runs under: taskset, or a CPU budget (bench/cpu_budget.py)


def run_wrk(wrk: str, load: Load, url: str, env: dict[str, str], duration: int) -> dict[str, Any]:
    """One wrk run; its BENCH-JSON summary with the non-2xx count and the rate added."""
    command = [
        *load.prefix,
        wrk,
        f"-t{load.threads}",
        f"-c{load.connections}",
        f"-d{duration}s",
        f"--timeout={load.timeout}s",
        "-s",
        str(LUA),
        url,
    ]
    before = cpu_sample()
    out = subprocess.run(command, env={**os.environ, **env}, capture_output=True, text=True, check=False)
    after = cpu_sample()
    line = next((x for x in out.stdout.splitlines() if x.startswith("BENCH-JSON ")), None)
    if out.returncode != 0 or line is None:
        raise BenchError(f"wrk failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    result: dict[str, Any] = json.loads(line.removeprefix("BENCH-JSON "))
    non2xx = next((x for x in out.stdout.splitlines() if "Non-2xx" in x), None)
    result["non_2xx"] = int(non2xx.rsplit(":", 1)[1]) if non2xx else 0
    result["requests_per_s"] = result["requests"] / (result["duration_us"] / 1e6)
    result["cpu_us_per_request"] = {
        name: round((after[name] - before[name]) / 1000 / max(1, result["requests"]), 1) for name in before
    }
    result["command"] = " ".join(["wrk", *command[command.index(wrk) + 1 : -3], "-s", LUA.name, "URL"])
    return result


def cpu_sample() -> dict[str, int]:
    """CPU time used so far, in nanoseconds, by the whole machine (busy time in /proc/stat: every process, the
    kernel, interrupts), by PostgreSQL's server processes (their /proc/PID/stat), and by this process's finished
    children (wrk). Sampled around a wrk run, the differences per request say where a request's CPU goes:
    `machine - postgres - wrk` is the servers' share (the broker's or the bare app's gunicorn, with the kernel's
    work for their sockets), as nothing else runs during a benchmark."""
    tick_ns = 1_000_000_000 // os.sysconf("SC_CLK_TCK")
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    machine = (user + nice + system + irq + softirq + steal) * tick_ns
    postgres = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        name, _, rest = text.partition(") ")
        if name.endswith("(postgres"):
            parts = rest.split()
            postgres += (int(parts[11]) + int(parts[12])) * tick_ns  # utime, stime (proc(5))
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    wrk = int((children.ru_utime + children.ru_stime) * 1e9)
    return {"machine": machine, "postgres": postgres, "wrk": wrk}


def proof_env(partner: Partner, token: str, expected: float, load: Load, path: Path) -> dict[str, str]:
    """The wrk environment of one disclosure run: the token and a file of `expected` × margin fresh proofs (and
    some more per connection, for short runs)."""
    count = math.ceil(expected * PROOF_MARGIN) + 200 * load.connections
    path.write_text("\n".join(partner.dpop.proofs("POST", partner.disclosures_url, count, token)) + "\n")
    return {"BENCH_TOKEN": token, "BENCH_SCHEME": "DPoP", "BENCH_PROOFS": str(path), "BENCH_THREADS": str(load.threads)}


def disclosure_run(
    wrk: str,
    load: Load,
    url: str,
    partner: Partner,
    env: dict[str, str],
    *,
    expected_rate: float,
    proof_file: Path,
    before_measured: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """A warm-up and a measured run of disclosures, each with a fresh token and fresh proofs: the warm-up's from
    `expected_rate` (an upper bound, e.g. /healthz's), the measured run's from the warm-up's rate.
    `before_measured` is called just before the measured run starts (after its proofs are signed)."""
    warm = None
    if load.warmup:
        token = partner.token()
        warm_env = env | proof_env(partner, token, expected_rate * load.warmup, load, proof_file)
        warm = run_wrk(wrk, load, url, warm_env, load.warmup)
    token = partner.token()
    rate = warm["requests_per_s"] if warm else expected_rate
    run_env = env | proof_env(partner, token, rate * load.duration, load, proof_file)
    if before_measured is not None:
        before_measured()
    result = run_wrk(wrk, load, url, run_env, load.duration)
    result["sent_with_warmup"] = result["requests"] + (warm["requests"] if warm else 0)
    if warm:
        result["warmup_non_2xx"] = warm["non_2xx"]
        result["warmup_proofs_exhausted"] = warm["proofs_exhausted"]
        result["warmup_socket_errors"] = socket_errors(warm)
    return result


def plain_run(wrk: str, load: Load, url: str, env: dict[str, str]) -> dict[str, Any]:
    """A warm-up and a measured run of the same requests (no proofs to sign: /healthz, the bare insert)."""
    warm = run_wrk(wrk, load, url, env, load.warmup) if load.warmup else None
    result = run_wrk(wrk, load, url, env, load.duration)
    if warm:
        result["warmup_non_2xx"] = warm["non_2xx"]
        result["warmup_socket_errors"] = socket_errors(warm)
    return result


def socket_errors(run: dict[str, Any]) -> int:
    return sum(int(run["errors"][k]) for k in ("connect", "read", "write", "timeout"))


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median rate (the lower one of two) stands for the endpoint; every run's rate and
    percentiles are kept, and the median of each percentile over the runs is given too."""
    ordered = sorted(runs, key=lambda r: r["requests_per_s"])
    median = ordered[(len(ordered) - 1) // 2]  # the lower median when the count is even
    low, high, mid = ordered[0]["requests_per_s"], ordered[-1]["requests_per_s"], median["requests_per_s"]

    def ms(run: dict[str, Any], p: str) -> float:
        return round(float(run["latency_us"][p]) / 1000, 2)

    percentiles = ("p50", "p90", "p95", "p99")
    return {
        "requests_per_s": round(median["requests_per_s"], 1),
        **{f"{p}_ms": ms(median, p) for p in percentiles},
        "median_over_runs_ms": {p: round(statistics.median(ms(r, p) for r in runs), 2) for p in percentiles},
        "rates": [round(r["requests_per_s"], 1) for r in runs],
        "latency_ms_per_run": [{p: ms(r, p) for p in (*percentiles, "max")} for r in runs],
        "spread_pct": round(100 * (high - low) / mid, 1) if mid else None,
        "requests": sum(r["requests"] for r in runs),
        "non_2xx": sum(r["non_2xx"] + r.get("warmup_non_2xx", 0) for r in runs),
        "socket_errors": sum(socket_errors(r) + r.get("warmup_socket_errors", 0) for r in runs),
        "proofs_exhausted": sum(r["proofs_exhausted"] + r.get("warmup_proofs_exhausted", 0) for r in runs),
        "command": runs[0]["command"],
    }


# --- checks ---


def audit_mark(database_url: str) -> int:
    """The newest append id of the log: the entries appended after it are a run's."""
    from sqlalchemy import create_engine, text

    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            return int(connection.execute(text("SELECT coalesce(max(id), 0) FROM audit_entries")).scalar() or 0)
    finally:
        engine.dispose()


def disclosures_since(database_url: str, mark: int) -> dict[str, int]:
    """The partner's committed disclosure decisions appended after `mark`, by effect (the audit entry commits with
    the disclosure: DESIGN.md invariant 2)."""
    from sqlalchemy import create_engine, text

    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                text(
                    "SELECT event, count(*) FROM audit_entries WHERE id > :mark AND organisation = :org "
                    "AND event IN ('disclosure:permit', 'disclosure:deny') GROUP BY event"
                ),
                {"mark": mark, "org": PARTNER},
            ).all()
    finally:
        engine.dispose()
    found = {str(event).split(":")[1]: int(count) for event, count in rows}
    return {"permit": found.get("permit", 0), "deny": found.get("deny", 0)}


def verify_log(env: dict[str, str]) -> dict[str, Any]:
    """Sequence what the servers left pending, then `broker audit verify` (the whole log, its checkpoints and the
    sink). Run after the servers have stopped."""
    sequenced = subprocess.run(
        [*BROKER, "audit", "sequence", "--once"], env=env, cwd=ROOT, capture_output=True, text=True, check=False
    )
    began = time.monotonic()
    verify = subprocess.run(
        [*BROKER, "audit", "verify"], env=env, cwd=ROOT, capture_output=True, text=True, check=False
    )
    return {
        "sequence_once": (sequenced.stdout or sequenced.stderr).strip(),
        "audit_verify": (verify.stdout or verify.stderr).strip(),
        "audit_verify_ok": verify.returncode == 0 and sequenced.returncode == 0,
        "audit_verify_seconds": round(time.monotonic() - began, 1),
    }


def disclosure_checks(summary: dict[str, Any], sent: int, committed: dict[str, int]) -> dict[str, Any]:
    """What every run of disclosures must show: no error response and no socket error (warm-ups included), no
    DPoP proof sent twice, every disclosure a committed permit (at least as many as wrk counted: requests in
    flight when wrk stops are committed but not counted) and no denial."""
    return {
        "non_2xx": summary["non_2xx"],
        "socket_errors": summary["socket_errors"],
        "dpop_proofs_sent_twice": summary["proofs_exhausted"],
        "disclosures_counted_by_wrk": sent,
        "permits_committed": committed["permit"],
        "denies_committed": committed["deny"],
    }


def failed_checks(checks: dict[str, Any]) -> list[str]:
    """The names of the checks that failed (an empty list: every check passed)."""
    counted = ("non_2xx", "socket_errors", "dpop_proofs_sent_twice", "denies_committed")
    failed = [name for name in counted if checks.get(name)]
    if checks.get("permits_committed", 0) < checks.get("disclosures_counted_by_wrk", 0):
        failed.append("permits_committed < disclosures_counted_by_wrk")
    if "audit_verify_ok" in checks and not checks["audit_verify_ok"]:
        failed.append("audit_verify")
    return failed


# --- results ---


def started_at() -> tuple[datetime, float]:
    from datetime import UTC

    load = os.getloadavg()[0]
    if load > 0.5:
        print(f"note: the 1-minute load average is {load:.2f}: other work on this machine skews the numbers")
    return datetime.now(UTC), load


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def write_result(name: str, started: datetime, label: str, result: dict[str, Any]) -> Path:
    RESULTS.mkdir(exist_ok=True)
    suffix = f"-{label}" if label else ""
    path = RESULTS / f"{name}-{started:%Y-%m-%d}{suffix}.json"
    path.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    print(f"results: {path.relative_to(ROOT)}")
    return path


def result_header(name: str, started: datetime, load_before: float, wrk: str | None, pg: str | None) -> dict[str, Any]:
    from bench.machine import machine_info

    return {
        "benchmark": name,
        "date": started.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": {**machine_info(), "loadavg_1min_before": round(load_before, 2)},
        "software": software_info(wrk, pg),
    }


def ensure_database(url: str) -> bool:
    """Create the database of `url` when its server lacks it (the default scratch database of `make bench`);
    returns whether it was created. Connects to the server's `postgres` database to do so."""
    name = database_name(url)
    if not name or name in {"test", "postgres", "template0", "template1"}:
        raise BenchError(f"{name or 'no database'}: not a scratch database for the benchmarks")
    maintenance = with_database(url, "postgres")
    if database_exists(maintenance, name):
        return False
    create_database(maintenance, name)
    return True


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m bench.harness", description="helpers for the Makefile")
    commands = parser.add_subparsers(dest="command", required=True)
    ensure = commands.add_parser("ensure-database", help="create the scratch database of URL when it is missing")
    ensure.add_argument("url")
    args = parser.parse_args(argv)
    url = postgres_url(args.url)
    assert url is not None
    if ensure_database(url):
        print(f"created the scratch database {database_name(url)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
