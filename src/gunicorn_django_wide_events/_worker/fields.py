"""add_fields(): put your own fields on the current request's wide event."""

from __future__ import annotations

from collections.abc import Mapping

from opentelemetry.attributes import BoundedAttributes
from opentelemetry.util.types import AttributeValue

from .event import current_event


def add_fields(fields: Mapping[str, AttributeValue]) -> bool:
    """Add ``fields`` to the wide event of the request being served.

    The same as ``trace.get_current_span().set_attributes(fields)`` inside a request, except
    that the fields are sent with the event's own attributes in one batch, and that calling it
    outside a request is a no-op that returns False instead of writing to nothing.

    Returns:
        True if a request's event took the fields.
    """
    event = current_event.get()
    if event is None:
        return False
    # The event's own attributes skip the SDK's checks (span.py); the app's values don't.
    event.attributes.update(BoundedAttributes(None, fields))
    return True
