"""`make bench`: disclosures per second over HTTP next to the same server's `/healthz` rate.

What it does (docs/benchmarks.md has the numbers and how to read them):

1. creates a fresh demo instance in a temporary folder (`broker demo --no-serve`, SQLite) and serves it with
   `broker serve --workers 2` (gunicorn, sync workers) on a free loopback port;
2. serves the reference app bench/bare_insert.py — one endpoint doing one durable SQLite insert — under the
   same gunicorn settings on another free port;
3. gets an access token for the `varha-health` partner (client_credentials + private_key_jwt, the assertion
   built with joserfc; DPoP-bound, RFC 9449) and checks that one disclosure of Mikko's work assessment is
   permitted;
4. drives `GET /healthz`, `POST /insert` (bare app) and `POST /api/v1/disclosures` with wrk — same threads,
   connections and duration for each, a short warm-up before each measured run, a fresh token per run;
5. checks that wrk saw no error responses and no socket errors, that every disclosure was a permit, that no
   DPoP proof had to be sent twice, and that the audit log verifies (`broker audit verify`);
6. prints a table — requests/s and p50/p99 latency of the median run, and the ratio to /healthz as the median
   of the per-round ratios — and writes bench/results/http_disclosure-<date>.json.

Every disclosure request carries its own DPoP proof, as a partner's would. wrk's Lua cannot sign, so the proofs are
signed here just before each wrk run — warm-up and measured run apart — and wrk_report.lua sends each once. How
many: the warm-up's from this round's /healthz rate (an upper bound of the disclosure rate), the measured run's
from the warm-up's disclosure rate, each with a margin of two. Signing happens before wrk starts, so the client's
cost is not in the figures; the broker's share (verifying the proof, using its `jti` once) is. A run that runs out
of proofs would send replays, which the broker refuses: the checks count them, and the run fails.

A benchmark, not a test: it sends traffic to 127.0.0.1 only, and every wrk run is bounded by `--duration`.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import importlib.metadata
import json
import math
import os
import platform
import secrets
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.machine import machine_info

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
LUA = HERE / "wrk_report.lua"
RESULTS = HERE / "results"
BROKER = [sys.executable, "-m", "broker.cli"]
TARGET = 0.15  # disclosures/s ≥ 15 % of /healthz/s on SQLite (the target)
PARTNER = "varha-health"
PERSON = "Mikko Laine"
ASK = {"category": "work_assessment", "purpose": "work_capacity_assessment"}
WORKERS = 2
PROOF_MARGIN = 2.0  # proofs signed per expected request (see the module's docstring)
DPOP_MAX_AGE = 60  # the broker's default: how old a proof's `iat` may be (Settings.dpop_max_age)
INSTALL_WRK = "wrk is not installed. On Debian/Ubuntu: apt-get install -y wrk (as root; run apt-get update first)"


# --- machine and software ---


def software_info(wrk: str) -> dict[str, Any]:
    versions: dict[str, Any] = {"python": platform.python_version(), "sqlite": sqlite3.sqlite_version}
    for name in ("flask", "gunicorn", "sqlalchemy", "flask-smorest", "marshmallow", "authlib", "joserfc"):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    out = subprocess.run([wrk, "-v"], capture_output=True, text=True, check=False)
    banner = (out.stdout or out.stderr).strip()
    versions["wrk"] = banner.splitlines()[0].split(" Copyright")[0] if banner else None
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False
    )  # read-only: which commit was measured (the working tree may hold changes on top of it)
    versions["broker_commit"] = commit.stdout.strip() or None
    return versions


# --- servers ---


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(url: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1) as response:
            if response.status == 200:
                return
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"server did not start ({url}):\n{log.read_text()[-4000:]}")
        time.sleep(0.1)


@contextlib.contextmanager
def serve(command: list[str], env: dict[str, str], log: Path, ready_url: str) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as handle:
        process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT)
        try:
            wait_ready(ready_url, process, log)
            yield process
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def taskset(cpus: str | None) -> list[str]:
    return ["taskset", "-c", cpus] if cpus and shutil.which("taskset") else []


# --- the partner side ---


def http_json(url: str, *, data: bytes, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(url, data=data, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


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
        sign = self.key.private_key.sign
        signed = []
        for _ in range(count):
            payload = _b64(json.dumps({"jti": secrets.token_urlsafe(16), **base}).encode())
            signing_input = f"{self._header}.{payload}"
            signed.append(f"{signing_input}.{_b64(sign(signing_input.encode()))}")
        return signed


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def fetch_token(base_url: str, issuer: str, instance: Path, demo: dict[str, Any], dpop: DpopKey) -> str:
    """An access token for the partner: client_credentials with a private_key_jwt assertion, bound to `dpop`."""
    partner = next(p for p in demo["partners"] if p["client_id"] == PARTNER)
    form = urllib.parse.urlencode(
        {
            "grant_type": "client_credentials",
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": build_assertion(instance, partner, issuer),
            "scope": "disclosures",
        }
    ).encode()
    [proof] = dpop.proofs("POST", f"{issuer}/oauth/token", 1)
    headers = {"Content-Type": "application/x-www-form-urlencoded", "DPoP": proof}
    status, body = http_json(f"{base_url}/oauth/token", data=form, headers=headers)
    if status != 200 or body.get("token_type") != "DPoP":
        raise SystemExit(f"token request failed: {status} {body}")
    token: str = body["access_token"]
    return token


def proof_env(dpop: DpopKey, token: str, htu: str, expected: float, load: Load, path: Path) -> dict[str, str]:
    """The wrk environment of one disclosure run: the token and a file of `expected` × margin fresh proofs."""
    count = math.ceil(expected * PROOF_MARGIN) + 200 * load.connections
    path.write_text("\n".join(dpop.proofs("POST", htu, count, token)) + "\n")
    return {"BENCH_TOKEN": token, "BENCH_SCHEME": "DPoP", "BENCH_PROOFS": str(path), "BENCH_THREADS": str(load.threads)}


# --- wrk ---


@dataclass(frozen=True)
class Load:
    threads: int
    connections: int
    duration: int
    warmup: int
    timeout: int
    wrk_cpus: str | None


def run_wrk(wrk: str, load: Load, url: str, env: dict[str, str], duration: int) -> dict[str, Any]:
    command = [
        *taskset(load.wrk_cpus),
        wrk,
        f"-t{load.threads}",
        f"-c{load.connections}",
        f"-d{duration}s",
        f"--timeout={load.timeout}s",
        "-s",
        str(LUA),
        url,
    ]
    out = subprocess.run(command, env={**os.environ, **env}, capture_output=True, text=True, check=False)
    line = next((x for x in out.stdout.splitlines() if x.startswith("BENCH-JSON ")), None)
    if out.returncode != 0 or line is None:
        raise SystemExit(f"wrk failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    result: dict[str, Any] = json.loads(line.removeprefix("BENCH-JSON "))
    non2xx = next((x for x in out.stdout.splitlines() if "Non-2xx" in x), None)
    result["non_2xx"] = int(non2xx.rsplit(":", 1)[1]) if non2xx else 0
    result["requests_per_s"] = result["requests"] / (result["duration_us"] / 1e6)
    result["command"] = " ".join(["wrk", *command[command.index(wrk) + 1 : -3], "-s", LUA.name, "URL"])
    return result


# --- the benchmark ---


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median rate (the lower one of two) stands for the endpoint; all rates are kept."""
    ordered = sorted(runs, key=lambda r: r["requests_per_s"])
    median = ordered[(len(ordered) - 1) // 2]  # the lower median when the count is even
    low, high, mid = ordered[0]["requests_per_s"], ordered[-1]["requests_per_s"], median["requests_per_s"]
    return {
        "requests_per_s": round(median["requests_per_s"], 1),
        "p50_ms": round(median["latency_us"]["p50"] / 1000, 2),
        "p90_ms": round(median["latency_us"]["p90"] / 1000, 2),
        "p99_ms": round(median["latency_us"]["p99"] / 1000, 2),
        "rates": [round(r["requests_per_s"], 1) for r in runs],
        "spread_pct": round(100 * (high - low) / mid, 1) if mid else None,
        "requests": sum(r["requests"] for r in runs),
        "non_2xx": sum(r["non_2xx"] for r in runs),
        "socket_errors": sum(r["errors"][k] for r in runs for k in ("connect", "read", "write", "timeout")),
        "proofs_exhausted": sum(r["proofs_exhausted"] for r in runs),
    }


def disclosure_counts(db: Path) -> dict[str, int]:
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        rows = conn.execute(
            "SELECT effect, count(*) FROM disclosures WHERE partner = ? AND category = ? GROUP BY effect",
            (PARTNER, ASK["category"]),
        ).fetchall()
    return {effect: count for effect, count in rows}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.http_disclosure", description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (default 1)")
    parser.add_argument("--connections", type=int, default=8, help="wrk connections (default 8)")
    parser.add_argument("--duration", type=int, default=10, help="seconds per measured run (default 10)")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of warm-up before each run (default 2)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of healthz/insert/disclosure (default 3)")
    parser.add_argument(
        "--pin",
        choices=("wrk", "split", "none"),
        default="wrk",
        help="wrk: wrk on the last CPU, servers anywhere (default); split: wrk on the last CPU, servers on the "
        "others; none: no pinning",
    )
    parser.add_argument(
        "--checkpointing",
        choices=("on", "off"),
        default="on",
        help="on: the audit sequencer integrates, signs and exports checkpoints while serving, as in production "
        "(default); off: no sequencer in the server (and no anchoring gate), the entries are sequenced after the "
        "run — the baseline for issue #5's 'no more than 10 %% slower with checkpointing on'",
    )
    parser.add_argument("--label", default="", help="appended to the results file name (e.g. 'before')")
    parser.add_argument("--no-write", action="store_true", help="do not write bench/results/*.json")
    parser.add_argument("--keep", action="store_true", help="keep the temporary instance and server logs")
    args = parser.parse_args(argv)
    if args.duration + args.warmup >= 240:
        parser.error("keep warm-up + duration well under the access token's 300 s lifetime")
    return args


