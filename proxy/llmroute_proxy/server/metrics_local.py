"""The locally aggregated metrics and the Prometheus collector that renders them.

Why metrics are aggregated here rather than in the OpenTelemetry SDK, and what `/metrics`
must look like, is explained in `llmroute_proxy.server.telemetry`: a request adds to plain
dicts keyed by a tuple of attribute values, and everything is read at collection time.
"""

from __future__ import annotations

import functools
import json
import re
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING

from opentelemetry.sdk.resources import Resource
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
)
from prometheus_client.metrics_core import Metric

from llmroute_proxy import __version__

if TYPE_CHECKING:
    from opentelemetry.metrics import Histogram as SdkHistogram

CARDINALITY_LIMIT = 2000
"""Series per metric before new attribute sets fold into one overflow series (the SDK's default)."""

SCOPE_NAME = "llmroute"

Key = tuple[str | int, ...]
"""Attribute values in the order of a metric's attribute names; "" means the attribute is absent."""
Attributes = dict[str, str | int | bool]
Point = tuple[Attributes, float]


# --- local aggregation ---------------------------------------------------------------

_OVERFLOW: Key = ("\x00overflow",)
_OVERFLOW_ATTRIBUTES: Attributes = {"otel.metric.overflow": True}


class _Metric:
    """What a metric is called and how its key's values map to attribute names."""

    __slots__ = ("description", "name", "names", "unit")

    def __init__(self, name: str, unit: str, description: str, names: tuple[str, ...] = ()) -> None:
        self.name, self.unit, self.description, self.names = name, unit, description, names

    def attributes(self, key: Key) -> Attributes:
        if key is _OVERFLOW:
            return dict(_OVERFLOW_ATTRIBUTES)
        return {name: value for name, value in zip(self.names, key, strict=True) if value != ""}


class Tally(_Metric):
    """A monotonic sum per attribute set: a dict update on the request path (~0.3 µs)."""

    __slots__ = ("_values",)

    def __init__(self, name: str, unit: str, description: str, names: tuple[str, ...]) -> None:
        super().__init__(name, unit, description, names)
        self._values: dict[Key, float] = {}

    def add(self, amount: float, *key: str | int) -> None:
        try:
            self._values[key] += amount
        except KeyError:
            values = self._values
            if len(values) >= CARDINALITY_LIMIT:
                key = _OVERFLOW
            values[key] = values.get(key, 0.0) + amount

    def points(self) -> list[Point]:
        """A snapshot; safe while the event loop adds (the OTLP reader calls it from its thread)."""
        return [(self.attributes(key), value) for key, value in list(self._values.items())]


class _Buckets:
    __slots__ = ("counts", "total")

    def __init__(self, size: int) -> None:
        self.counts = [0] * size
        self.total = 0.0


class Histogram(_Metric):
    """Explicit-bucket counts, sum and count per attribute set (~0.5 µs a record).

    Bucket i counts the values in (boundaries[i-1], boundaries[i]], as OpenTelemetry and
    Prometheus (`le`) define them. `sdk` is the OTLP twin, recorded too when OTLP is on.
    """

    __slots__ = ("_series", "boundaries", "sdk")

    def __init__(self, name: str, unit: str, description: str, names: tuple[str, ...],
                 boundaries: Sequence[float]) -> None:
        super().__init__(name, unit, description, names)
        self.boundaries = tuple(boundaries)
        self.sdk: SdkHistogram | None = None
        self._series: dict[Key, _Buckets] = {}

    def record(self, value: float, key: Key) -> None:
        series = self._series.get(key) or self._open(key)
        series.counts[bisect_left(self.boundaries, value)] += 1
        series.total += value
        if self.sdk is not None:
            self.sdk.record(value, self.attributes(key))

    def _open(self, key: Key) -> _Buckets:
        series = self._series
        if len(series) >= CARDINALITY_LIMIT:
            key = _OVERFLOW
        return series.get(key) or series.setdefault(key, _Buckets(len(self.boundaries) + 1))

    def series(self) -> list[tuple[Attributes, list[int], float]]:
        return [(self.attributes(key), list(b.counts), b.total) for key, b in list(self._series.items())]


