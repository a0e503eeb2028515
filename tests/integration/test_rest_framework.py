"""A real Django REST framework API: the event names the viewset's action, not just the class.

``djangoapp.api`` registers a ``ViewSet`` on a ``DefaultRouter``, with a custom ``@action``.
"""

from __future__ import annotations

import json

import pytest

from tests.integration.conftest import GunicornServer, StartGunicorn
from tests.integration.events import send, the_event
from tests.integration.otlp_receiver import OtlpReceiver


@pytest.fixture(scope="module", params=["sync", "gthread"])
def server(request: pytest.FixtureRequest, module_gunicorn_server: StartGunicorn) -> GunicornServer:
    threads = 4 if request.param == "gthread" else 1
    return module_gunicorn_server(worker_class=request.param, threads=threads)


@pytest.mark.parametrize(
    ("method", "path", "action"),
    [
        ("GET", "/api/books/", "list"),
        ("HEAD", "/api/books/", "list"),
        ("POST", "/api/books/", "create"),
        ("GET", "/api/books/1/", "retrieve"),
        ("POST", "/api/books/1/publish/", "publish"),
    ],
)
def test_django_view_names_the_viewset_action(
    server: GunicornServer, receiver: OtlpReceiver, method: str, path: str, action: str
) -> None:
    """django.view is the viewset's dotted path plus the action the router mapped the method to."""
    body = json.dumps({"title": "Ulysses"}).encode() if method == "POST" else None
    headers = {"Content-Type": "application/json"} if body else None
    exchange = send(server, path, method=method, body=body, headers=headers)
    event = the_event(server, receiver, exchange)

    assert 200 <= exchange.status < 300
    assert event.attributes["django.view"] == f"djangoapp.api.BookViewSet.{action}"
    assert event.attributes["http.request.method"] == method


def test_a_method_the_viewset_does_not_map_keeps_the_class(
    server: GunicornServer, receiver: OtlpReceiver
) -> None:
    """DELETE on the list route is no action of the viewset: 405, and the class alone."""
    exchange = send(server, "/api/books/", method="DELETE")
    event = the_event(server, receiver, exchange)

    assert exchange.status == 405
    assert event.attributes["django.view"] == "djangoapp.api.BookViewSet"


def test_the_router_root_view_is_a_plain_view(
    server: GunicornServer, receiver: OtlpReceiver
) -> None:
    event = the_event(server, receiver, send(server, "/api/"))

    assert event.attributes["django.view"] == "rest_framework.routers.APIRootView"
