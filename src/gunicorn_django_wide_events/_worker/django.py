"""Django-level facts for the current request's event: route, view, user, unhandled exception.

Django is hooked without touching the user's settings or middleware list: the route and view are
taken where Django resolves the URL (``BaseHandler.resolve_request``), so they are known while the
view still runs (a timeout event needs them), and exceptions arrive through Django's own
``got_request_exception`` signal, sent while the exception is being handled. Django answers a
``SuspiciousOperation`` (a disallowed ``Host``, too many fields, ...) with a 400 and sends no
signal: ``response_for_exception``, where it does, names it.

Where the URL resolves is also where the path's secrets become known: the values captured by
route parameters with secret-looking names (``reset/<uidb64>/<token>/``) are redacted on the
event from then on.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from typing import Any, Final

import django.core.handlers.exception
from django.core.exceptions import SuspiciousOperation
from django.core.handlers.base import BaseHandler
from django.core.signals import got_request_exception
from django.http import HttpRequest, HttpResponseBase
from django.urls import ResolverMatch
from opentelemetry.semconv.attributes.error_attributes import ERROR_TYPE

from .. import _attributes as attr
from .._guard import never_raise
from .event import current_event
from .http import SecretNames

_resolve_guard: Final = never_raise("django.resolve_request")
_exception_guard: Final = never_raise("django.got_request_exception")
_user_guard: Final = never_raise("django.user")
_rejection_guard: Final = never_raise("django.response_for_exception")

_original_resolve_request: Callable[[BaseHandler, HttpRequest], ResolverMatch] | None = None
_original_get_response: Callable[[BaseHandler, HttpRequest], HttpResponseBase] | None = None
_original_get_response_async: (
    Callable[[BaseHandler, HttpRequest], Awaitable[HttpResponseBase]] | None
) = None
_original_response_for_exception: Callable[[HttpRequest, Exception], HttpResponseBase] | None = None
_secret_names: SecretNames | None = None
# Route parameter name -> whether it looks secret: parameter names are few (the URLconf's).
_is_secret_parameter: dict[str, bool] = {}


def view_path(match: ResolverMatch, method: str | None = None) -> str:
    """Dotted path of the view callable, as Django's own debug pages name it; for a REST
    framework viewset, with the action ``method`` maps to (``BookViewSet.list``)."""
    func = match.func
    func_path = getattr(match, "_func_path", None)
    if not isinstance(func_path, str):
        func_path = f"{func.__module__}.{getattr(func, '__qualname__', type(func).__qualname__)}"
    actions = getattr(func, "actions", None)  # set by ViewSetMixin.as_view
    if actions and method:
        # As the viewset itself does: HEAD runs the GET action unless it has its own.
        action = actions.get(method.lower()) or (method == "HEAD" and actions.get("get"))
        if isinstance(action, str):
            return f"{func_path}.{action}"
    return func_path


def secret_values(match: ResolverMatch) -> tuple[str, ...]:
    """What the URL captured for route parameters with secret-looking names."""
    captured = getattr(match, "captured_kwargs", None)  # Django 4.1+: without extra kwargs
    if captured is None:
        captured = match.kwargs
    secrets = []
    for name, value in captured.items():
        is_secret = _is_secret_parameter.get(name)
        if is_secret is None:
            is_secret = _is_secret_parameter[name] = _secret_names is not None and _secret_names(
                name
            )
        if is_secret and value is not None and (text := str(value)):
            secrets.append(text)
    return tuple(secrets)


def _resolve_request(self: BaseHandler, request: HttpRequest) -> ResolverMatch:
    assert _original_resolve_request is not None
    match = _original_resolve_request(self, request)
    event = current_event.get()
    if event is not None:
        try:  # not `with _resolve_guard`: this runs on every request, and try costs nothing
            view = view_path(match, request.method)
            event.attributes[attr.DJANGO_VIEW] = view
            event.set_route(match.route, view)
            if match.view_name:
                event.attributes[attr.DJANGO_URL_NAME] = match.view_name
            if match.kwargs and (secrets := secret_values(match)):
                event.redact_path_secrets(secrets)
        except Exception:
            _resolve_guard.report()
    return match


def _response_for_exception(request: HttpRequest, exc: Exception) -> HttpResponseBase:
    """Django answers a ``SuspiciousOperation`` with a 400 of its own and no signal: the event
    names it by class, as Django's security loggers do (``django.security.DisallowedHost``)."""
    assert _original_response_for_exception is not None
    if isinstance(exc, SuspiciousOperation):
        event = current_event.get()
        if event is not None:
            with _rejection_guard:
                event.attributes.setdefault(ERROR_TYPE, type(exc).__name__)
    return _original_response_for_exception(request, exc)


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


async def _get_response_async_with_user(
    self: BaseHandler, request: HttpRequest
) -> HttpResponseBase:
    """The same under ASGI, where a lazy user must be awaited (``request.auser()``, Django 5+)."""
    assert _original_get_response_async is not None
    response = await _original_get_response_async(self, request)
    event = current_event.get()
    if event is not None:
        try:
            auser = getattr(request, "auser", None)
            user = await auser() if auser is not None else getattr(request, "user", None)
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


def instrument_django(capture_user_id: bool, secret_names: SecretNames) -> None:
    global _original_resolve_request, _original_get_response  # noqa: PLW0603
    global _original_response_for_exception, _secret_names  # noqa: PLW0603
    global _original_get_response_async  # noqa: PLW0603
    _secret_names = secret_names
    _is_secret_parameter.clear()
    if _original_resolve_request is None:
        _original_resolve_request = BaseHandler.resolve_request
        BaseHandler.resolve_request = _resolve_request
    if _original_response_for_exception is None:
        # convert_exception_to_response looks the function up in its module on every call.
        handlers = django.core.handlers.exception
        _original_response_for_exception = handlers.response_for_exception
        handlers.response_for_exception = _response_for_exception
    if capture_user_id and _original_get_response is None:
        _original_get_response = BaseHandler.get_response
        BaseHandler.get_response = _get_response_with_user
        _original_get_response_async = BaseHandler.get_response_async
        BaseHandler.get_response_async = _get_response_async_with_user
    got_request_exception.connect(
        _on_got_request_exception, dispatch_uid="gunicorn_django_wide_events"
    )


def uninstrument_django() -> None:
    global _original_resolve_request, _original_get_response  # noqa: PLW0603
    global _original_response_for_exception, _original_get_response_async  # noqa: PLW0603
    if _original_resolve_request is not None:
        BaseHandler.resolve_request = _original_resolve_request
        _original_resolve_request = None
    if _original_response_for_exception is not None:
        django.core.handlers.exception.response_for_exception = _original_response_for_exception
        _original_response_for_exception = None
    if _original_get_response is not None:
        BaseHandler.get_response = _original_get_response
        _original_get_response = None
    if _original_get_response_async is not None:
        BaseHandler.get_response_async = _original_get_response_async
        _original_get_response_async = None
    got_request_exception.disconnect(dispatch_uid="gunicorn_django_wide_events")