class Gauge(_Metric):
    """A value read at collection time. `up_down`: an up-down counter in OTLP, a gauge everywhere."""

    __slots__ = ("points", "up_down")

    def __init__(self, name: str, unit: str, description: str, points: Callable[[], Iterable[Point]],
                 up_down: bool = False) -> None:
        super().__init__(name, unit, description)
        self.points, self.up_down = points, up_down


# --- Prometheus exposition -----------------------------------------------------------

_UNIT_ANNOTATION = re.compile(r"\{.*\}")
_PROMETHEUS_UNITS = {"": "", "s": "seconds"}
_NOT_IN_NAME = re.compile(r"[^a-zA-Z0-9:]+")
_NOT_IN_LABEL = re.compile(r"[^a-zA-Z0-9]+")


def _prometheus_name(metric: _Metric) -> tuple[str, str]:
    """(name, unit) as the OpenTelemetry exporter maps them; prometheus_client appends the unit."""
    return _NOT_IN_NAME.sub("_", metric.name), _PROMETHEUS_UNITS[_UNIT_ANNOTATION.sub("", metric.unit)]


@functools.cache
def _label(attribute: str) -> str:
    return _NOT_IN_LABEL.sub("_", attribute)


def _label_value(value: object) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


class PrometheusCollector:
    """A prometheus_client collector rendering the aggregates as the OpenTelemetry exporter did.

    Metrics without a point are left out; label names are the union over a metric's points,
    sorted, with "" where a point lacks one, plus the instrumentation-scope labels.
    """

    def __init__(self, histograms: Sequence[Histogram], tallies: Sequence[Tally], gauges: Sequence[Gauge],
                 resource: Resource) -> None:
        self._histograms, self._tallies, self._gauges = histograms, tallies, gauges
        self._scope = {"otel_scope_name": SCOPE_NAME, "otel_scope_schema_url": "", "otel_scope_version": __version__}
        labels = {_label(key): _label_value(value) for key, value in resource.attributes.items()}
        self._target_info = InfoMetricFamily("target", "Target metadata", labels=list(labels))
        self._target_info.add_metric(list(labels), labels)

    def collect(self) -> Iterator[Metric]:
        yield self._target_info
        for histogram in self._histograms:
            if series := histogram.series():
                yield self._histogram(histogram, series)
        for tally in self._tallies:
            if points := tally.points():
                yield self._family(CounterMetricFamily, tally, points)
        for gauge in self._gauges:
            if points := list(gauge.points()):
                yield self._family(GaugeMetricFamily, gauge, points)

    def _rows(self, points: Iterable[Attributes]) -> tuple[list[str], list[list[str]]]:
        rows = [{**self._scope, **{_label(k): _label_value(v) for k, v in attributes.items()}}
                for attributes in points]
        names = sorted(set().union(*rows))
        return names, [[row.get(name, "") for name in names] for row in rows]

    def _family(self, kind: type[CounterMetricFamily | GaugeMetricFamily], metric: _Metric,
                points: list[Point]) -> Metric:
        name, unit = _prometheus_name(metric)
        names, rows = self._rows(attributes for attributes, _ in points)
        family = kind(name, metric.description, labels=names, unit=unit)
        for row, (_, value) in zip(rows, points, strict=True):
            family.add_metric(row, value)
        return family

    def _histogram(self, histogram: Histogram, series: list[tuple[Attributes, list[int], float]]) -> Metric:
        name, unit = _prometheus_name(histogram)
        names, rows = self._rows(attributes for attributes, _, _ in series)
        family = HistogramMetricFamily(name, histogram.description, labels=names, unit=unit)
        bounds = [f"{b}" for b in histogram.boundaries] + ["+Inf"]
        for row, (_, counts, total) in zip(rows, series, strict=True):
            cumulative, buckets = 0, []
            for bound, count in zip(bounds, counts, strict=True):
                cumulative += count
                buckets.append((bound, float(cumulative)))
            family.add_metric(row, buckets, total)
        return family
