"""A local SDK meter provider for the worker's metric tests, never set as the global one.

Its reader collects on demand; ``points`` flattens what it collected into (attributes, point)
pairs of one metric. The ``metering`` fixture is in this package's conftest.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricsData


@dataclass
class Metering:
    provider: MeterProvider
    reader: InMemoryMetricReader

    def points(self, name: str, data: MetricsData | None = None) -> list[Any]:
        """The data points of metric ``name`` in ``data`` (collected now when not given)."""
        data = data if data is not None else self.reader.get_metrics_data()
        found: list[Any] = []
        for resource_metrics in data.resource_metrics if data else ():
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    if metric.name == name:
                        found.extend(metric.data.data_points)
        return found

    def by_attributes(self, name: str) -> dict[frozenset[tuple[str, Any]], Any]:
        return {frozenset(point.attributes.items()): point for point in self.points(name)}
