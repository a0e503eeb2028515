"""rejected.environ_of: a WSGI-like environ from what gunicorn parsed of a rejected request."""

from __future__ import annotations

from typing import Any

import pytest

from gunicorn_django_wide_events._config import Config
from gunicorn_django_wide_events._worker.http import HttpAttributes
from gunicorn_django_wide_events._worker.rejected import environ_of


class FakeRequest:
    """The attributes of gunicorn.http.message.Request that environ_of reads."""

    def __init__(
        self,
        method: str | None = "GET",
        uri: str | None = "/items/?page=2",
        version: object = (1, 1),
        scheme: str | None = "http",
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        self.method = method
        self.uri = uri
        self.version = version
        self.scheme = scheme
        self.headers = headers if headers is not None else []


class Bare:
    """An object with none of the request attributes (a request that failed early)."""


ADDR = ("192.0.2.10", 40000)


def test_no_request_and_no_address_gives_empty_environ() -> None:
    """With req None and no address, the environ is empty."""
    assert environ_of(None, None) == {}


def test_no_request_gives_only_the_peer() -> None:
    """With req None, only REMOTE_ADDR and REMOTE_PORT (as strings) are set."""
    assert environ_of(None, ADDR) == {"REMOTE_ADDR": "192.0.2.10", "REMOTE_PORT": "40000"}


def test_ipv6_peer_tuple() -> None:
    """A four-element IPv6 address tuple gives address and port."""
    environ = environ_of(None, ("2001:db8::1", 8443, 0, 0))
    assert environ == {"REMOTE_ADDR": "2001:db8::1", "REMOTE_PORT": "8443"}


@pytest.mark.parametrize("addr", ["/run/gunicorn.sock", "", None, ("only-one",), b"abstract"])
def test_non_tuple_or_short_address_gives_no_peer(addr: Any) -> None:
    """A unix-socket path, None or a short tuple sets no REMOTE_* keys."""
    assert environ_of(None, addr) == {}


def test_full_request() -> None:
    """Method, target, version, scheme and headers map to their WSGI keys."""
    req = FakeRequest(
        method="POST",
        uri="/upload/?x=1",
        version=(1, 0),
        scheme="https",
        headers=[
            ("HOST", "example.com:8443"),
            ("CONTENT-LENGTH", "42"),
            ("USER-AGENT", "curl/8"),
            ("X-REQUEST-START", "t=1"),
        ],
    )
    assert environ_of(req, ADDR) == {
        "REMOTE_ADDR": "192.0.2.10",
        "REMOTE_PORT": "40000",
        "REQUEST_METHOD": "POST",
        "RAW_URI": "/upload/?x=1",
        "SERVER_PROTOCOL": "HTTP/1.0",
        "wsgi.url_scheme": "https",
        "HTTP_HOST": "example.com:8443",
        "CONTENT_LENGTH": "42",
        "HTTP_USER_AGENT": "curl/8",
        "HTTP_X_REQUEST_START": "t=1",
    }


def test_lower_case_header_names_are_normalised() -> None:
    """Header names are upper-cased with dashes turned into underscores."""
    environ = environ_of(FakeRequest(headers=[("x-custom-id", "v"), ("Content-Length", "3")]), None)
    assert environ["HTTP_X_CUSTOM_ID"] == "v"
    assert environ["CONTENT_LENGTH"] == "3"
    assert "HTTP_CONTENT_LENGTH" not in environ


@pytest.mark.parametrize("version", [None, "1.1", (1,), (1, 1, 0), []])
def test_malformed_version_gives_no_protocol(version: object) -> None:
    """A version that is not a two-element tuple sets no SERVER_PROTOCOL."""
    assert "SERVER_PROTOCOL" not in environ_of(FakeRequest(version=version), None)


def test_missing_values_get_defaults() -> None:
    """None method/uri/scheme/headers give '', '', 'http' and no header keys."""
    req = FakeRequest(method=None, uri=None, version=None, scheme=None)
    req.headers = None  # type: ignore[assignment]
    assert environ_of(req, None) == {
        "REQUEST_METHOD": "",
        "RAW_URI": "",
        "wsgi.url_scheme": "http",
    }


def test_object_without_request_attributes() -> None:
    """An object lacking every request attribute is read with the same defaults."""
    assert environ_of(Bare(), ADDR) == {
        "REMOTE_ADDR": "192.0.2.10",
        "REMOTE_PORT": "40000",
        "REQUEST_METHOD": "",
        "RAW_URI": "",
        "wsgi.url_scheme": "http",
    }


def test_environ_feeds_request_attributes() -> None:
    """The environ gives the rejected request's event the usual HTTP attributes."""
    req = FakeRequest(
        method="GET",
        uri="/search?password=hunter2&q=x",
        headers=[("HOST", "example.com:8000"), ("CONTENT-LENGTH", "0")],
    )
    method, attributes = HttpAttributes(Config()).request_attributes(environ_of(req, ADDR))
    assert method == "GET"
    assert attributes == {
        "http.request.method": "GET",
        "url.path": "/search",
        "url.query": "password=REDACTED&q=x",
        "url.scheme": "http",
        "client.address": "192.0.2.10",
        "client.port": 40000,
        "server.address": "example.com",
        "server.port": 8000,
        "network.protocol.version": "1.1",
        "http.request.body.size": 0,
    }


def test_environ_of_request_without_target_gives_no_url() -> None:
    """A request rejected before its target was read has no url.* attributes."""
    _method, attributes = HttpAttributes(Config()).request_attributes(
        environ_of(FakeRequest(method="", uri=None, version=None), ADDR)
    )
    assert attributes == {
        "http.request.method": "_OTHER",
        "client.address": "192.0.2.10",
        "client.port": 40000,
    }
