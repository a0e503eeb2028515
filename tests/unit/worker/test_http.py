"""HttpAttributes: the wide event's HTTP attributes from gunicorn-like WSGI environs."""

from __future__ import annotations

import types
from typing import Any

import pytest

from gunicorn_django_wide_events._config import Config
from gunicorn_django_wide_events._worker import http as http_request
from gunicorn_django_wide_events._worker.http import (
    KNOWN_METHODS,
    MAX_VALUE_LENGTH,
    REDACTED,
    HttpAttributes,
    queue_time_ms,
    split_host,
)

NOW_S = 1_700_000_000.0

PATH = "url.path"
QUERY = "url.query"
METHOD = "http.request.method"
METHOD_ORIGINAL = "http.request.method_original"
SERVER_ADDRESS = "server.address"
SERVER_PORT = "server.port"
CLIENT_ADDRESS = "client.address"
CLIENT_PORT = "client.port"
BODY_SIZE = "http.request.body.size"
QUEUE_TIME = "wide_event.queue_time_ms"
USER_AGENT = "user_agent.original"


def gunicorn_environ(**overrides: Any) -> dict[str, Any]:
    """An environ shaped like the one gunicorn's sync worker builds; None removes a key."""
    environ: dict[str, Any] = {
        "REQUEST_METHOD": "GET",
        "RAW_URI": "/items/7/?page=2",
        "PATH_INFO": "/items/7/",
        "QUERY_STRING": "page=2",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "wsgi.url_scheme": "http",
        "REMOTE_ADDR": "10.0.0.5",
        "REMOTE_PORT": "51234",
        "HTTP_HOST": "shop.example.com:8000",
        "SERVER_NAME": "0.0.0.0",
        "SERVER_PORT": "8000",
        "SCRIPT_NAME": "",
        "HTTP_USER_AGENT": "curl/8.5.0",
        "HTTP_ACCEPT": "*/*",
    }
    for key, value in overrides.items():
        if value is None:
            environ.pop(key, None)
        else:
            environ[key] = value
    return environ


def attributes_of(environ: dict[str, Any], config: Config | None = None) -> dict[str, Any]:
    """The attributes request_attributes gives for ``environ``."""
    _method, attributes = HttpAttributes(config or Config()).request_attributes(environ)
    return dict(attributes)


@pytest.fixture
def frozen_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make http_request see time.time() == NOW_S."""
    monkeypatch.setattr(http_request, "time", types.SimpleNamespace(time=lambda: NOW_S))


# --- whole request -------------------------------------------------------------------------


def test_typical_get_request_attributes() -> None:
    """A plain GET through gunicorn yields exactly the expected attribute set."""
    method, attributes = HttpAttributes(Config()).request_attributes(gunicorn_environ())
    assert method == "GET"
    assert attributes == {
        METHOD: "GET",
        PATH: "/items/7/",
        QUERY: "page=2",
        "url.scheme": "http",
        CLIENT_ADDRESS: "10.0.0.5",
        CLIENT_PORT: 51234,
        SERVER_ADDRESS: "shop.example.com",
        SERVER_PORT: 8000,
        "network.protocol.version": "1.1",
        USER_AGENT: "curl/8.5.0",
    }


def test_empty_environ_gives_only_the_method() -> None:
    """An empty environ (nothing parsed) does not raise and gives method _OTHER, no url.*."""
    method, attributes = HttpAttributes(Config()).request_attributes({})
    assert method == "HTTP"
    assert attributes == {METHOD: "_OTHER"}


# --- method --------------------------------------------------------------------------------


@pytest.mark.parametrize("method", sorted(KNOWN_METHODS))
def test_known_method_kept(method: str) -> None:
    """A known method is the attribute and span-name method, with no method_original."""
    span_method, attributes = HttpAttributes(Config()).request_attributes(
        gunicorn_environ(REQUEST_METHOD=method)
    )
    assert span_method == method
    assert attributes[METHOD] == method
    assert METHOD_ORIGINAL not in attributes


@pytest.mark.parametrize("method", ["PURGE", "get", "PROPFIND", "G3T"])
def test_unknown_method_becomes_other(method: str) -> None:
    """An unknown (or lower-case) method becomes _OTHER, keeps the original, names span HTTP."""
    span_method, attributes = HttpAttributes(Config()).request_attributes(
        gunicorn_environ(REQUEST_METHOD=method)
    )
    assert span_method == "HTTP"
    assert attributes[METHOD] == "_OTHER"
    assert attributes[METHOD_ORIGINAL] == method


@pytest.mark.parametrize("method", ["", None])
def test_empty_or_missing_method_has_no_original(method: str | None) -> None:
    """An empty or absent method gives _OTHER and no http.request.method_original."""
    span_method, attributes = HttpAttributes(Config()).request_attributes(
        gunicorn_environ(REQUEST_METHOD=method)
    )
    assert span_method == "HTTP"
    assert attributes[METHOD] == "_OTHER"
    assert METHOD_ORIGINAL not in attributes


def test_long_unknown_method_is_truncated() -> None:
    """method_original is cut to 64 characters."""
    attributes = attributes_of(gunicorn_environ(REQUEST_METHOD="X" * 500))
    assert attributes[METHOD_ORIGINAL] == "X" * 64


# --- path and query ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw_uri", "path_info", "expected"),
    [
        ("/caf%C3%A9/", "/caf\u00c3\u00a9/", "/caf%C3%A9/"),
        ("/%ff/", "/\u00ff/", "/%ff/"),
        ("/a%2Fb/", "/a/b/", "/a%2Fb/"),
        ("//double//slash", "//double//slash", "//double//slash"),
    ],
)
def test_path_from_raw_uri_stays_percent_encoded(
    raw_uri: str, path_info: str, expected: str
) -> None:
    """url.path is RAW_URI's path exactly as sent, not the decoded PATH_INFO."""
    attributes = attributes_of(
        gunicorn_environ(RAW_URI=raw_uri, PATH_INFO=path_info, QUERY_STRING="")
    )
    assert attributes[PATH] == expected
    assert QUERY not in attributes


