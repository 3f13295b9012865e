"""Serving under gunicorn. Each worker builds its own application (no preloading), so that no database
connection or file lock crosses a fork."""

from __future__ import annotations

import gc
from typing import Any

from flask import Flask
from gunicorn.app.base import BaseApplication

from broker.config import Settings


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

        app = create_app(self._settings)
        start_sequencer(app)
        _freeze_startup_objects()
        return app


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
        "timeout": 30,
        "graceful_timeout": 10,
        "preload_app": False,
        "accesslog": None,
        "errorlog": "-",
        "loglevel": "warning",
        **options,
    }
    BrokerServer(settings, config).run()


def app() -> Flask:
    """`gunicorn 'broker.wsgi:app()'` — settings from the environment."""
    from broker.app import create_app

    application = create_app(Settings.from_env())
    start_sequencer(application)
    _freeze_startup_objects()
    return application
