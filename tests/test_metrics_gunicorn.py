"""/metrics under gunicorn with two worker processes and PROMETHEUS_MULTIPROC_DIR: every scrape
sums both processes' in-process counters and reads the same database figures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.services import start_gunicorn, stop
from tests.webhooks import make_integration, standard

pytestmark = pytest.mark.redis


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


def test_scrapes_agree_across_gunicorn_workers(rq_app: Any, app_config: dict[str, Any],
                                               tmp_path: Path) -> None:
    secret = make_integration("STD")
    multiproc = tmp_path / "prometheus"
    multiproc.mkdir()
    url, proc = start_gunicorn(app_config, tmp_path / "gunicorn.log",
                               PROMETHEUS_MULTIPROC_DIR=str(multiproc),
                               WFAPP_METRICS_CACHE_SECONDS="0")
    try:
        with requests.Session() as session:
            for i in range(12):
                body, headers = standard(secret, {"type": "order.paid", "id": f"M-{i}"})
                # A fresh connection each time, so both gunicorn workers take some.
                answer = requests.post(f"{url}/hooks/STD", data=body, headers=headers,
                                       timeout=10)
                assert answer.status_code == 202, answer.text
            refused = session.post(f"{url}/hooks/STD", data=b"{}", timeout=10, headers={
                "webhook-id": "x", "webhook-timestamp": "1", "webhook-signature": "v1,AAAA"})
            assert refused.status_code == 401
            scrapes = [requests.get(f"{url}/metrics", timeout=10) for _ in range(6)]
    finally:
        stop(proc)
    seen = []
    for scrape in scrapes:
        assert scrape.status_code == 200, scrape.text
        samples = _samples(scrape.text)
        stored = samples[("wfapp_inbound_events_total",
                          (("outcome", "stored"), ("source", "on_webhook")))]
        refusals = samples[("wfapp_deliveries_total", (("channel", "webhook"),
                                                       ("integration", "STD"),
                                                       ("outcome", "refused")))]
        pending = samples[("wfapp_events", (("status", "pending"),))]
        seen.append((stored, refusals, pending))
    assert set(seen) == {(12.0, 1.0, 12.0)}, seen
    assert len(list(multiproc.glob("counter_*.db"))) >= 1
