"""Django-level facts for the current request's event: route, view, user, unhandled exception.

Django is hooked without touching the user's settings or middleware list: the route and view are
taken where Django resolves the URL (``BaseHandler.resolve_request``), so they are known while the
view still runs (a timeout event needs them), and exceptions arrive through Django's own
``got_request_exception`` signal, sent while the exception is being handled.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, Final

from django.core.handlers.base import BaseHandler
from django.core.signals import got_request_exception
from django.http import HttpRequest, HttpResponseBase
from django.urls import ResolverMatch

from .. import _attributes as attr
from .._guard import never_raise
from .event import current_event

_resolve_guard: Final = never_raise("django.resolve_request")
_exception_guard: Final = never_raise("django.got_request_exception")
_user_guard: Final = never_raise("django.user")

_original_resolve_request: Callable[[BaseHandler, HttpRequest], ResolverMatch] | None = None
_original_get_response: Callable[[BaseHandler, HttpRequest], HttpResponseBase] | None = None


def view_path(match: ResolverMatch) -> str:
    """Dotted path of the view callable, as Django's own debug pages name it."""
    func_path = getattr(match, "_func_path", None)
    if isinstance(func_path, str):
        return func_path
    func = match.func
    return f"{func.__module__}.{getattr(func, '__qualname__', type(func).__qualname__)}"


def _resolve_request(self: BaseHandler, request: HttpRequest) -> ResolverMatch:
    assert _original_resolve_request is not None
    match = _original_resolve_request(self, request)
    event = current_event.get()
    if event is not None:
        try:  # not `with _resolve_guard`: this runs on every request, and try costs nothing
            view = view_path(match)
            event.attributes[attr.DJANGO_VIEW] = view
            event.set_route(match.route, view)
            if match.view_name:
                event.attributes[attr.DJANGO_URL_NAME] = match.view_name
        except Exception:
            _resolve_guard.report()
    return match


def _get_response_with_user(self: BaseHandler, request: HttpRequest) -> HttpResponseBase:
    """Read the user after the middleware ran, while Django may still use the database."""
    assert _original_get_response is not None
    response = _original_get_response(self, request)
    event = current_event.get()
    if event is not None:
        try:
            user = getattr(request, "user", None)
            if user is not None and user.is_authenticated:
                event.attributes[attr.USER_ID] = str(user.pk)
        except Exception:
            _user_guard.report()
    return response


def _on_got_request_exception(sender: object, request: object = None, **kwargs: Any) -> None:
    event = current_event.get()
    if event is None:
        return
    with _exception_guard:
        exc = sys.exc_info()[1]
        if exc is not None:
            event.record_exception(exc)


def instrument_django(capture_user_id: bool) -> None:
    global _original_resolve_request, _original_get_response  # noqa: PLW0603
    if _original_resolve_request is None:
        _original_resolve_request = BaseHandler.resolve_request
        BaseHandler.resolve_request = _resolve_request
    if capture_user_id and _original_get_response is None:
        _original_get_response = BaseHandler.get_response
        BaseHandler.get_response = _get_response_with_user
    got_request_exception.connect(
        _on_got_request_exception, dispatch_uid="gunicorn_django_wide_events"
    )


def uninstrument_django() -> None:
    global _original_resolve_request, _original_get_response  # noqa: PLW0603
    if _original_resolve_request is not None:
        BaseHandler.resolve_request = _original_resolve_request
        _original_resolve_request = None
    if _original_get_response is not None:
        BaseHandler.get_response = _original_get_response
        _original_get_response = None
    got_request_exception.disconnect(dispatch_uid="gunicorn_django_wide_events")