def test_query_from_raw_uri_stays_percent_encoded() -> None:
    """url.query is RAW_URI's query as sent, not QUERY_STRING."""
    attributes = attributes_of(
        gunicorn_environ(RAW_URI="/s?q=caf%C3%A9+au+lait", QUERY_STRING="ignored=1")
    )
    assert attributes[QUERY] == "q=caf%C3%A9+au+lait"


@pytest.mark.parametrize(
    ("raw_uri", "path", "query"),
    [
        ("http://example.com/a/b?x=1", "/a/b", "x=1"),
        ("https://example.com:8443/a/b", "/a/b", None),
        ("http://example.com", "/", None),
        ("http://example.com/", "/", None),
        ("http://user@example.com/p?q=2#f", "/p", "q=2"),
    ],
)
def test_absolute_form_raw_uri_drops_scheme_and_authority(
    raw_uri: str, path: str, query: str | None
) -> None:
    """An absolute-form target keeps only its path and query."""
    attributes = attributes_of(gunicorn_environ(RAW_URI=raw_uri))
    assert attributes[PATH] == path
    assert attributes.get(QUERY) == query


def test_absolute_form_with_empty_path_keeps_query() -> None:
    """An absolute-form target with an empty path still reports its query (as QUERY_STRING)."""
    attributes = attributes_of(
        gunicorn_environ(RAW_URI="http://example.com?x=1", PATH_INFO="", QUERY_STRING="x=1")
    )
    assert attributes[PATH] == "/"
    assert attributes.get(QUERY) == "x=1"


@pytest.mark.parametrize(
    ("raw_uri", "path", "query"),
    [
        ("/a?x=1#frag", "/a", "x=1"),
        ("/a#frag", "/a", None),
        ("/a?#frag", "/a", None),
        ("#frag", "/", None),
    ],
)
def test_fragment_dropped(raw_uri: str, path: str, query: str | None) -> None:
    """A fragment in RAW_URI appears in neither url.path nor url.query."""
    attributes = attributes_of(gunicorn_environ(RAW_URI=raw_uri))
    assert attributes[PATH] == path
    assert attributes.get(QUERY) == query


def test_question_mark_inside_fragment_is_not_a_query() -> None:
    """A '?' after '#' belongs to the fragment, so there is no url.query (as gunicorn parses it)."""
    attributes = attributes_of(gunicorn_environ(RAW_URI="/a#frag?x=1", QUERY_STRING=""))
    assert attributes[PATH] == "/a"
    assert QUERY not in attributes


