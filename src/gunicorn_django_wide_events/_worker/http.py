"""HTTP attributes of the wide event, read from the WSGI environ and the response headers.

Everything that depends on configuration (which headers to capture, which query keys are
secret, which URLs are excluded) is compiled once into an ``HttpAttributes`` object; the request
path only runs the prepared functions. Values come from the client and are untrusted: secrets are
redacted, nothing here raises on odd input, and absent or malformed fields are simply left out.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping
from typing import Any, Final, TypeGuard
from urllib.parse import unquote, unquote_plus

from opentelemetry.semconv.attributes.client_attributes import CLIENT_ADDRESS, CLIENT_PORT
from opentelemetry.semconv.attributes.http_attributes import (
    HTTP_REQUEST_METHOD,
    HTTP_REQUEST_METHOD_ORIGINAL,
)
from opentelemetry.semconv.attributes.network_attributes import NETWORK_PROTOCOL_VERSION
from opentelemetry.semconv.attributes.server_attributes import SERVER_ADDRESS, SERVER_PORT
from opentelemetry.semconv.attributes.url_attributes import URL_PATH, URL_QUERY, URL_SCHEME
from opentelemetry.semconv.attributes.user_agent_attributes import USER_AGENT_ORIGINAL
from opentelemetry.util.types import AttributeValue

from .. import _attributes as attr
from .._config import Config

REDACTED: Final = "REDACTED"

# Header values that never leave the process, whatever the capture settings say.
ALWAYS_SANITIZED_HEADERS: Final = ("authorization", "proxy-authorization", "cookie", "set-cookie")

# The two request headers WSGI puts in the environ without the HTTP_ prefix (PEP 3333).
UNPREFIXED_HEADERS: Final = {"CONTENT_TYPE": "content-type", "CONTENT_LENGTH": "content-length"}

KNOWN_METHODS: Final = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "QUERY"}
)

# Client-controlled strings are cut to this length: an event is not a place for megabytes.
MAX_VALUE_LENGTH: Final = 2048

# X-Request-Start values further from now than this are clock trouble, not queueing.
_MAX_QUEUE_TIME_S: Final = 3600.0

Attributes = dict[str, AttributeValue]
Environ = Mapping[str, Any]


def is_ascii_number(text: str | None) -> TypeGuard[str]:
    """``str.isdigit`` also says yes to "²", which ``int()`` refuses."""
    return bool(text) and text.isascii() and text.isdigit()  # type: ignore[union-attr]


def method_attributes(raw_method: str, attributes: Attributes) -> str:
    """Set ``http.request.method`` the way the conventions say; return the span-name method."""
    if raw_method in KNOWN_METHODS:
        attributes[HTTP_REQUEST_METHOD] = raw_method
        return raw_method
    attributes[HTTP_REQUEST_METHOD] = "_OTHER"
    if raw_method:
        attributes[HTTP_REQUEST_METHOD_ORIGINAL] = raw_method[:64]
    return "HTTP"


def queue_time_ms(raw: str, now_s: float) -> float | None:
    """Milliseconds since a proxy's ``X-Request-Start`` stamp (``t=`` seconds, ms or µs)."""
    value = raw.strip().removeprefix("t=")
    try:
        stamp = float(value)
    except ValueError:
        return None
    # Proxies stamp seconds (nginx: 1700000000.123), milliseconds or microseconds (Heroku, New
    # Relic's agents): the magnitude tells them apart for any date between 2001 and 2286.
    for scale in (1.0, 1e3, 1e6):
        seconds = stamp / scale
        if seconds < 1e10:
            break
    waited = now_s - seconds
    if not -1.0 <= waited <= _MAX_QUEUE_TIME_S:
        return None
    return max(waited, 0.0) * 1e3


def _header_matcher(patterns: Iterable[str]) -> re.Pattern[str] | None:
    patterns = tuple(patterns)
    if not patterns:
        return None
    return re.compile("|".join(f"(?:{pattern})" for pattern in patterns), re.IGNORECASE)


