"""GET /metrics: the operator's figures (broker/services/metrics.py) in the Prometheus text format.

Open like /healthz unless BROKER_METRICS_TOKEN is set; then the scraper sends it as a bearer token (RFC 6750 §2.1).
Either way the figures are counts and ages only, and the endpoint is meant for the operator's network."""

from __future__ import annotations

import hmac

from flask import Flask, Response, request

from broker.services import Broker
from broker.services.metrics import exposition, gauges

#: Prometheus text exposition format 0.0.4.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def init_metrics(app: Flask, broker: Broker) -> None:
    token = broker.settings.metrics_token

    @app.get("/metrics")
    def metrics() -> Response:
        if token is not None:
            scheme, _, given = request.headers.get("Authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
                response = Response("a bearer token is required\n", status=401, mimetype="text/plain")
                response.headers["WWW-Authenticate"] = 'Bearer realm="metrics"'  # RFC 6750 §3
                return response
        return Response(exposition(gauges(broker)), content_type=CONTENT_TYPE)