def test_empty_query_is_left_out() -> None:
    """A target ending in '?' gives no url.query."""
    assert QUERY not in attributes_of(gunicorn_environ(RAW_URI="/a?"))


def test_without_raw_uri_path_info_and_query_string_are_used() -> None:
    """Without RAW_URI, PATH_INFO and QUERY_STRING give path and (redacted) query."""
    attributes = attributes_of(
        gunicorn_environ(RAW_URI=None, PATH_INFO="/x/", QUERY_STRING="token=t&a=1")
    )
    assert attributes[PATH] == "/x/"
    assert attributes[QUERY] == f"token={REDACTED}&a=1"


@pytest.mark.parametrize("raw_uri", [None, ""])
def test_without_raw_uri_or_path_info_no_url_attributes(raw_uri: str | None) -> None:
    """With no RAW_URI and no PATH_INFO (target never parsed) there is no url.* attribute."""
    attributes = attributes_of(
        gunicorn_environ(RAW_URI=raw_uri, PATH_INFO=None, QUERY_STRING="a=1")
    )
    assert not [key for key in attributes if key.startswith("url.")]
    assert attributes[METHOD] == "GET"


def test_empty_path_info_without_raw_uri_is_root() -> None:
    """An empty PATH_INFO without RAW_URI gives url.path '/'."""
    attributes = attributes_of(gunicorn_environ(RAW_URI=None, PATH_INFO="", QUERY_STRING=""))
    assert attributes[PATH] == "/"
    assert QUERY not in attributes


def test_long_path_and_query_truncated() -> None:
    """url.path and url.query are cut to MAX_VALUE_LENGTH characters."""
    path = "/" + "p" * (MAX_VALUE_LENGTH * 2)
    query = "q=" + "v" * (MAX_VALUE_LENGTH * 2)
    attributes = attributes_of(gunicorn_environ(RAW_URI=f"{path}?{query}"))
    assert attributes[PATH] == path[:MAX_VALUE_LENGTH]
    assert attributes[QUERY] == query[:MAX_VALUE_LENGTH]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("password=hunter2", f"password={REDACTED}"),
        ("PASSWORD=hunter2", f"PASSWORD={REDACTED}"),
        ("api_key=abc&page=2", f"api_key={REDACTED}&page=2"),
        ("access_token=t0k3n", f"access_token={REDACTED}"),
        (
            "X-Amz-Date=20240101T000000Z&X-Amz-Signature=deadbeef",
            f"X-Amz-Date=20240101T000000Z&X-Amz-Signature={REDACTED}",
        ),
        ("sessionid=abc", f"sessionid={REDACTED}"),
        ("csrfmiddlewaretoken=abc&next=/", f"csrfmiddlewaretoken={REDACTED}&next=/"),
        ("pass%77ord=x", f"pass%77ord={REDACTED}"),
        ("p%61ssword=x&a=1", f"p%61ssword={REDACTED}&a=1"),
        ("%74oken=x", f"%74oken={REDACTED}"),
        ("api+key=x&q=a+b", f"api+key={REDACTED}&q=a+b"),
        ("token=a=b&x=1", f"token={REDACTED}&x=1"),
        ("token=", f"token={REDACTED}"),
        ("a=1&secret=s&b=2&jwt=j", f"a=1&secret={REDACTED}&b=2&jwt={REDACTED}"),
    ],
)
def test_secret_query_values_redacted(query: str, expected: str) -> None:
    """Values of secret-looking keys (also percent- or plus-encoded) become REDACTED."""
    attributes = attributes_of(gunicorn_environ(RAW_URI=f"/p?{query}"))
    assert attributes[QUERY] == expected


@pytest.mark.parametrize(
    "query",
    [
        "page=2&sort=name&q=hello%20world",
        "q=a+b&lang=en",
        "q=password",
        "next=/login?token",
        "password&page=2",
        "token",
    ],
)
def test_non_secret_query_untouched(query: str) -> None:
    """Non-secret keys, secrets only in values, and keys without '=' stay as sent."""
    attributes = attributes_of(gunicorn_environ(RAW_URI=f"/p?{query}"))
    assert attributes[QUERY] == query