class SecretNames:
    """The one rule for what is secret: a name (query key, header, route parameter) containing
    one of the configured fragments, case-insensitively, has its value ``REDACTED``."""

    __slots__ = ("search",)

    def __init__(self, fragments: Iterable[str]) -> None:
        alternatives = "|".join(re.escape(fragment) for fragment in fragments)
        self.search = re.compile(alternatives, re.IGNORECASE).search

    def __call__(self, name: str) -> bool:
        return self.search(name) is not None


class QueryRedactor:
    """Replace the values of secret-looking query keys with ``REDACTED``, keeping the rest."""

    __slots__ = ("_secret_key",)

    def __init__(self, secret_names: SecretNames) -> None:
        self._secret_key = secret_names.search

    def __call__(self, query: str) -> str:
        search = self._secret_key
        if not search(unquote_plus(query)):
            return query
        parts = []
        for part in query.split("&"):
            key, sep, _value = part.partition("=")
            parts.append(f"{key}={REDACTED}" if sep and search(unquote_plus(key)) else part)
        return "&".join(parts)


class HttpAttributes:
    """Compiled once per process from ``Config``; turns environs and headers into attributes."""

    __slots__ = (
        "_capture_request",
        "_capture_response",
        "_excluded",
        "_redact_query",
        "_sanitize",
        "_secret_header",
        "secret_names",
    )

    def __init__(self, config: Config) -> None:
        self.secret_names = SecretNames(config.redact_query_keys)
        self._redact_query = QueryRedactor(self.secret_names)
        self._capture_request = _header_matcher(config.capture_request_headers)
        self._capture_response = _header_matcher(config.capture_response_headers)
        sanitized = (*ALWAYS_SANITIZED_HEADERS, *config.sanitize_header_fields)
        self._sanitize = _header_matcher(sanitized)
        # Headers follow the query keys' rule: X-CSRFToken is as secret as ?csrftoken=.
        self._secret_header = self.secret_names.search
        self._excluded = _header_matcher(config.excluded_urls)

    def is_excluded(self, environ: Environ) -> bool:
        """True for URLs the user excluded with ``OTEL_PYTHON_(DJANGO_)EXCLUDED_URLS``."""
        excluded = self._excluded
        if excluded is None:
            return False
        return excluded.search(environ.get("RAW_URI") or environ.get("PATH_INFO", "")) is not None

    def request_attributes(self, environ: Environ) -> tuple[str, Attributes]:
        """The span-name method and the attributes known when the request starts."""
        attributes: Attributes = {}
        method = method_attributes(environ.get("REQUEST_METHOD", ""), attributes)
        target = self._split_target(environ)
        if target is not None:
            path, query = target
            attributes[URL_PATH] = path[:MAX_VALUE_LENGTH]
            if query:
                attributes[URL_QUERY] = self._redact_query(query)[:MAX_VALUE_LENGTH]
            attributes[URL_SCHEME] = environ.get("wsgi.url_scheme", "http")
        self._add_peers(environ, attributes)
        protocol = environ.get("SERVER_PROTOCOL", "")
        if protocol.startswith("HTTP/"):
            attributes[NETWORK_PROTOCOL_VERSION] = protocol[5:]
        user_agent = environ.get("HTTP_USER_AGENT")
        if user_agent:
            attributes[USER_AGENT_ORIGINAL] = user_agent[:MAX_VALUE_LENGTH]
        length = environ.get("CONTENT_LENGTH")
        if is_ascii_number(length):
            attributes[attr.HTTP_REQUEST_BODY_SIZE] = int(length)
        request_start = environ.get("HTTP_X_REQUEST_START")
        if request_start:
            waited = queue_time_ms(request_start, time.time())
            if waited is not None:
                attributes[attr.WIDE_EVENT_QUEUE_TIME_MS] = waited
        if self._capture_request is not None:
            self._capture_request_headers(environ, attributes)
        return method, attributes

    def response_header_attributes(
        self, headers: Iterable[tuple[str, str]], attributes: Attributes
    ) -> None:
        capture = self._capture_response
        if capture is None:
            return
        captured: dict[str, list[str]] = {}
        for name, value in headers:
            lowered = name.lower()
            if capture.fullmatch(lowered):
                captured.setdefault(lowered, []).append(self._sanitized(lowered, value))
        for name, values in captured.items():
            attributes[f"http.response.header.{name}"] = values

    def _split_target(self, environ: Environ) -> tuple[str, str] | None:
        """Path and query as the client sent them (still percent-encoded), if it got that far."""
        target = environ.get("RAW_URI")
        if not target:
            if "PATH_INFO" not in environ:
                return None
            return environ["PATH_INFO"] or "/", environ.get("QUERY_STRING", "")
        target = target.partition("#")[0]
        if not target.startswith("/"):
            # absolute-form ("http://host/path?q"): drop scheme and authority.
            scheme_end = target.find("://")
            authority_start = scheme_end + 3 if scheme_end >= 0 else 0
            path_start = min(
                (
                    i
                    for i in (target.find("/", authority_start), target.find("?", authority_start))
                    if i >= 0
                ),
                default=len(target),
            )
            target = target[path_start:]
        path, _, query = target.partition("?")
        return path or "/", query

    @staticmethod
    def _add_peers(environ: Environ, attributes: Attributes) -> None:
        remote_addr = environ.get("REMOTE_ADDR")
        if remote_addr:
            attributes[CLIENT_ADDRESS] = remote_addr
            remote_port = environ.get("REMOTE_PORT", "")
            if is_ascii_number(remote_port):
                attributes[CLIENT_PORT] = int(remote_port)
        host = environ.get("HTTP_HOST", "")
        if host:
            name, port = split_host(host)
        else:
            name, port = environ.get("SERVER_NAME", ""), environ.get("SERVER_PORT", "")
        if name:
            attributes[SERVER_ADDRESS] = name[:255]
        if is_ascii_number(port):
            attributes[SERVER_PORT] = int(port)

    def _capture_request_headers(self, environ: Environ, attributes: Attributes) -> None:
        capture = self._capture_request
        assert capture is not None
        for key, value in environ.items():
            if key.startswith("HTTP_"):
                name = key[5:].lower().replace("_", "-")
            elif key in UNPREFIXED_HEADERS:
                name = UNPREFIXED_HEADERS[key]
            else:
                continue
            if capture.fullmatch(name):
                attributes[f"http.request.header.{name}"] = [self._sanitized(name, value)]

    def _sanitized(self, name: str, value: str) -> str:
        sanitize = self._sanitize
        if (sanitize is not None and sanitize.fullmatch(name)) or self._secret_header(name):
            return REDACTED
        return value[:MAX_VALUE_LENGTH]