def dpop_max_age(duration: int) -> int:
    """The broker's proof window for this run: its default, or longer when a measured run would outlast it (the
    proofs are all signed just before the run starts)."""
    return max(DPOP_MAX_AGE, duration + 30)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    wrk = shutil.which("wrk")
    if wrk is None:
        print(INSTALL_WRK, file=sys.stderr)
        return 2
    cpus = sorted(os.sched_getaffinity(0))
    last = str(cpus[-1])
    rest = ",".join(str(c) for c in cpus[:-1]) or None
    wrk_cpus = None if args.pin == "none" or len(cpus) < 2 else last
    server_cpus = rest if args.pin == "split" and len(cpus) >= 2 else None
    load = Load(args.threads, args.connections, args.duration, args.warmup, timeout=10, wrk_cpus=wrk_cpus)

    started = datetime.now(UTC)
    load_before = os.getloadavg()[0]
    if load_before > 0.5:
        print(f"note: the 1-minute load average is {load_before:.2f}: other work on this machine skews the numbers")
    workdir = Path(tempfile.mkdtemp(prefix="broker-bench-"))
    try:
        return _run(args, wrk, load, server_cpus, workdir, started, load_before)
    finally:
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def _run(
    args: argparse.Namespace,
    wrk: str,
    load: Load,
    server_cpus: str | None,
    workdir: Path,
    started: datetime,
    load_before: float,
) -> int:
    instance = workdir / "instance"
    port, bare_port = free_port(), free_port()
    base_url = f"http://127.0.0.1:{port}"
    bare_url = f"http://127.0.0.1:{bare_port}"
    env = {**os.environ, "BROKER_MODE": "demo", "BROKER_INSTANCE_PATH": str(instance), "BROKER_ISSUER": base_url}
    # One partner at thousands of requests a second, by design: its rate limit (600 a minute) would refuse nearly all.
    env["BROKER_RATE_LIMITS"] = "off"
    env.pop("BROKER_DATABASE_URL", None)  # SQLite in the instance folder

    print(f"creating a demo instance in a temporary folder; broker on {base_url}, bare insert app on {bare_url}")
    created = subprocess.run(
        [*BROKER, "demo", "--no-serve", "--port", str(port)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if created.returncode != 0:
        print(created.stdout, created.stderr, file=sys.stderr)
        return 1
    demo = json.loads((instance / "demo.json").read_text())
    person_id = next(p["person_id"] for p in demo["persons"] if p["name"] == PERSON)
    body = json.dumps({"person_id": person_id, **ASK})

    broker_cmd = [*taskset(server_cpus), *BROKER, "serve", "--port", str(port), "--workers", str(WORKERS)]
    serve_env = {**env, "BROKER_DPOP_MAX_AGE": str(dpop_max_age(load.duration))}
    if args.checkpointing == "off":
        # The anchoring gate can be switched off only in test mode; the disclosure path is otherwise the same.
        serve_env |= {"BROKER_MODE": "test", "BROKER_AUDIT_SEQUENCER": "off", "BROKER_AUDIT_ANCHOR_WINDOW": "off"}
    bare_env = {**env, "BENCH_BARE_DB": str(workdir / "bare.db")}
    # The broker's gunicorn settings (broker/wsgi.py): sync workers, no preload, no access log.
    bare_cmd = [
        *taskset(server_cpus),
        sys.executable,
        "-m",
        "gunicorn",
        f"--bind=127.0.0.1:{bare_port}",
        f"--workers={WORKERS}",
        "--worker-class=sync",
        "--timeout=30",
        "--graceful-timeout=10",
        "--log-level=warning",
        "bench.bare_insert:create_app()",
    ]
    with (
        serve(broker_cmd, serve_env, workdir / "broker.log", f"{base_url}/healthz"),
        serve(bare_cmd, bare_env, workdir / "bare.log", f"{bare_url}/healthz"),
    ):
        dpop = DpopKey()
        disclosures_url = f"{demo['issuer']}/api/v1/disclosures"  # `htu`: the URL as the issuer names it
        token = fetch_token(base_url, demo["issuer"], instance, demo, dpop)
        [proof] = dpop.proofs("POST", disclosures_url, 1, token)
        status, first = http_json(
            f"{base_url}/api/v1/disclosures",
            data=body.encode(),
            headers={"Content-Type": "application/json", "Authorization": f"DPoP {token}", "DPoP": proof},
        )
        if status != 200 or not first.get("records"):
            print(f"the disclosure is not permitted: {status} {first}", file=sys.stderr)
            return 1
        before = disclosure_counts(instance / "broker.db")

        targets = {
            "healthz": (f"{base_url}/healthz", {"BENCH_METHOD": "GET"}),
            "bare_insert": (f"{bare_url}/insert", {"BENCH_METHOD": "POST", "BENCH_BODY": body}),
            "disclosure": (f"{base_url}/api/v1/disclosures", {"BENCH_METHOD": "POST", "BENCH_BODY": body}),
        }
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in targets}
        sent_disclosures = 0
        pin_note = f"wrk on CPU {load.wrk_cpus}" if load.wrk_cpus else "wrk not pinned"
        print(
            f"wrk -t{load.threads} -c{load.connections} -d{load.duration}s ({load.warmup}s warm-up each), "
            f"{args.rounds} round(s), {pin_note}, servers on CPU {server_cpus or 'any'}"
        )
        proof_file = workdir / "proofs.txt"
        for round_no in range(1, args.rounds + 1):
            for name, (url, wrk_env) in targets.items():
                warm_env = run_env = wrk_env
                if name == "disclosure":  # a fresh token per run (each lives 300 s), fresh proofs per wrk run
                    token = fetch_token(base_url, demo["issuer"], instance, demo, dpop)
                    healthz_rate = runs["healthz"][-1]["requests_per_s"]
                    expected = healthz_rate * load.warmup
                    warm_env = wrk_env | proof_env(dpop, token, disclosures_url, expected, load, proof_file)
                warm = run_wrk(wrk, load, url, warm_env, load.warmup) if load.warmup else None
                if name == "disclosure":
                    expected = (warm["requests_per_s"] if warm else healthz_rate) * load.duration
                    run_env = wrk_env | proof_env(dpop, token, disclosures_url, expected, load, proof_file)
                result = run_wrk(wrk, load, url, run_env, load.duration)
                if name == "disclosure":
                    sent_disclosures += result["requests"] + (warm["requests"] if warm else 0)
                    if warm:
                        result["warmup_non_2xx"] = warm["non_2xx"]
                        result["warmup_proofs_exhausted"] = warm["proofs_exhausted"]
                runs[name].append(result)
                latency = result["latency_us"]
                print(
                    f"  round {round_no} {name:<12} {result['requests_per_s']:9.1f} req/s  "
                    f"p50 {latency['p50'] / 1000:7.2f} ms  p99 {latency['p99'] / 1000:7.2f} ms  "
                    f"non-2xx {result['non_2xx']}"
                )
        after = disclosure_counts(instance / "broker.db")

    # Whatever the servers' sequencer had not integrated when they stopped (all of it with --checkpointing off).
    subprocess.run([*BROKER, "audit", "sequence", "--once"], env=env, cwd=ROOT, capture_output=True, check=False)
    verify = subprocess.run(
        [*BROKER, "audit", "verify"], env=env, cwd=ROOT, capture_output=True, text=True, check=False
    )
    summary = {name: summarise(results) for name, results in runs.items()}
    for name in summary:
        # Each round measures all three endpoints back to back, so a round's ratio compares rates taken under
        # the same conditions; the median over the rounds is the ratio reported.
        per_round = [
            r["requests_per_s"] / h["requests_per_s"] for r, h in zip(runs[name], runs["healthz"], strict=True)
        ]
        summary[name]["ratio_to_healthz"] = round(statistics.median_low(per_round), 4)
        summary[name]["ratio_per_round"] = [round(x, 4) for x in per_round]
    ratio = summary["disclosure"]["ratio_to_healthz"]
    permits = after.get("permit", 0) - before.get("permit", 0)
    denies = after.get("deny", 0) - before.get("deny", 0)
    warmup_non2xx = sum(r.get("warmup_non_2xx", 0) for r in runs["disclosure"])
    warmup_exhausted = sum(r.get("warmup_proofs_exhausted", 0) for r in runs["disclosure"])

    checks = {
        "disclosure_non_2xx": summary["disclosure"]["non_2xx"] + warmup_non2xx,
        "non_2xx_all_endpoints": sum(s["non_2xx"] for s in summary.values()),
        "socket_errors": sum(s["socket_errors"] for s in summary.values()),
        "dpop_proofs_sent_twice": summary["disclosure"]["proofs_exhausted"] + warmup_exhausted,
        "disclosures_counted_by_wrk": sent_disclosures,
        "permits_committed": permits,
        "denies_committed": denies,
        "audit_verify": (verify.stdout or verify.stderr).strip(),
        "audit_verify_ok": verify.returncode == 0,
    }
    ok = (
        checks["non_2xx_all_endpoints"] == 0
        and checks["disclosure_non_2xx"] == 0
        and checks["socket_errors"] == 0
        and checks["dpop_proofs_sent_twice"] == 0
        and denies == 0
        and permits >= sent_disclosures
        and checks["audit_verify_ok"]
    )

    print()
    print(f"{'endpoint':<28} {'requests/s':>11} {'p50 ms':>8} {'p99 ms':>8} {'vs /healthz':>12}")
    labels = {
        "healthz": "GET /healthz",
        "bare_insert": "POST /insert (bare app)",
        "disclosure": "POST /api/v1/disclosures",
    }
    for name, s in summary.items():
        print(
            f"{labels[name]:<28} {s['requests_per_s']:>11.1f} {s['p50_ms']:>8.2f} {s['p99_ms']:>8.2f} "
            f"{100 * s['ratio_to_healthz']:>11.1f}%"
        )
    print()
    verdict = "meets" if ratio is not None and ratio >= TARGET else "is BELOW"
    print(f"disclosure / healthz = {100 * ratio:.1f} % — {verdict} the target of {100 * TARGET:.0f} %")
    print(
        f"disclosure non-2xx: {checks['disclosure_non_2xx']} (all endpoints: {checks['non_2xx_all_endpoints']}); "
        f"socket errors: {checks['socket_errors']}"
    )
    print(f"disclosures: wrk counted {sent_disclosures}, committed {permits} permits and {denies} denials")
    print(f"broker audit verify: {checks['audit_verify']}")

    result = {
        "benchmark": "http_disclosure",
        "date": started.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": {**machine_info(), "loadavg_1min_before": round(load_before, 2)},
        "software": software_info(wrk),
        "settings": {
            "server": f"gunicorn, {WORKERS} sync workers, 127.0.0.1 (loopback)",
            "database": "SQLite, WAL, synchronous=FULL",
            "checkpointing": args.checkpointing,
            "wrk": f"-t{load.threads} -c{load.connections} -d{load.duration}s --timeout={load.timeout}s",
            "warmup_s": load.warmup,
            "rounds": args.rounds,
            "pin": args.pin,
            "wrk_cpus": load.wrk_cpus,
            "server_cpus": server_cpus,
            "request": {"partner": PARTNER, "person": "mikko", **ASK},
            "dpop": (
                "DPoP-bound token, a fresh Ed25519 proof per request, signed before each wrk run (wrk cannot sign); "
                f"broker proof window {dpop_max_age(load.duration)} s"
            ),
        },
        "results": summary,
        "ratio_disclosure_to_healthz": ratio,
        "target": TARGET,
        "meets_target": ratio is not None and ratio >= TARGET,
        "checks": checks,
        "ok": ok,
    }
    if not args.no_write:
        RESULTS.mkdir(exist_ok=True)
        suffix = f"-{args.label}" if args.label else ""
        path = RESULTS / f"http_disclosure-{started:%Y-%m-%d}{suffix}.json"
        path.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
        print(f"results: {path.relative_to(ROOT)}")
    if not ok:
        print("CHECKS FAILED (see above)", file=sys.stderr)
        if not args.keep:
            for log in ("broker.log", "bare.log"):
                with contextlib.suppress(OSError):
                    print(f"--- {log}\n{(workdir / log).read_text()[-3000:]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
