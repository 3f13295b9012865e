"""The partner REST API (v1): thin views — load schema → call service → dump schema."""

from __future__ import annotations

from dataclasses import replace

from flask import current_app, g

from broker.domain.model import Caller
from broker.services import Broker


def current_broker() -> Broker:
    broker: Broker = current_app.extensions["broker"]
    return broker


def current_caller() -> Caller:
    caller: Caller = g.caller
    return replace(caller, request_id=getattr(g, "request_id", None))
