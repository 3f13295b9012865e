"""GET /metrics: the operator's figures in the Prometheus text format (broker/services/metrics.py)."""

from __future__ import annotations

import re
from dataclasses import replace

from broker.adapters.orm import WebhookDeliveryRow
from broker.app import create_app
from broker.services.events import emit
from broker.services.metrics import Gauge, exposition
from tests.support import Env, add_endpoint

SAMPLE = re.compile(r'^([a-z_]+)(\{[a-z_]+="[^"]*"\})? (-?[0-9.]+)$')


def _samples(text: str) -> dict[str, float]:
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        match = SAMPLE.match(line)
        assert match, f"not a sample line: {line!r}"
        samples[match.group(1) + (match.group(2) or "")] = float(match.group(3))
    return samples


def test_metrics_report_deliveries_overdue_work_and_the_log(env: Env) -> None:
    add_endpoint(env, "whk_1", "kela", ["consent.granted"])
    with env.broker.uow() as uow:
        for _ in range(3):
            emit(uow, type="consent.granted", organisations=["kela"], person_id=None, data={}, now=env.clock.now())
        uow.commit()
    with env.broker.uow() as uow:
        failed = uow.session.query(WebhookDeliveryRow).first()
        assert failed is not None
        failed.status = "failed"
        uow.commit()
    env.clock.advance(minutes=2)
    response = env.client.get("/metrics")
    assert response.status_code == 200
    assert response.content_type == "text/plain; version=0.0.4; charset=utf-8"
    samples = _samples(response.get_data(as_text=True))
    assert samples['broker_webhook_deliveries{status="pending"}'] == 2
    assert samples['broker_webhook_deliveries{status="failed"}'] == 1
    assert samples["broker_webhook_oldest_due_seconds"] == 120
    assert samples["broker_attestations_overdue"] == 0
    assert samples["broker_consent_requests_past_deadline"] == 0
    assert samples["broker_audit_log_entries"] >= 0
    assert "# TYPE broker_webhook_deliveries gauge" in response.get_data(as_text=True)


def test_a_configured_token_is_required(env: Env) -> None:
    settings = replace(env.broker.settings, metrics_token="s3cret-metrics-token")
    broker = replace(env.broker, settings=settings)
    client = create_app(settings, broker=broker).test_client()
    refused = client.get("/metrics")
    assert refused.status_code == 401
    assert refused.headers["WWW-Authenticate"].startswith("Bearer")
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer s3cret-metrics-token"}).status_code == 200


def test_exposition_escapes_label_values_and_writes_each_family_once() -> None:
    text = exposition(
        [
            Gauge("x_total", "help", 1, (("a", 'q"\\\n'),)),
            Gauge("x_total", "help", 2.5, (("a", "b"),)),
        ]
    )
    assert text == '# HELP x_total help\n# TYPE x_total gauge\nx_total{a="q\\"\\\\\\n"} 1\nx_total{a="b"} 2.5\n'