def test_key_without_equals_untouched_next_to_redacted_key() -> None:
    """A bare key stays while a secret key=value next to it is redacted."""
    attributes = attributes_of(gunicorn_environ(RAW_URI="/p?flag&token=x&debug"))
    assert attributes[QUERY] == f"flag&token={REDACTED}&debug"


def test_extra_redact_keys_from_config() -> None:
    """Keys from WIDE_EVENTS_REDACT_QUERY_KEYS are redacted in addition to the defaults."""
    environ = gunicorn_environ(RAW_URI="/p?ssn=123-45&page=1&password=x")
    assert attributes_of(environ)[QUERY] == f"ssn=123-45&page=1&password={REDACTED}"
    config = Config.from_environ({"WIDE_EVENTS_REDACT_QUERY_KEYS": "SSN"})
    assert attributes_of(environ, config)[QUERY] == (f"ssn={REDACTED}&page=1&password={REDACTED}")


# --- scheme, peers, protocol ---------------------------------------------------------------


@pytest.mark.parametrize(("scheme", "expected"), [("https", "https"), (None, "http")])
def test_url_scheme(scheme: str | None, expected: str) -> None:
    """url.scheme is wsgi.url_scheme, http when absent."""
    assert attributes_of(gunicorn_environ(**{"wsgi.url_scheme": scheme}))["url.scheme"] == expected


@pytest.mark.parametrize(
    ("host", "address", "port"),
    [
        ("example.com:8000", "example.com", 8000),
        ("example.com", "example.com", None),
        ("EXAMPLE.com:80", "EXAMPLE.com", 80),
        ("127.0.0.1:9000", "127.0.0.1", 9000),
        ("[::1]:8000", "::1", 8000),
        ("[::1]", "::1", None),
        ("[2001:db8::7]:443", "2001:db8::7", 443),
        ("example.com:abc", "example.com:abc", None),
        ("not a host", "not a host", None),
        ("example.com:", "example.com:", None),
        ("[::1]junk", "::1", None),
    ],
)
def test_server_address_and_port_from_host(host: str, address: str, port: int | None) -> None:
    """server.address/port come from Host, IPv6 literals unbracketed, garbage kept whole."""
    attributes = attributes_of(gunicorn_environ(HTTP_HOST=host))
    assert attributes[SERVER_ADDRESS] == address
    assert attributes.get(SERVER_PORT) == port


@pytest.mark.parametrize("host", ["example.com:\u00b2", "[::1]:\u00b9"])
def test_host_port_of_non_ascii_digits_does_not_raise(host: str) -> None:
    """A Host port of latin-1 'digits' such as '²' (which gunicorn accepts) gives no port."""
    attributes = attributes_of(gunicorn_environ(HTTP_HOST=host))
    assert SERVER_PORT not in attributes
    assert SERVER_ADDRESS in attributes


def test_long_host_truncated_to_255() -> None:
    """server.address is cut to 255 characters."""
    attributes = attributes_of(gunicorn_environ(HTTP_HOST="h" * 1000))
    assert attributes[SERVER_ADDRESS] == "h" * 255


def test_server_name_and_port_used_without_host() -> None:
    """Without a Host header, SERVER_NAME and SERVER_PORT give server.address/port."""
    attributes = attributes_of(
        gunicorn_environ(HTTP_HOST=None, SERVER_NAME="backend", SERVER_PORT="8080")
    )
    assert attributes[SERVER_ADDRESS] == "backend"
    assert attributes[SERVER_PORT] == 8080


def test_no_host_and_no_server_name_gives_no_server_attributes() -> None:
    """Without Host, SERVER_NAME or SERVER_PORT there are no server.* attributes."""
    attributes = attributes_of(gunicorn_environ(HTTP_HOST=None, SERVER_NAME=None, SERVER_PORT=None))
    assert SERVER_ADDRESS not in attributes
    assert SERVER_PORT not in attributes


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("example.com:8000", ("example.com", "8000")),
        ("example.com", ("example.com", "")),
        ("[::1]:8000", ("::1", "8000")),
        ("[::1", ("::1", "")),
        (":8000", (":8000", "")),
        ("", ("", "")),
    ],
)
def test_split_host(host: str, expected: tuple[str, str]) -> None:
    """split_host separates name and port and tolerates malformed input."""
    assert split_host(host) == expected


