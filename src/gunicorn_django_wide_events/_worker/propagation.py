"""The caller's context (``traceparent``, ``baggage``) from a WSGI environ.

``propagate.extract`` runs every configured propagator, each asking the environ for its
header, on every request. Most requests carry none of them. For the default propagators
(``tracecontext,baggage``, trace context first) the result without their headers is known
without asking: an empty ``Context``, the one ``TraceContextTextMapPropagator`` starts from.
Any other propagator setup, and any request that has one of the headers, takes the full path.
"""

from __future__ import annotations

from typing import Final

from opentelemetry import propagate
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.context import Context
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.propagators.textmap import Getter, TextMapPropagator
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from .http import Environ

MAX_PROPAGATION_KEYS: Final = 64

# The environ key each default propagator reads first; without it, it returns what it was given.
_DEFAULT_PROPAGATOR_KEYS: Final[dict[type, str]] = {
    TraceContextTextMapPropagator: "HTTP_TRACEPARENT",
    W3CBaggagePropagator: "HTTP_BAGGAGE",
}
_NO_CALLER: Final = Context()


class EnvironGetter(Getter[Environ]):
    """Reads propagation headers (``traceparent``, ``baggage``) from a WSGI environ."""

    def __init__(self) -> None:
        # Propagators ask for the same few headers on every request: spell each key once.
        self._environ_keys: dict[str, str] = {}

    def get(self, carrier: Environ, key: str) -> list[str] | None:
        environ_key = self._environ_keys.get(key)
        if environ_key is None:
            environ_key = "HTTP_" + key.upper().replace("-", "_")
            if len(self._environ_keys) < MAX_PROPAGATION_KEYS:
                self._environ_keys[key] = environ_key
        value = carrier.get(environ_key)
        return None if value is None else [value]

    def keys(self, carrier: Environ) -> list[str]:
        return [key[5:].lower().replace("_", "-") for key in carrier if key.startswith("HTTP_")]


environ_getter: Final = EnvironGetter()


def _keys_that_matter(propagator: TextMapPropagator) -> tuple[str, ...] | None:
    """The environ keys without which ``propagator`` extracts an empty Context, if known."""
    members = propagator._propagators if type(propagator) is CompositePropagator else [propagator]
    if not members or type(members[0]) is not TraceContextTextMapPropagator:
        return None  # the others return the current context when they start the chain
    keys = [_DEFAULT_PROPAGATOR_KEYS.get(type(member)) for member in members]
    return None if None in keys else tuple(key for key in keys if key is not None)


class CallerContext:
    """``propagate.extract(environ)`` for the global propagator, short-cut where it is known."""

    __slots__ = ("_known",)

    def __init__(self) -> None:
        # (propagator, its keys that matter) in one attribute: threads of a gthread worker read
        # and replace it without a lock, and must never pair one propagator with another's keys.
        self._known: tuple[TextMapPropagator | None, tuple[str, ...] | None] = (None, None)

    def __call__(self, environ: Environ) -> Context:
        propagator = propagate.get_global_textmap()
        known = self._known
        if known[0] is not propagator:  # set up, or replaced by the app
            known = (propagator, _keys_that_matter(propagator))
            self._known = known
        keys = known[1]
        if keys is not None:
            for key in keys:
                if key in environ:
                    break
            else:
                return _NO_CALLER
        return propagator.extract(environ, getter=environ_getter)
