"""Database work of the current request, through Django's public ``execute_wrappers`` hook.

The recorder sees statement text and timing only, never parameters. It goes first in each
connection's wrapper list: ``connection.execute_wrapper()`` blocks pop the *last* wrapper when
they exit, so a connection opened inside such a block must not put ours at the end.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from django.db.backends.signals import connection_created

from .event import current_event

if TYPE_CHECKING:
    from django.db.backends.base.base import BaseDatabaseWrapper

_DISPATCH_UID: Final = "gunicorn_django_wide_events.django_db"


class QueryRecorder:
    """Counts and times every query of the current request; marks the one in flight."""

    __slots__ = ()

    def __call__(
        self,
        execute: Callable[..., Any],
        sql: object,
        params: object,
        many: bool,
        context: dict[str, Any],
    ) -> Any:
        event = current_event.get()
        if event is None:
            return execute(sql, params, many, context)
        event.query_started(sql)
        started = time.perf_counter_ns()
        try:
            return execute(sql, params, many, context)
        finally:
            event.record_query(sql, time.perf_counter_ns() - started)


recorder: Final = QueryRecorder()


def _on_connection_created(sender: object, connection: BaseDatabaseWrapper, **kwargs: Any) -> None:
    # connection_created fires on every (re)connect of the same wrapper object.
    if recorder not in connection.execute_wrappers:
        connection.execute_wrappers.insert(0, recorder)


def instrument_db() -> None:
    connection_created.connect(_on_connection_created, dispatch_uid=_DISPATCH_UID)


def uninstrument_db() -> None:
    connection_created.disconnect(dispatch_uid=_DISPATCH_UID)