def test_client_address_and_port() -> None:
    """client.address/port come from REMOTE_ADDR and REMOTE_PORT."""
    attributes = attributes_of(gunicorn_environ(REMOTE_ADDR="2001:db8::1", REMOTE_PORT="443"))
    assert attributes[CLIENT_ADDRESS] == "2001:db8::1"
    assert attributes[CLIENT_PORT] == 443


@pytest.mark.parametrize("port", ["", "abc", None])
def test_client_port_left_out_when_not_a_number(port: str | None) -> None:
    """A missing or non-numeric REMOTE_PORT gives client.address alone."""
    attributes = attributes_of(gunicorn_environ(REMOTE_PORT=port))
    assert attributes[CLIENT_ADDRESS] == "10.0.0.5"
    assert CLIENT_PORT not in attributes


@pytest.mark.parametrize("addr", ["", None])
def test_no_client_attributes_without_remote_addr(addr: str | None) -> None:
    """Without REMOTE_ADDR (unix socket) there is neither client.address nor client.port."""
    attributes = attributes_of(gunicorn_environ(REMOTE_ADDR=addr))
    assert CLIENT_ADDRESS not in attributes
    assert CLIENT_PORT not in attributes


@pytest.mark.parametrize(
    ("protocol", "expected"),
    [("HTTP/1.1", "1.1"), ("HTTP/1.0", "1.0"), ("HTTP/2", "2"), ("", None), ("SPDY/3", None)],
)
def test_network_protocol_version(protocol: str, expected: str | None) -> None:
    """network.protocol.version is SERVER_PROTOCOL after 'HTTP/', absent otherwise."""
    attributes = attributes_of(gunicorn_environ(SERVER_PROTOCOL=protocol))
    assert attributes.get("network.protocol.version") == expected


# --- body size, user agent -----------------------------------------------------------------


@pytest.mark.parametrize(("length", "expected"), [("0", 0), ("123", 123), ("1048576", 1048576)])
def test_body_size_from_digit_content_length(length: str, expected: int) -> None:
    """A digit CONTENT_LENGTH becomes http.request.body.size as an int."""
    assert attributes_of(gunicorn_environ(CONTENT_LENGTH=length))[BODY_SIZE] == expected


@pytest.mark.parametrize("length", ["", "-1", "abc", "1.5", " 12", "0x10", None])
def test_no_body_size_for_non_digit_content_length(length: str | None) -> None:
    """A missing or non-digit CONTENT_LENGTH gives no http.request.body.size."""
    assert BODY_SIZE not in attributes_of(gunicorn_environ(CONTENT_LENGTH=length))


@pytest.mark.parametrize("length", ["\u00b2", "1\u00b3"])
def test_non_ascii_digit_content_length_does_not_raise(length: str) -> None:
    """A CONTENT_LENGTH of latin-1 'digits' like '²' gives no body size instead of raising."""
    assert BODY_SIZE not in attributes_of(gunicorn_environ(CONTENT_LENGTH=length))


def test_long_user_agent_truncated() -> None:
    """user_agent.original is cut to MAX_VALUE_LENGTH characters."""
    agent = "Mozilla/5.0 " + "x" * (MAX_VALUE_LENGTH * 3)
    attributes = attributes_of(gunicorn_environ(HTTP_USER_AGENT=agent))
    assert attributes[USER_AGENT] == agent[:MAX_VALUE_LENGTH]
    assert len(attributes[USER_AGENT]) == MAX_VALUE_LENGTH


@pytest.mark.parametrize("agent", ["", None])
def test_no_user_agent_attribute_when_empty(agent: str | None) -> None:
    """An empty or missing User-Agent gives no user_agent.original."""
    assert USER_AGENT not in attributes_of(gunicorn_environ(HTTP_USER_AGENT=agent))


# --- queue time ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "stamp",
    [
        "1699999999.75",
        "t=1699999999.75",
        " t=1699999999.75 ",
        "1699999999750",
        "t=1699999999750",
        "1699999999750000",
        "t=1699999999750000",
    ],
)
def test_queue_time_for_seconds_ms_and_us_stamps(stamp: str) -> None:
    """Stamps in s, ms or µs, with or without 't=', give the milliseconds waited."""
    assert queue_time_ms(stamp, NOW_S) == pytest.approx(250.0)


