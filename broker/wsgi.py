"""Serving under gunicorn. Each worker builds its own application (no preloading), so that no database
connection or file lock crosses a fork. Application logs are JSON lines on stderr (broker/logs.py)."""

from __future__ import annotations

import gc
import logging
from typing import Any

import gunicorn.http.wsgi
from flask import Flask
from gunicorn.app.base import BaseApplication

from broker.config import Settings
from broker.http.limits import MAX_HEADER_FIELD_BYTES, MAX_HEADER_FIELDS, MAX_REQUEST_LINE
from broker.logs import configure_logging

# What gunicorn puts in its `Server` header instead of its own name. RFC 9110 §10.2.4 lets an origin server send
# a product token and warns that detail in it helps an attacker pick an exploit (OWASP ASVS 5.0 V13.4.6: no version
# information of backend components); gunicorn always sends the field, and an empty one is not a valid field value.
SERVER_PRODUCT = "broker"
# What gunicorn refuses before the application sees it (414 for the request line, 431 for header fields); the
# application checks the same in broker/http/limits.py, which holds the reasons.
REQUEST_LIMITS = {
    "limit_request_line": MAX_REQUEST_LINE,
    "limit_request_fields": MAX_HEADER_FIELDS,
    "limit_request_field_size": MAX_HEADER_FIELD_BYTES,
}


class BrokerServer(BaseApplication):  # type: ignore[misc]
    def __init__(self, settings: Settings, options: dict[str, Any]) -> None:
        self._settings = settings
        self._options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self._options.items():
            self.cfg.set(key, value)

    def load(self) -> Flask:
        from broker.app import create_app

        prepare_serving()
        app = create_app(self._settings)
        start_sequencer(app)
        _freeze_startup_objects()
        return app


def prepare_serving() -> None:
    """What a served process needs before its app is built: JSON logs (first, so that Flask adds no handler of its
    own), and no `Server: gunicorn` banner."""
    configure_logging(logging.INFO)
    hide_server_banner()


def hide_server_banner() -> None:
    """gunicorn writes `Server: gunicorn` itself, before the application's headers, and has no setting to change it
    (benoitc/gunicorn#825, declined): a WSGI middleware could only add a second `Server` field. Its response object
    reads the module-level `SERVER` name for each response, so that name is replaced. If a gunicorn release moves it,
    tests/integration/test_headers_and_logs.py fails (a banner is not worth refusing to start over)."""
    gunicorn.http.wsgi.SERVER = SERVER_PRODUCT


def start_sequencer(app: Flask) -> None:
    """Every served process runs the audit sequencer's thread; one of them is elected to do the work
    (broker/services/sequencer.py). `BROKER_AUDIT_SEQUENCER=off` leaves it to another process."""
    from broker.services.sequencer import SequencerThread

    broker = app.extensions["broker"]
    if broker.settings.audit_sequencer:
        thread = SequencerThread(broker)
        thread.start()
        app.extensions["sequencer"] = thread


def _freeze_startup_objects() -> None:
    """Move everything built at start-up (modules, the app, the compiled policy) out of the garbage collector's
    reach: a full collection then walks only what requests create, and stops costing a large page 70–100 ms at
    its p99 (docs/benchmarks.md, "Client portal"). Those objects live as long as the worker anyway."""
    gc.collect()
    gc.freeze()


def run_gunicorn(settings: Settings, *, host: str, port: int, workers: int, **options: Any) -> None:
    config = {
        "bind": f"{host}:{port}",
        "workers": workers,
        "worker_class": "sync",
        # A worker silent this long is ended: the request timeout, which every database wait stays well inside
        # (Settings, "Time limits"), so that an unusable database is answered 503 rather than cut off.
        "timeout": settings.request_timeout,
        "graceful_timeout": 10,
        "preload_app": False,
        "accesslog": None,
        "errorlog": "-",
        "loglevel": "warning",
        **REQUEST_LIMITS,
        **options,
    }
    BrokerServer(settings, config).run()


def app() -> Flask:
    """`gunicorn 'broker.wsgi:app()'` — settings from the environment."""
    from broker.app import create_app

    prepare_serving()
    application = create_app(Settings.from_env())
    start_sequencer(application)
    _freeze_startup_objects()
    return application
