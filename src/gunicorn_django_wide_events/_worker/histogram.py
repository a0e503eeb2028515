"""A histogram that records as the SDK's does, without its per-measurement cleaning and hashing.

The SDK's ``Histogram.record`` cleans the attributes into a new dict, hashes them into a
sorted, tagged key and looks up, for each reader and view, the aggregation of that key: about
8 µs a measurement, more than the rest of a quiet request's metrics put together. The
attributes the request path records are few, valid by construction, and come back in a handful
of combinations. So the first measurement of each combination takes the SDK's own path, which
creates the aggregations (views, their attribute filters and aggregations, every reader's
temporality: all as configured), and the ones after it go straight to those aggregations, with
the same measurement, the same exemplar filter and the same locks (about 1.7 µs).

What it reads of the SDK (opentelemetry-sdk 1.45) is private: the instrument's measurement
consumer, its reader storages, their view matches and each match's aggregations by hashed
attributes. ``tests/unit/worker/test_histogram.py`` pins all of it, and compares what this
records with what the SDK's own path records.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from time import time_ns
from typing import Any, Final

from opentelemetry.context import Context, get_current
from opentelemetry.sdk.metrics._internal.measurement import Measurement
from opentelemetry.util.types import AttributeValue

try:
    from opentelemetry.sdk.metrics._internal._view_instrument_match import _hash_attributes

    _SDK_INTERNALS_FOUND = True
except ImportError:  # an SDK whose internals moved: every measurement takes the SDK's path
    _SDK_INTERNALS_FOUND = False

# Combinations of attributes whose aggregations are remembered, at most: a worker's requests
# come in far fewer (methods, routes, statuses); past this, measurements take the SDK's path.
MAX_COMBINATIONS: Final = 2048


@dataclass(frozen=True)
class TrustedMeasurement(Measurement):
    """A ``Measurement`` whose attributes are used as given: they were cleaned once already."""

    def __post_init__(self) -> None:
        return None


class LightHistogram:
    """Records into an SDK ``Histogram``'s aggregations, found once per attribute combination.

    ``record`` takes, besides the attributes, a hashable ``key`` that stands for them (the
    caller's tuple of their values): equal keys must mean equal attributes.
    """

    __slots__ = ("_consumer", "_histogram", "_storages", "_targets")

    def __init__(self, histogram: Any) -> None:
        self._histogram = histogram
        # None where the SDK is not the one pinned (its internals moved): the SDK's path only.
        self._consumer = (
            getattr(histogram, "_measurement_consumer", None) if _SDK_INTERNALS_FOUND else None
        )
        self._storages: object = None
        self._targets: dict[Hashable, tuple[Any, ...]] = {}

    def record(
        self,
        value: float,
        key: Hashable,
        attributes: dict[str, AttributeValue],
        context: Context | None = None,
        at_ns: int | None = None,
    ) -> None:
        """``at_ns``: when it was measured (``time_ns()``), if not now."""
        histogram = self._histogram
        consumer = self._consumer
        if consumer is None:
            histogram.record(value, attributes, context)
            return
        storages = consumer._reader_storages
        if storages is not self._storages:
            # A reader was added or removed: the SDK made new storages, with new aggregations.
            self._targets = {}
            self._storages = storages
        targets = self._targets.get(key)
        if targets is None or not histogram._is_enabled():
            histogram.record(value, attributes, context)
            if targets is None and len(self._targets) < MAX_COMBINATIONS:
                try:
                    found = self._aggregations_of(storages, attributes)
                except (AttributeError, TypeError):  # internals moved: the SDK's path from now
                    self._consumer = None
                    return
                if found is not None:
                    self._targets[key] = found
            return
        if value < 0:  # as the SDK: a negative duration is no measurement
            return
        if context is None:
            context = get_current()
        now = time_ns() if at_ns is None else at_ns
        measurement = TrustedMeasurement(value, now, histogram, context, attributes)
        sample = consumer._sdk_config.exemplar_filter.should_sample(value, now, attributes, context)
        for aggregation in targets:
            aggregation.aggregate(measurement, sample)

    def _aggregations_of(
        self, storages: Any, attributes: dict[str, AttributeValue]
    ) -> tuple[Any, ...] | None:
        """The aggregations the SDK's path made for ``attributes``, one per reader and view;
        None if any is missing (the SDK's path dropped the measurement)."""
        found = []
        for storage in storages.values():
            matches = storage._instrument_view_instrument_matches.get(self._histogram)
            if matches is None:
                return None
            for match in matches:
                keys = match._view._attribute_keys
                kept = (
                    attributes
                    if keys is None
                    else {name: value for name, value in attributes.items() if name in keys}
                )
                aggregation = match._attributes_aggregation.get(_hash_attributes(kept))
                if aggregation is None:
                    return None
                found.append(aggregation)
        return tuple(found)