@pytest.mark.parametrize(
    "stamp",
    [
        "",
        "t=",
        "abc",
        "t=abc",
        "t=1699999999.75ms",
        "0",
        "t=0",
        "-5",
        "nan",
        "t=inf",
        "-inf",
        "1e30",
        "t=1699990000",
        "1699996399",
        "1700000002",
        "t=1700000100000",
    ],
)
def test_queue_time_none_for_garbage_too_old_or_future(stamp: str) -> None:
    """Unparsable stamps, stamps over an hour old and more than 1 s ahead give None."""
    assert queue_time_ms(stamp, NOW_S) is None


def test_queue_time_slightly_in_the_future_is_zero() -> None:
    """A stamp up to one second ahead (clock skew) counts as no wait."""
    assert queue_time_ms("t=1700000000.5", NOW_S) == 0.0


def test_queue_time_just_under_an_hour_is_kept() -> None:
    """A stamp 59 minutes old is still reported."""
    assert queue_time_ms(f"t={NOW_S - 3540}", NOW_S) == pytest.approx(3_540_000.0)


@pytest.mark.usefixtures("frozen_clock")
@pytest.mark.parametrize("stamp", ["t=1699999999750", "1699999999.75", "t=1699999999750000"])
def test_queue_time_attribute_from_x_request_start(stamp: str) -> None:
    """HTTP_X_REQUEST_START becomes wide_event.queue_time_ms."""
    attributes = attributes_of(gunicorn_environ(HTTP_X_REQUEST_START=stamp))
    assert attributes[QUEUE_TIME] == pytest.approx(250.0)


@pytest.mark.usefixtures("frozen_clock")
@pytest.mark.parametrize("stamp", ["", "garbage", "t=1600000000", None])
def test_no_queue_time_attribute_for_bad_or_missing_stamp(stamp: str | None) -> None:
    """A missing, garbage or too-old X-Request-Start gives no queue time."""
    assert QUEUE_TIME not in attributes_of(gunicorn_environ(HTTP_X_REQUEST_START=stamp))


# --- header capture ------------------------------------------------------------------------


def test_no_header_attributes_without_capture_config() -> None:
    """Without capture patterns no http.request.header.* attribute is set."""
    attributes = attributes_of(gunicorn_environ(HTTP_X_CUSTOM="v", HTTP_AUTHORIZATION="Bearer x"))
    assert not [key for key in attributes if key.startswith("http.request.header.")]


def test_configured_request_headers_captured_as_lists() -> None:
    """Captured headers become http.request.header.<lower-dashed-name> one-element lists."""
    config = Config(capture_request_headers=("X-Custom-Header", "accept"))
    attributes = attributes_of(gunicorn_environ(HTTP_X_CUSTOM_HEADER="v1"), config)
    assert attributes["http.request.header.x-custom-header"] == ["v1"]
    assert attributes["http.request.header.accept"] == ["*/*"]
    assert "http.request.header.user-agent" not in attributes


def test_request_header_patterns_are_regexes_matched_whole() -> None:
    """Patterns are case-insensitive regexes that must match the whole header name."""
    config = Config(capture_request_headers=("x-trace-.*", "X-ID"))
    environ = gunicorn_environ(
        HTTP_X_TRACE_ID="t1", HTTP_X_TRACE_PARENT="t2", HTTP_X_ID="i", HTTP_X_ID_EXTRA="no"
    )
    headers = {
        key: value
        for key, value in attributes_of(environ, config).items()
        if key.startswith("http.request.header.")
    }
    assert headers == {
        "http.request.header.x-trace-id": ["t1"],
        "http.request.header.x-trace-parent": ["t2"],
        "http.request.header.x-id": ["i"],
    }


@pytest.mark.parametrize(
    ("environ_key", "name"),
    [
        ("HTTP_AUTHORIZATION", "authorization"),
        ("HTTP_COOKIE", "cookie"),
        ("HTTP_PROXY_AUTHORIZATION", "proxy-authorization"),
        ("HTTP_SET_COOKIE", "set-cookie"),
    ],
)
@pytest.mark.parametrize("pattern", [".*", "authorization|cookie|proxy-authorization|set-cookie"])
def test_credential_headers_always_redacted(environ_key: str, name: str, pattern: str) -> None:
    """Authorization, Cookie, Proxy-Authorization and Set-Cookie are REDACTED even if captured."""
    config = Config(capture_request_headers=(pattern,))
    attributes = attributes_of(gunicorn_environ(**{environ_key: "secret-value"}), config)
    assert attributes[f"http.request.header.{name}"] == [REDACTED]


