"""Prometheus metrics: what `GET /metrics` answers, in the text exposition format.

Most figures are read from the database when scraped, because the database is the truth that
every process and host shares: any web process answers the same numbers. They are cached for
METRICS_CACHE_SECONDS per process so a tight scrape interval costs one set of queries.
Plugins add their own families through the `register_metrics` hook (a collector is a callable
returning `MetricFamily` values). What worker processes count is kept in the database
(`services.counters`); in-process counters (`process_counter`, for the web processes' hot
paths) are summed across gunicorn's workers when PROMETHEUS_MULTIPROC_DIR is set (see
docs/operations.md).
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from flask import current_app
from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

NAME = re.compile(r"wfapp_[a-z0-9_]+")
KINDS = ("counter", "gauge")


@dataclass
class MetricFamily:
    """One metric and its samples: `samples` pairs label values (in `labels` order) with a value.

    `kind` is "counter" (a total that only grows; the name ends in `_total`) or "gauge".
    """

    name: str
    kind: str
    help: str
    labels: tuple[str, ...] = ()
    samples: Sequence[tuple[tuple[str, ...], float]] = field(default_factory=list)

    def check(self) -> None:
        """Raise ValueError when the family would not be valid Prometheus or not ours."""
        if not NAME.fullmatch(self.name):
            raise ValueError(f"metric name {self.name!r} must match {NAME.pattern}")
        if self.kind not in KINDS:
            raise ValueError(f"metric {self.name}: kind {self.kind!r} is not one of {KINDS}")
        if self.kind == "counter" and not self.name.endswith("_total"):
            raise ValueError(f"counter {self.name} must end in _total")
        for values, _ in self.samples:
            if len(values) != len(self.labels):
                raise ValueError(f"metric {self.name}: sample {values!r} does not match the "
                                 f"labels {self.labels!r}")

    def to_prometheus(self) -> Metric:
        """The prometheus_client family for the exposition."""
        if self.kind == "counter":
            counter = CounterMetricFamily(self.name.removesuffix("_total"), self.help,
                                          labels=list(self.labels))
            for values, value in self.samples:
                counter.add_metric(list(values), float(value))
            return counter
        gauge = GaugeMetricFamily(self.name, self.help, labels=list(self.labels))
        for values, value in self.samples:
            gauge.add_metric(list(values), float(value))
        return gauge


Collector = Callable[[], Iterable[MetricFamily]]

# In-process counters: per process, summed across processes by the multiprocess collector.
_PROCESS_REGISTRY = CollectorRegistry(auto_describe=True)
_process_lock = threading.Lock()
_process_counters: dict[str, Counter] = {}


def check_counter_name(name: str) -> None:
    """Raise ValueError unless `name` is one of ours and a counter's (`wfapp_…_total`)."""
    if not NAME.fullmatch(name) or not name.endswith("_total"):
        raise ValueError(f"counter name {name!r} must match {NAME.pattern} and end in _total")


def process_counter(name: str, help_text: str, labels: tuple[str, ...] = ()) -> Counter:
    """An in-process counter (created once per name), for what only this web process sees.

    Not for worker processes: their counts would never reach /metrics (use
    `services.counters`).
    """
    check_counter_name(name)
    with _process_lock:
        counter = _process_counters.get(name)
        if counter is None:
            counter = Counter(name.removesuffix("_total"), help_text, labelnames=labels,
                              registry=_PROCESS_REGISTRY)
            _process_counters[name] = counter
        return counter


class _Families:
    """Adapts our collectors to prometheus_client's collector protocol for one scrape."""

    def __init__(self, families: list[MetricFamily]) -> None:
        self.families = families

    def collect(self) -> Iterable[Metric]:
        for family in self.families:
            yield family.to_prometheus()


_cache_lock = threading.Lock()


def collect(collectors: Iterable[Collector]) -> list[MetricFamily]:
    """Run the collectors (the core's and the plugins'), cached for METRICS_CACHE_SECONDS."""
    ttl = float(current_app.config.get("METRICS_CACHE_SECONDS", 10))
    cache: dict[str, Any] = current_app.extensions["wfapp"].setdefault(
        "metrics_cache", {"at": 0.0, "families": []})
    with _cache_lock:
        if ttl > 0 and time.monotonic() - cache["at"] < ttl and cache["families"]:
            return list(cache["families"])
        families: list[MetricFamily] = []
        for collector in collectors:
            for family in collector():
                family.check()
                families.append(family)
        cache.update(at=time.monotonic(), families=families)
        return list(families)


def exposition(families: list[MetricFamily]) -> bytes:
    """The text format of the database families plus this host's in-process counters."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(families))
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.MultiProcessCollector(registry)
    else:
        registry.register(_ProcessCounters())
    return generate_latest(registry)


class _ProcessCounters:
    """The in-process counters of this process (no PROMETHEUS_MULTIPROC_DIR: one process)."""

    def collect(self) -> Iterable[Metric]:
        yield from _PROCESS_REGISTRY.collect()
