"""A database that cannot be used just now (issue #6, graceful degradation), in process, on SQLite and PostgreSQL:
every surface — the API, the OAuth token endpoint, the portal's and the DPO workspace's pages, readiness — answers
503 with `Retry-After`, promptly and without a trace of the error; liveness stays 200; and when the database is
back the same application answers 200 again, with nothing restarted.

The outage is made the way it happens: PostgreSQL is reached through a TCP relay that the test cuts (every
connection reset, new ones refused) and restores, or makes stall (connections accepted, nothing answered); the
SQLite database's folder is moved away (and back). tests/integration/test_db_outage.py stops a real PostgreSQL
under a served broker.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy
from sqlalchemy import text
from sqlalchemy.engine import make_url

from broker.adapters.database import Database, Timeouts, unavailability
from broker.adapters.orm import Base
from broker.app import build_broker, create_app
from broker.config import Settings
from broker.demo import register_organisations
from broker.domain.clock import FixedClock
from broker.domain.errors import ConfigurationError
from broker.services.sequencer import SequencerThread
from schemas.records.examples import EXAMPLES
from tests.integration.test_portal import log_in
from tests.support import Env, new_hetu

PROBLEM = "application/problem+json"
# What must never reach a client in an answer to a database failure: the driver's or SQLAlchemy's words, a
# statement, the database's address or file.
LEAKS = ("Traceback", "sqlalchemy", "psycopg", "sqlite", "SELECT", "INSERT", "127.0.0.1:", "broker.db", "errno")
PROMPT = 5.0  # seconds: an outage is answered well inside this (the connect timeout, at most, on a stalled server)
# A TCP relay, a server that never answers, row locks: what only PostgreSQL has.
ON_POSTGRES = pytest.mark.parametrize(
    "database_url",
    [
        pytest.param(
            "postgres",
            marks=[
                pytest.mark.postgres,
                pytest.mark.skipif(
                    not os.environ.get("BROKER_TEST_POSTGRES_URL"), reason="BROKER_TEST_POSTGRES_URL not set"
                ),
            ],
        )
    ],
    indirect=True,
)


# -- making the database go away -----------------------------------------------------------------------------------


class Relay:
    """A TCP relay in front of PostgreSQL. `cut()` resets every connection through it and refuses new ones, as a
    stopped server or a lost network does; `stall()` accepts connections and answers nothing, as a hung server or
    middlebox does; `restore()` relays again on the same port."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = 0
        self._listener: socket.socket | None = None
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._stalled = False

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), name="relay-accept", daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut
            with self._lock:
                self._sockets.add(client)
            if self._stalled:
                continue  # held open, never answered
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                self._close(client)
                continue
            upstream.settimeout(None)
            with self._lock:
                self._sockets.add(upstream)
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), name="relay-pump", daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            self._close(source)
            self._close(sink)

    def _close(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.discard(sock)
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()

    def cut(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
            listener.close()
        with self._lock:
            live = list(self._sockets)
        for sock in live:
            self._close(sock)

    def stall(self) -> None:
        self.cut()
        self._stalled = True
        self.start()

    def restore(self) -> None:
        self.cut()
        self._stalled = False
        self.start()


class Outage:
    """The database of one test, and a way to take it away and give it back."""

    def __init__(self, url: str, relay: Relay | None, folder: Path | None) -> None:
        self.url = url
        self.relay = relay
        self.folder = folder  # SQLite: the folder holding the database file
        self.env: Env | None = None

    @property
    def postgres(self) -> bool:
        return self.relay is not None

    def begin(self) -> None:
        if self.relay is not None:
            self.relay.cut()
            return
        assert self.folder is not None and self.env is not None
        self.folder.rename(self.folder.with_name("away"))
        # An open SQLite file stays usable after its folder is renamed, where a failed disk or a lost mount would
        # break it: the pooled connections are dropped, as they would be broken. Nothing else is done for the
        # broker — it must find out by itself, and recover by itself.
        self.env.broker.db.engine.dispose()

    def end(self) -> None:
        if self.relay is not None:
            self.relay.restore()
            return
        assert self.folder is not None
        self.folder.with_name("away").rename(self.folder)


@pytest.fixture
def clock() -> FixedClock:
    # The portal's OpenID client checks the ID token's times against the real clock (tests/integration/test_portal.py).
    return FixedClock(at=datetime.now(UTC).replace(microsecond=0))


@pytest.fixture
def outage(database_url: str, tmp_path: Path) -> Iterator[Outage]:
    if database_url.startswith("sqlite"):
        folder = tmp_path / "db"
        folder.mkdir()
        url = f"sqlite:///{folder / 'broker.db'}"
        db = Database(url)
        Base.metadata.create_all(db.engine)
        db.dispose()
        yield Outage(url, None, folder)
        return
    parsed = make_url(database_url)
    relay = Relay(parsed.host or "127.0.0.1", parsed.port or 5432)
    relay.start()
    url = parsed.set(host="127.0.0.1", port=relay.port).render_as_string(hide_password=False)
    try:
        yield Outage(url, relay, None)
    finally:
        relay.cut()


def served_env(settings: Settings, clock: FixedClock, outage: Outage, **timeouts: Any) -> Env:
    """What tests.support.make_env builds, as a served process builds it: with its statement and lock timeouts."""
    settings = replace(settings, database_url=outage.url, **timeouts)
    settings.instance_path.mkdir(parents=True, exist_ok=True)
    broker = build_broker(settings, clock=clock, serving=True)
    register_organisations(broker)
    app = create_app(settings, broker=broker)
    app.testing = True
    env = Env(broker=broker, app=app, client=app.test_client(), clock=clock)
    outage.env = env
    return env


@pytest.fixture
def env(settings: Settings, clock: FixedClock, outage: Outage) -> Iterator[Env]:
    environment = served_env(settings, clock, outage)
    yield environment
    environment.broker.db.dispose()


# -- a person with something to disclose ---------------------------------------------------------------------------


def disclosable_person(env: Env) -> str:
    """A person whose work assessment the health centre may have, on the person's in-person consent."""
    person_id = env.person()
    env.serve(person_id, "kisalli", "varha-health")
    consent = env.post(
        "kisalli",
        "/consents",
        {
            "person_id": person_id,
            "recipients": ["varha-health"],
            "categories": ["work_assessment"],
            "purposes": ["work_capacity_assessment"],
            "method": "in_person",
            "witness": "Pekka Salo",
        },
    )
    assert consent.status_code == 201, consent.get_json()
    record = env.post(
        "kisalli",
        "/records",
        {"person_id": person_id, "category": "work_assessment", "content": EXAMPLES["work_assessment"]},
    )
    assert record.status_code == 201, record.get_json()
    return person_id


def disclose(env: Env, person_id: str) -> Any:
    body = {"person_id": person_id, "category": "work_assessment", "purpose": "work_capacity_assessment"}
    return env.post("varha-health", "/disclosures", body)


def write_personas(env: Env, person_id: str, hetu: str) -> None:
    """The development IdP's personas (demo.json): Mikko, who is `person_id`; the DPO persona is built in."""
    demo = {"issuer": env.issuer, "persons": [{"person_id": person_id, "hetu": hetu, "name": "Mikko", "login": "m"}]}
    (env.broker.settings.instance_path / "demo.json").write_text(json.dumps(demo), encoding="utf-8")


def timed(call: Any) -> tuple[Any, float]:
    began = time.monotonic()
    response = call()
    return response, time.monotonic() - began


def assert_unavailable_problem(response: Any, seconds: float) -> None:
    body = response.get_data(as_text=True)
    assert response.status_code == 503, body
    assert response.content_type == PROBLEM
    assert response.headers["Retry-After"].isdigit()
    problem = response.get_json(force=True)
    assert problem["code"] == "database_unavailable" and problem["status"] == 503 and problem["title"]
    assert set(problem) <= {"type", "title", "status", "code", "detail", "request_id"}
    assert not any(leak.lower() in body.lower() for leak in LEAKS), body
    assert seconds < PROMPT


def assert_unavailable_page(response: Any, seconds: float, *, says: str) -> None:
    body = response.get_data(as_text=True)
    assert response.status_code == 503, body
    assert response.mimetype == "text/html"
    assert response.headers["Retry-After"].isdigit()
    assert says in body, body
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
    assert not any(leak.lower() in body.lower() for leak in LEAKS), body
    assert seconds < PROMPT


# -- the tests -------------------------------------------------------------------------------------------------------


def test_every_surface_answers_503_with_retry_after_while_the_database_is_away_and_200_when_it_is_back(
    env: Env, outage: Outage, caplog: pytest.LogCaptureFixture
) -> None:
    hetu = new_hetu()
    mikko = env.person(hetu=hetu)
    write_personas(env, mikko, hetu)
    person_id = disclosable_person(env)
    assert disclose(env, person_id).status_code == 200
    portal = log_in(env, "m")
    dpo = log_in(env, "dpo")
    assert portal.get("/portal/consents").status_code == 200
    assert dpo.get("/dpo/search").status_code == 200
    # In production Flask does not re-raise what no handler takes; nothing of this test may depend on it.
    env.app.config["PROPAGATE_EXCEPTIONS"] = False

    outage.begin()
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert_unavailable_problem(*timed(lambda: disclose(env, person_id)))
        assert_unavailable_problem(*timed(lambda: env.get("varha-health", f"/consents?person_id={person_id}")))
        assert_unavailable_problem(*timed(lambda: env.token_response("kela")))
        assert_unavailable_problem(*timed(lambda: env.client.get("/readyz")))
        assert env.client.get("/healthz").status_code == 200  # alive, only not ready
        finnish = "Palvelu ei ole juuri nyt käytettävissä"
        assert_unavailable_page(*timed(lambda: portal.get("/portal/consents")), says=finnish)
        assert_unavailable_page(
            *timed(lambda: portal.get("/portal/log", headers={"Accept-Language": "sv"})),
            says="Tjänsten är inte tillgänglig just nu",
        )
        assert_unavailable_page(
            *timed(lambda: dpo.get("/dpo/search", headers={"Accept-Language": "en"})),
            says="The service is not available just now",
        )
        # A form sent while the database is away: the same page, offering the portal's front page to try again.
        page, seconds = timed(lambda: portal.client.post("/portal/language", data={"lang": "sv", "csrf_token": "x"}))
        assert_unavailable_page(page, seconds, says=finnish)
        assert 'href="/portal/"' in page.get_data(as_text=True)
    unavailable = [r for r in caplog.records if r.getMessage() == "database unavailable"]
    assert unavailable and not [r for r in caplog.records if r.levelno >= logging.ERROR]
    reasons = {getattr(r, "reason", None) for r in unavailable}
    assert reasons <= {"connection_lost", "connection_failed", "sqlite_CANTOPEN", "write_lock"}, reasons
    assert not any(r.exc_info for r in unavailable)

    outage.end()
    # The same application, nothing restarted: the pool replaces its broken connections by itself.
    assert disclose(env, person_id).status_code == 200
    assert env.get("varha-health", f"/consents?person_id={person_id}").status_code == 200
    assert env.token_response("kela").status_code == 200
    assert env.client.get("/readyz").status_code == 200
    assert portal.get("/portal/consents").status_code == 200
    assert dpo.get("/dpo/search").status_code == 200


def test_an_error_that_is_not_an_outage_is_still_a_500_and_not_disguised_as_one(env: Env) -> None:
    env.app.config["PROPAGATE_EXCEPTIONS"] = False

    def broken() -> Any:
        with env.broker.uow() as uow:
            uow.session.execute(text("SELECT * FROM no_such_table"))
        return "unreachable"

    env.app.add_url_rule("/broken", "broken", broken)
    response = env.client.get("/broken")
    assert response.status_code == 500 and response.get_json()["code"] == "internal_error"


@ON_POSTGRES
def test_a_server_that_accepts_connections_but_never_answers_is_given_up_within_the_connect_timeout(
    settings: Settings, clock: FixedClock, outage: Outage
) -> None:
    env = served_env(settings, clock, outage, db_connect_timeout=2)
    try:
        token = env.token("varha-health")
        assert token
        outage.relay.stall()  # type: ignore[union-attr]
        # The pooled connection, in use a moment ago, is not pinged: its statement finds it reset, a 503 at once,
        # and the pool is invalidated. The next request opens a new connection, to a server that never answers.
        assert_unavailable_problem(*timed(lambda: env.get("varha-health", "/inbox")))
        response, seconds = timed(lambda: env.get("varha-health", "/inbox"))
        assert_unavailable_problem(response, seconds)
        assert seconds >= 1.5  # it was the connect timeout (libpq's 2 s at least) that ended the wait
        outage.relay.restore()  # type: ignore[union-attr]
        assert env.get("varha-health", "/inbox").status_code == 200
    finally:
        env.broker.db.dispose()


@ON_POSTGRES
def test_a_lock_held_longer_than_the_lock_timeout_is_a_503_and_not_a_hang(
    settings: Settings, clock: FixedClock, outage: Outage, database_url: str
) -> None:
    # (SQLite has no row locks: its writers queue on one file lock, broker/adapters/database.py.)
    env = served_env(settings, clock, outage, db_lock_timeout=1.0)
    try:
        person_id = disclosable_person(env)
        other = sqlalchemy.create_engine(database_url)
        with other.connect() as holder:
            # A withdrawal's lock on the person (broker/services/persons.py), held by a transaction that does not end.
            holder.execute(text("SELECT id FROM persons WHERE id = :id FOR UPDATE"), {"id": person_id})
            response, seconds = timed(lambda: disclose(env, person_id))
            assert_unavailable_problem(response, seconds)
            assert seconds >= 0.9
            holder.rollback()
        other.dispose()
        assert disclose(env, person_id).status_code == 200
    finally:
        env.broker.db.dispose()


def test_a_request_that_finds_no_free_pooled_connection_is_a_503_within_the_pool_timeout(
    settings: Settings, clock: FixedClock, outage: Outage
) -> None:
    env = served_env(settings, clock, outage, db_pool_timeout=0.5)
    try:
        env.token("varha-health")
        pool = env.broker.db.engine.pool
        held = [env.broker.db.engine.connect() for _ in range(pool.size() + pool._max_overflow)]  # type: ignore[attr-defined]
        try:
            response, seconds = timed(lambda: env.get("varha-health", "/inbox"))
            assert_unavailable_problem(response, seconds)
            assert seconds >= 0.4
        finally:
            for connection in held:
                connection.close()
        assert env.get("varha-health", "/inbox").status_code == 200
    finally:
        env.broker.db.dispose()


def test_served_connections_carry_the_statement_and_lock_timeouts(env: Env, outage: Outage) -> None:
    with env.broker.db.engine.connect() as connection:
        if outage.postgres:
            assert connection.execute(text("SHOW statement_timeout")).scalar() == "10s"
            assert connection.execute(text("SHOW lock_timeout")).scalar() == "5s"
            assert connection.execute(text("SHOW search_path")).scalar().startswith("test_")  # the URL's own options
        else:
            assert connection.execute(text("PRAGMA busy_timeout")).scalar() == 5000
    assert env.broker.db.engine.pool.timeout() == 5.0


def test_the_audit_sequencer_waits_out_an_outage_and_sequences_what_came_after(
    env: Env, outage: Outage, caplog: pytest.LogCaptureFixture
) -> None:
    thread = SequencerThread(env.broker, interval=0.05)
    thread.start()
    try:
        person_id = disclosable_person(env)
        assert wait_for(lambda: pending(env) == 0)
        with caplog.at_level(logging.INFO, logger="broker.sequencer"):
            outage.begin()
            time.sleep(0.5)  # ten rounds or so against a database that is away
            assert thread._thread is not None and thread._thread.is_alive()
            outage.end()
            assert disclose(env, person_id).status_code == 200
            assert wait_for(lambda: pending(env) == 0)
        waits = [r for r in caplog.records if r.getMessage() == "audit sequencer waits for the database"]
        assert len(waits) <= 1  # an outage is logged once, not every round
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert thread.database_unavailable is None
    finally:
        thread.stop()


def pending(env: Env) -> int:
    with env.broker.uow(write=False) as uow:
        return int(uow.session.scalar(text("SELECT count(*) FROM audit_pending")) or 0)


def wait_for(condition: Any, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


# -- telling an outage from other errors -----------------------------------------------------------------------------


def error_of(engine: sqlalchemy.Engine, statement: str) -> BaseException:
    with pytest.raises(sqlalchemy.exc.SQLAlchemyError) as raised, engine.connect() as connection:
        connection.execute(text(statement))
    return raised.value


def test_only_errors_that_mean_the_database_cannot_be_used_count_as_an_outage(
    database_url: str, tmp_path: Path
) -> None:
    db = Database(database_url, timeouts=Timeouts(connect=2, statement=1.0, lock=0.2))
    engine = db.engine
    try:
        assert unavailability(error_of(engine, "SELECT * FROM no_such_table")) is None
        assert unavailability(error_of(engine, "SELEC 1")) is None
        if db.sqlite:
            gone = Database(f"sqlite:///{tmp_path / 'no' / 'such' / 'folder.db'}")
            assert unavailability(error_of(gone.engine, "SELECT 1")) == "sqlite_CANTOPEN"
            gone.dispose()
            return
        assert unavailability(error_of(engine, "SELECT pg_sleep(2)")) == "postgres_57014"  # statement_timeout
        assert unavailability(error_of(engine, "SELECT 1/0")) is None
        refused = Database("postgresql+psycopg://postgres@127.0.0.1:1/none", timeouts=Timeouts(connect=2))
        assert unavailability(error_of(refused.engine, "SELECT 1")) == "connection_failed"
        refused.dispose()
        with engine.connect() as holder, engine.connect() as waiter:
            holder.execute(text("LOCK TABLE audit_head IN ACCESS EXCLUSIVE MODE"))
            with pytest.raises(sqlalchemy.exc.OperationalError) as locked:
                waiter.execute(text("SELECT * FROM audit_head"))
            assert unavailability(locked.value) == "postgres_55P03"  # lock_timeout
        with engine.connect() as victim:
            pid = victim.execute(text("SELECT pg_backend_pid()")).scalar()
            victim.commit()
            with engine.connect() as admin:
                admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            with pytest.raises(sqlalchemy.exc.OperationalError) as terminated:
                victim.execute(text("SELECT 1"))
            assert unavailability(terminated.value) == "connection_lost"
    finally:
        db.dispose()


# -- the settings ----------------------------------------------------------------------------------------------------


def test_the_time_limits_come_from_the_environment_and_must_fit_inside_the_request_timeout(tmp_path: Path) -> None:
    base = {"BROKER_MODE": "test", "BROKER_INSTANCE_PATH": str(tmp_path)}
    defaults = Settings.from_env(base)
    assert (defaults.request_timeout, defaults.db_connect_timeout) == (30, 5)
    assert (defaults.db_pool_timeout, defaults.db_statement_timeout, defaults.db_lock_timeout) == (5.0, 10.0, 5.0)
    tuned = Settings.from_env(
        base
        | {
            "BROKER_REQUEST_TIMEOUT": "20",
            "BROKER_DB_CONNECT_TIMEOUT": "3",
            "BROKER_DB_POOL_TIMEOUT": "2.5",
            "BROKER_DB_STATEMENT_TIMEOUT": "8",
            "BROKER_DB_LOCK_TIMEOUT": "1.5",
        }
    )
    assert (tuned.request_timeout, tuned.db_connect_timeout, tuned.db_pool_timeout) == (20, 3, 2.5)
    assert (tuned.db_statement_timeout, tuned.db_lock_timeout) == (8.0, 1.5)
    with pytest.raises(ConfigurationError, match="less than BROKER_REQUEST_TIMEOUT"):
        Settings.from_env(base | {"BROKER_REQUEST_TIMEOUT": "15", "BROKER_DB_STATEMENT_TIMEOUT": "10"})
    with pytest.raises(ConfigurationError, match="BROKER_DB_LOCK_TIMEOUT must be a number"):
        Settings.from_env(base | {"BROKER_DB_LOCK_TIMEOUT": "soon"})
    with pytest.raises(ConfigurationError, match=re.escape("BROKER_DB_CONNECT_TIMEOUT must be from 2 to 3600")):
        Settings.from_env(base | {"BROKER_DB_CONNECT_TIMEOUT": "1"})


# -- pooled connections broken while idle ----------------------------------------------------------------------------


def _backend_pid(engine: sqlalchemy.Engine) -> int:
    with engine.connect() as connection:
        pid = connection.execute(text("SELECT pg_backend_pid()")).scalar()
        assert isinstance(pid, int)
        return pid


def _terminate(engine: sqlalchemy.Engine, pid: int) -> None:
    with engine.connect() as admin:
        admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        admin.commit()


@ON_POSTGRES
def test_a_pooled_connection_broken_while_idle_is_replaced_at_checkout_without_an_error(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server restart at night: the pool's connections are all broken, and the first request of the morning
    must not pay for it. A connection idle longer than PING_AFTER_IDLE_SECONDS is pinged at checkout and replaced."""
    from broker.adapters import database

    db = Database(database_url, pool_size=2)
    try:
        broken = _backend_pid(db.engine)  # now idle in the pool
        other = sqlalchemy.create_engine(database_url)
        _terminate(other, broken)
        other.dispose()
        monkeypatch.setattr(database, "PING_AFTER_IDLE_SECONDS", 0.0)  # as if it had lain idle for a while
        assert _backend_pid(db.engine) != broken  # no error: replaced at checkout
    finally:
        db.dispose()


@ON_POSTGRES
def test_a_connection_broken_while_in_use_fails_one_statement_as_an_outage_and_the_pool_recovers(
    database_url: str,
) -> None:
    """Under load a pooled connection is not pinged (it was in use a moment ago): a connection broken since fails
    its next statement as `connection_lost` (a 503 for a request), and the pool hands out a new one after it."""
    db = Database(database_url, pool_size=2)
    try:
        broken = _backend_pid(db.engine)
        other = sqlalchemy.create_engine(database_url)
        _terminate(other, broken)
        other.dispose()
        with pytest.raises(sqlalchemy.exc.OperationalError) as lost, db.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        assert unavailability(lost.value) == "connection_lost"
        assert _backend_pid(db.engine) != broken
    finally:
        db.dispose()