def test_sanitize_fields_from_config_redacted() -> None:
    """Headers matching the sanitize patterns are REDACTED; the others keep their values."""
    config = Config(
        capture_request_headers=("x-.*",), sanitize_header_fields=("X-Api-Key", ".*private.*")
    )
    environ = gunicorn_environ(HTTP_X_API_KEY="k", HTTP_X_MY_PRIVATE_THING="s", HTTP_X_PLAIN="p")
    attributes = attributes_of(environ, config)
    assert attributes["http.request.header.x-api-key"] == [REDACTED]
    assert attributes["http.request.header.x-my-private-thing"] == [REDACTED]
    assert attributes["http.request.header.x-plain"] == ["p"]


def test_captured_header_value_truncated() -> None:
    """A captured header value is cut to MAX_VALUE_LENGTH characters."""
    config = Config(capture_request_headers=("x-big",))
    attributes = attributes_of(gunicorn_environ(HTTP_X_BIG="v" * (MAX_VALUE_LENGTH + 10)), config)
    assert attributes["http.request.header.x-big"] == ["v" * MAX_VALUE_LENGTH]


def test_response_headers_captured_with_patterns() -> None:
    """Matching response headers become http.response.header.<name> lists, repeats kept."""
    http = HttpAttributes(Config(capture_response_headers=("content-type", "x-.*")))
    attributes: dict[str, Any] = {"existing": 1}
    http.response_header_attributes(
        [
            ("Content-Type", "text/html"),
            ("X-Served-By", "a"),
            ("x-served-by", "b"),
            ("Server", "gunicorn"),
            ("Set-Cookie", "sessionid=1"),
        ],
        attributes,
    )
    assert attributes == {
        "existing": 1,
        "http.response.header.content-type": ["text/html"],
        "http.response.header.x-served-by": ["a", "b"],
    }


def test_response_set_cookie_redacted_when_captured() -> None:
    """Set-Cookie and configured sanitize fields are REDACTED in captured response headers."""
    http = HttpAttributes(
        Config(capture_response_headers=(".*",), sanitize_header_fields=("x-token",))
    )
    attributes: dict[str, Any] = {}
    http.response_header_attributes(
        [("Set-Cookie", "a=1"), ("Set-Cookie", "b=2"), ("X-Token", "t"), ("X-Ok", "ok")],
        attributes,
    )
    assert attributes == {
        "http.response.header.set-cookie": [REDACTED, REDACTED],
        "http.response.header.x-token": [REDACTED],
        "http.response.header.x-ok": ["ok"],
    }


def test_response_headers_untouched_without_capture_config() -> None:
    """Without response capture patterns the attributes are left unchanged."""
    attributes: dict[str, Any] = {}
    HttpAttributes(Config()).response_header_attributes([("X-A", "1")], attributes)
    assert attributes == {}


# --- excluded URLs -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw_uri", "excluded"),
    [
        ("/healthz", True),
        ("/api/healthz/", True),
        ("/static/app.js", True),
        ("/api/static/app.js", False),
        ("/items/", False),
    ],
)
def test_is_excluded_with_patterns(raw_uri: str, excluded: bool) -> None:
    """is_excluded searches the configured patterns in RAW_URI."""
    http = HttpAttributes(Config(excluded_urls=("healthz", "^/static/")))
    assert http.is_excluded(gunicorn_environ(RAW_URI=raw_uri)) is excluded


def test_is_excluded_falls_back_to_path_info() -> None:
    """Without RAW_URI, is_excluded looks at PATH_INFO."""
    http = HttpAttributes(Config(excluded_urls=("^/healthz$",)))
    assert http.is_excluded({"PATH_INFO": "/healthz"}) is True
    assert http.is_excluded({"PATH_INFO": "/other"}) is False
    assert http.is_excluded({}) is False


def test_nothing_excluded_without_patterns() -> None:
    """With no excluded_urls, no request is excluded."""
    assert HttpAttributes(Config()).is_excluded(gunicorn_environ(RAW_URI="/healthz")) is False
