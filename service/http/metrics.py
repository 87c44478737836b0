"""``GET /metrics``: Prometheus text from a registry of this app's own (docs/api.md#operations).

- ``keyledger_http_request_duration_seconds{route,method,status_class}``: a
  histogram per route template (never the raw path, so cardinality stays bounded).
- ``keyledger_verify_outcomes_total{code}``: verdicts by code (``Verifier.outcomes``).
- ``keyledger_log_head_position``, ``keyledger_outbox_lag_events``,
  ``keyledger_projection_lag_events{projection}``,
  ``keyledger_verification_index_keys`` / ``_lag_events``, ``keyledger_nats_connected``,
  ``keyledger_log_truncated``, ``keyledger_quarantined_keys{consumer}``, ``keyledger_ready``
  and ``keyledger_degraded``: read at scrape time from the same ``Vitals`` as ``/readyz``.

Each app gets its own ``CollectorRegistry`` (never the global one), so several
apps in one process, as in the tests and benchmarks, do not collide.

The request histogram is recorded on every request, so it is not
``prometheus_client.Histogram`` (a lock and a label lookup, ≈3 µs): the app
runs on one event loop thread, so plain per-series bucket lists suffice
(a bisect and two additions) and are turned into metric families on scrape.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from service.http.context import KEYLEDGER, SETTINGS
from service.http.health_routes import assess_readiness
from service.http.request_context import RequestObserver
from service.http.vitals import read_vitals
from service.verification.build import hot_path

routes = web.RouteTableDef()
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")


class _Series:
    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(LATENCY_BUCKETS) + 1)  # the last one is +Inf
        self.total = 0.0


class RequestLatency(Collector):
    """Request durations per (route template, method, status class)."""

    def __init__(self) -> None:
        self._series: dict[tuple[str, str, str], _Series] = {}
        # The same series by exact status, so that a request costs one lookup. Bounded:
        # routes are templates, methods outside _METHODS share one key, statuses are few.
        self._by_status: dict[tuple[str, str, int], _Series] = {}

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count one request (called around every request, by service.http.request_context)."""
        series = self._by_status.get((route, method, status))
        if series is None:
            series = self._new_status(route, method, status)
        series.counts[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        series.total += seconds

    def _new_status(self, route: str, method: str, status: int) -> _Series:
        status_class = _STATUS_CLASSES[min(max(status // 100, 1), 5) - 1]
        method = method if method in _METHODS else "OTHER"
        key = (route, method, status_class)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = _Series()
        self._by_status[(route, method, status)] = series
        return series

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(
            "keyledger_http_request_duration_seconds",
            "HTTP request latency by route template, method and status class.",
            labels=("route", "method", "status_class"),
        )
        for labels, series in sorted(self._series.items()):
            cumulative, buckets = 0, []
            for bound, count in zip((*LATENCY_BUCKETS, float("inf")), series.counts, strict=True):
                cumulative += count
                buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
            family.add_metric(list(labels), buckets, series.total)
        yield family


class VerifyOutcomes(Collector):
    """Verdicts by code, read from the app's ``Verifier`` counter on scrape."""

    def __init__(self, app: web.Application) -> None:
        self.app = app

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "keyledger_verify_outcomes",
            "Verification verdicts (POST /v1/verify and GET /v1/authorize) by code.",
            labels=("code",),
        )
        service = self.app.get(KEYLEDGER)
        for code, count in sorted(service.verifier.outcomes.items() if service else ()):
            family.add_metric([code], count)
        yield family


class AppMetrics:
    """The registry of one app and the gauges refreshed on every scrape."""

    def __init__(self, app: web.Application) -> None:
        self.registry = CollectorRegistry()
        self.latency = RequestLatency()
        self.registry.register(self.latency)
        self.registry.register(VerifyOutcomes(app))

        def gauge(name: str, doc: str, labels: tuple[str, ...] = ()) -> Gauge:
            return Gauge(name, doc, labels, registry=self.registry)

        self.database_up = gauge("keyledger_database_up", "1 when PostgreSQL answered the scrape.")
        self.log_head = gauge(
            "keyledger_log_head_position", "Position of the last committed event."
        )
        self.nats_connected = gauge(
            "keyledger_nats_connected", "1 when the outbox relay is connected to NATS."
        )
        self.outbox_lag = gauge(
            "keyledger_outbox_lag_events", "Committed events not yet acknowledged by JetStream."
        )
        self.projection_lag = gauge(
            "keyledger_projection_lag_events",
            "Events not yet applied, per projection.",
            ("projection",),
        )
        self.index_keys = gauge(
            "keyledger_verification_index_keys", "Keys in this replica's verification index."
        )
        self.index_lag = gauge(
            "keyledger_verification_index_lag_events",
            "Committed events not yet in this replica's verification index.",
        )
        self.log_truncated = gauge(
            "keyledger_log_truncated", "1 while the log lacks events its witnesses saw."
        )
        self.quarantined_keys = gauge(
            "keyledger_quarantined_keys",
            "Keys set aside because an event of theirs could not be applied, per consumer.",
            ("consumer",),
        )
        self.stream_watchers = gauge(
            "keyledger_event_stream_watchers", "Open event streams (GET …/events/stream)."
        )
        self.stream_drops = gauge(
            "keyledger_event_stream_slow_drops",
            "Event streams dropped since start for falling too far behind.",
        )
        self.ready = gauge("keyledger_ready", "1 when /readyz answers 200 (ready or degraded).")
        self.degraded = gauge(
            "keyledger_degraded", "1 when /readyz reports a shared problem (status degraded)."
        )
        build = gauge(
            "keyledger_build_info",
            "1, labelled with how this replica runs its hot paths (compiled or interpreted).",
            ("hot_path",),
        )
        build.labels(hot_path()).set(1)

    async def refresh(self, app: web.Application) -> None:
        """Read the current vitals into the gauges (unknown values are left out)."""
        vitals = await read_vitals(app)
        self.database_up.set(1 if vitals.database_ok else 0)
        self.log_truncated.set(1 if vitals.log_truncated else 0)
        pairs = (
            (self.log_head, vitals.log_head),
            (self.outbox_lag, vitals.outbox_lag),
            (self.nats_connected, vitals.nats_connected),
            (self.index_keys, vitals.index_keys),
            (self.index_lag, vitals.index_lag),
        )
        for metric, value in pairs:
            if value is not None:
                metric.set(int(value))
        for name, lag in vitals.projection_lags().items():
            self.projection_lag.labels(name).set(lag)
        self.quarantined_keys.clear()  # a rebuild may have emptied a consumer's quarantine
        for consumer, count in vitals.quarantine_counts.items():
            self.quarantined_keys.labels(consumer).set(count)
        service = app.get(KEYLEDGER)
        if service is not None:
            self.stream_watchers.set(len(service.fanout))
            self.stream_drops.set(service.fanout.dropped)
        readiness = assess_readiness(vitals, app[SETTINGS].ready_max_lag)
        self.ready.set(0 if readiness.problems else 1)
        self.degraded.set(1 if readiness.degraded else 0)


METRICS = web.AppKey("metrics", AppMetrics)


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    """Prometheus text exposition of this replica's metrics."""
    app_metrics = request.app[METRICS]
    await app_metrics.refresh(request.app)
    body = generate_latest(app_metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def install_metrics(app: web.Application) -> RequestObserver:
    """Give ``app`` its own registry; what observes every request into it (its routes
    are served with ``routes``, this module's)."""
    app_metrics = AppMetrics(app)
    app[METRICS] = app_metrics
    return app_metrics.latency.observe