def split_host(host: str) -> tuple[str, str]:
    """``Host`` header into name and port, tolerating garbage and IPv6 literals."""
    if host.startswith("["):
        name, _, rest = host[1:].partition("]")
        return name, rest.removeprefix(":")
    name, _, port = host.rpartition(":")
    if not name or not is_ascii_number(port):
        return host, ""
    return name, port


def redact_path(path: str, secrets: Iterable[str]) -> str:
    """``path`` as sent (percent-encoded), each segment holding one of ``secrets`` ``REDACTED``.

    ``secrets`` are the values Django captured for route parameters with secret-looking names,
    decoded; a value matches the whole segments it spans (``<path:key>`` spans several), else a
    segment that contains it (``<key>.json``). One that matches nowhere (a converter that
    rewrites its value) leaves no way to tell which part is secret: the whole path goes.
    """
    segments = path.split("/")
    decoded = [unquote(segment, errors="replace") for segment in segments]
    for secret in secrets:
        parts = secret.split("/")
        width = len(parts)
        starts = [i for i in range(len(decoded) - width + 1) if decoded[i : i + width] == parts]
        if starts:
            for start in starts:
                segments[start : start + width] = [REDACTED] * width
            continue
        containing = [i for i, text in enumerate(decoded) if secret in text]
        if not containing:
            return REDACTED
        for i in containing:
            segments[i] = REDACTED
    return "/".join(segments)
