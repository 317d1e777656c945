"""Prometheus metrics, served as text at ``GET /metrics``.

Read at scrape time from what already counts (never double-kept):

- ``driftline_function_events_{consumed,succeeded,retried,dead_lettered,duplicates}_total{function}``
  and the ``driftline_function_handler_seconds{function}`` histogram, from the runner's stats;
- ``driftline_model_production_version{model}``, from the registry;
- ``driftline_drift_share{model}``, ``driftline_drift_window_drifted{model}`` and
  ``driftline_drift_window_rows{model}`` of the latest ``drift.checked`` window, read from
  the bus by :class:`~driftline.runtime.http.history.History` (which the dashboard reads
  too).

Kept here (:class:`InferenceStats`): ``driftline_inference_requests_total{model,code}``
and the ``driftline_inference_seconds{model}`` histogram of the ``/v2`` endpoints.
"""

from __future__ import annotations

import bisect
import itertools
import threading
from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from driftline.runtime.bus.base import Bus
from driftline.runtime.http.history import History
from driftline.runtime.registry import Registry
from driftline.runtime.stats import LATENCY_BUCKETS_S

INFERENCE_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0)
_COUNTS = {
    "consumed": "Events read by the function.",
    "succeeded": "Events the function handled.",
    "retried": "Retries of a failed handler call.",
    "dead_lettered": "Events sent to the dead-letter topic.",
    "duplicates": "Redelivered events dropped.",
}


def _histogram(
    name: str,
    doc: str,
    label: str,
    series: dict[str, tuple[list[int], float]],
    bounds: tuple[float, ...],
) -> HistogramMetricFamily:
    """A histogram family from per-bucket counts (the last bucket: above every bound)."""
    family = HistogramMetricFamily(name, doc, labels=[label])
    for value, (counts, total) in sorted(series.items()):
        cumulative = itertools.accumulate(counts)
        les = (*map(floatToGoString, bounds), "+Inf")
        family.add_metric([value], list(zip(les, cumulative, strict=True)), sum_value=total)
    return family


class InferenceStats:
    """Counts and latencies of inference requests: a bisect and a dict update per request."""

    def __init__(self) -> None:
        self._requests: dict[tuple[str, int], int] = {}
        self._latency: dict[str, tuple[list[int], list[float]]] = {}
        self._lock = threading.Lock()

    def observe(self, model: str, code: int, seconds: float) -> None:
        bucket = bisect.bisect_left(INFERENCE_BUCKETS_S, seconds)
        with self._lock:
            self._requests[(model, code)] = self._requests.get((model, code), 0) + 1
            counts, total = self._latency.setdefault(
                model, ([0] * (len(INFERENCE_BUCKETS_S) + 1), [0.0])
            )
            counts[bucket] += 1
            total[0] += seconds

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            requests = dict(self._requests)
            latency = {m: (list(c), t[0]) for m, (c, t) in self._latency.items()}
        family = CounterMetricFamily(
            "driftline_inference_requests", "Inference requests answered.", labels=["model", "code"]
        )
        for (model, code), count in sorted(requests.items()):
            family.add_metric([model, str(code)], count)
        yield family
        yield _histogram(
            "driftline_inference_seconds",
            "Inference request time.",
            "model",
            latency,
            INFERENCE_BUCKETS_S,
        )


class _Collector(Collector):
    def __init__(
        self,
        registry: Registry,
        runner: Any,
        drift: History | None,
        inference: InferenceStats | None = None,
        capture: Any = None,
    ):
        self.registry = registry
        self.runner = runner
        self.drift = drift
        self.inference = inference
        self.capture = capture

    def collect(self) -> Iterator[Metric]:
        stats = dict(self.runner.stats) if self.runner is not None else {}
        for name, doc in _COUNTS.items():
            family = CounterMetricFamily(
                f"driftline_function_events_{name}", doc, labels=["function"]
            )
            for function, s in stats.items():
                family.add_metric([function], getattr(s, name))
            yield family
        yield _histogram(
            "driftline_function_handler_seconds",
            "Handler call time.",
            "function",
            {f: (list(s.latency_buckets), s.handler_seconds) for f, s in stats.items()},
            LATENCY_BUCKETS_S,
        )
        if self.inference is not None:
            yield from self.inference.collect()
        if self.capture is not None:
            captured = CounterMetricFamily(
                "driftline_capture_events",
                "Requests served on /v2 as captured: queued, sent as score.completed, dropped "
                "(the queue was full), failed (the bus refused them).",
                labels=["outcome"],
            )
            for outcome, count in sorted(dict(self.capture.counts).items()):
                captured.add_metric([outcome], count)
            yield captured
        yield from self._models()

    def _models(self) -> Iterator[Metric]:
        production = GaugeMetricFamily(
            "driftline_model_production_version",
            "Version the production alias points at.",
            labels=["model"],
        )
        for model in self.registry.models():
            current = self.registry.production(model)
            if current is not None:
                production.add_metric([model], current.version)
        yield production
        latest = dict(self.drift.latest) if self.drift is not None else {}
        share = GaugeMetricFamily(
            "driftline_drift_share",
            "Share of drifted features in the latest window.",
            labels=["model"],
        )
        drifted = GaugeMetricFamily(
            "driftline_drift_window_drifted", "1 if the latest window drifted.", labels=["model"]
        )
        rows = GaugeMetricFamily(
            "driftline_drift_window_rows", "Rows in the latest window.", labels=["model"]
        )
        for model, checked in sorted(latest.items()):
            if checked.drift_share is not None:
                share.add_metric([model], checked.drift_share)
            drifted.add_metric([model], float(checked.drifted))
            rows.add_metric([model], checked.rows)
        yield from (share, drifted, rows)


class Metrics:
    """The gateway's metrics: a registry of its own (so two apps in one process never clash)."""

    def __init__(
        self, registry: Registry, runner: Any = None, bus: Bus | None = None, capture: Any = None
    ):
        self.prom = CollectorRegistry(auto_describe=False)
        self.inference = InferenceStats()
        self.history = History(bus) if bus is not None else None
        self.prom.register(_Collector(registry, runner, self.history, self.inference, capture))

    def observe(self, model: str, code: int, seconds: float) -> None:
        self.inference.observe(model, code, seconds)

    def start(self) -> None:
        if self.history is not None:
            self.history.start()

    def stop(self) -> None:
        if self.history is not None:
            self.history.stop()

    def router(self) -> APIRouter:
        api = APIRouter(tags=["operations"])

        @api.get(
            "/metrics",
            response_class=Response,
            responses={
                200: {
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                    "description": "Prometheus text format.",
                }
            },
        )
        def metrics() -> Response:
            """Prometheus metrics: functions, inference, drift, production versions."""
            return Response(generate_latest(self.prom), media_type=CONTENT_TYPE_LATEST)

        return api
