"""Config.from_environ: every setting, its default, what it accepts and what it refuses."""

from __future__ import annotations

import dataclasses
import math

import pytest

from gunicorn_django_wide_events import _config as config
from gunicorn_django_wide_events._config import (
    DEFAULT_REDACT_QUERY_KEYS,
    SETTINGS,
    Config,
    ConfigError,
    Setting,
    default_of,
)

SETTING_IDS = [f"{setting.env}->{setting.field}" for setting in SETTINGS]

# Per parser: a value it must refuse, and words its error message must contain.
BAD_VALUE_AND_ACCEPTED: dict[object, tuple[str, str]] = {
    config.parse_bool: ("maybe", "true/false"),
    config.parse_positive_int: ("abc", "whole number greater than 0"),
    config.parse_positive_seconds: ("abc", "seconds greater than 0"),
    config.parse_key_list: ("a.b", "comma-separated words"),
    config.parse_pattern_list: ("(unclosed", "regular expressions"),
    config.parse_console_format: ("yaml", "logfmt or json"),
    config.parse_non_negative_seconds: ("-1", "0 or more"),
    config.parse_board_slots: ("-1", "from 0 (sized from the workers) to 4096"),
    config.parse_spool_size: ("4096", "0, or a number of bytes from 8192"),
}

TRUE_SPELLINGS = ["true", "TRUE", "True", "yes", "YES", "Yes", "on", "ON", "On", "1"]
FALSE_SPELLINGS = ["false", "FALSE", "False", "no", "NO", "No", "off", "OFF", "Off", "0"]

POSITIVE_INT_SETTINGS = [s for s in SETTINGS if s.parse is config.parse_positive_int]
SECONDS_SETTINGS = [s for s in SETTINGS if s.parse is config.parse_positive_seconds]
PATTERN_SETTINGS = [s for s in SETTINGS if s.parse is config.parse_pattern_list]
BOOL_SETTINGS = [s for s in SETTINGS if s.parse is config.parse_bool]


def _ids(settings: list[Setting]) -> list[str]:
    return [setting.env for setting in settings]


def test_every_setting_has_a_known_parser() -> None:
    """Each Setting uses one of the parsers this test module knows how to exercise."""
    assert {setting.parse for setting in SETTINGS} <= set(BAD_VALUE_AND_ACCEPTED)


def test_every_setting_targets_a_config_field() -> None:
    """Each Setting names an existing Config field."""
    fields = {field.name for field in dataclasses.fields(Config)}
    assert {setting.field for setting in SETTINGS} <= fields


@pytest.mark.parametrize("setting", SETTINGS, ids=SETTING_IDS)
def test_unset_variable_gives_the_default(setting: Setting) -> None:
    """A variable that is not set leaves its field at the dataclass default."""
    assert getattr(Config.from_environ({}), setting.field) == default_of(setting)


@pytest.mark.parametrize("setting", SETTINGS, ids=SETTING_IDS)
def test_default_of_matches_a_bare_config(setting: Setting) -> None:
    """default_of returns the value a Config() built without arguments has."""
    assert default_of(setting) == getattr(Config(), setting.field)


def test_default_values() -> None:
    """The documented defaults: user id off, 2048 SQL characters, 5 s shutdown, empty lists."""
    defaults = {setting.env: default_of(setting) for setting in SETTINGS}
    assert defaults == {
        config.WIDE_EVENTS_CAPTURE_USER_ID: False,
        config.WIDE_EVENTS_REDACT_QUERY_KEYS: (),
        config.WIDE_EVENTS_SQL_MAX_LENGTH: 2048,
        config.WIDE_EVENTS_SHUTDOWN_TIMEOUT: 5.0,
        config.WIDE_EVENTS_TIMEOUT_MARGIN: 1.0,
        config.WIDE_EVENTS_REQUEST_TIMEOUT: 0.0,
        config.WIDE_EVENTS_MONITOR_INTERVAL: 1.0,
        config.WIDE_EVENTS_BOARD_SLOTS: 0,
        config.WIDE_EVENTS_CONSOLE_FORMAT: "logfmt",
        config.WIDE_EVENTS_WIRE_ENCODER: True,
        config.WIDE_EVENTS_LIVE_VIEW: True,
        config.WIDE_EVENTS_SPOOL_SIZE: 2 * 2**20,
        config.WIDE_EVENTS_EXIT_FLUSH_TIMEOUT: 5.0,
        config.WIDE_EVENTS_GC_FREEZE: True,
        config.OTEL_CAPTURE_REQUEST_HEADERS: (),
        config.OTEL_CAPTURE_RESPONSE_HEADERS: (),
        config.OTEL_SANITIZE_HEADER_FIELDS: (),
        config.OTEL_EXCLUDED_URLS: (),
        config.OTEL_DJANGO_EXCLUDED_URLS: (),
    }


def test_from_environ_ignores_unrelated_variables() -> None:
    """Variables that are not settings do not change the Config."""
    assert Config.from_environ({"PATH": "/bin", "WIDE_EVENTS_UNKNOWN": "x"}) == Config()


@pytest.mark.parametrize("setting", SETTINGS, ids=SETTING_IDS)
def test_bad_value_raises_config_error_naming_variable_value_and_accepted(
    setting: Setting,
) -> None:
    """A refused value raises ConfigError whose message names the variable, value and accepted."""
    bad, accepted = BAD_VALUE_AND_ACCEPTED[setting.parse]
    with pytest.raises(ConfigError) as caught:
        Config.from_environ({setting.env: bad})
    message = str(caught.value)
    assert setting.env in message
    assert repr(bad) in message
    assert accepted in message
    assert caught.value.name == setting.env


def test_config_error_is_a_value_error() -> None:
    """ConfigError is a ValueError, so generic callers can catch it."""
    assert issubclass(ConfigError, ValueError)


@pytest.mark.parametrize("setting", BOOL_SETTINGS, ids=_ids(BOOL_SETTINGS))
@pytest.mark.parametrize("raw", [*TRUE_SPELLINGS, " true ", "\tYes\n", "  1"])
def test_bool_true_spellings(setting: Setting, raw: str) -> None:
    """true/yes/on/1 in any case and with surrounding spaces read as True."""
    assert getattr(Config.from_environ({setting.env: raw}), setting.field) is True


@pytest.mark.parametrize("setting", BOOL_SETTINGS, ids=_ids(BOOL_SETTINGS))
@pytest.mark.parametrize("raw", [*FALSE_SPELLINGS, " false ", "\tNo\n", "  0", ""])
def test_bool_false_spellings(setting: Setting, raw: str) -> None:
    """false/no/off/0 in any case, with surrounding spaces, or empty read as False."""
    assert getattr(Config.from_environ({setting.env: raw}), setting.field) is False


@pytest.mark.parametrize("setting", BOOL_SETTINGS, ids=_ids(BOOL_SETTINGS))
@pytest.mark.parametrize("raw", ["maybe", "2", "tru", "y", "n", "enabled", "1.0", "-1"])
def test_bool_refuses_other_words(setting: Setting, raw: str) -> None:
    """Anything other than the accepted spellings raises ConfigError listing them."""
    with pytest.raises(ConfigError, match="true/false, yes/no, on/off, 1/0") as caught:
        Config.from_environ({setting.env: raw})
    assert setting.env in str(caught.value)
    assert repr(raw) in str(caught.value)


@pytest.mark.parametrize("setting", POSITIVE_INT_SETTINGS, ids=_ids(POSITIVE_INT_SETTINGS))
@pytest.mark.parametrize(("raw", "expected"), [("1", 1), ("42", 42), (" 4096 ", 4096)])
def test_positive_int_accepts_whole_numbers(setting: Setting, raw: str, expected: int) -> None:
    """A positive whole number, spaces around it allowed, is read as an int."""
    value = getattr(Config.from_environ({setting.env: raw}), setting.field)
    assert value == expected
    assert type(value) is int


@pytest.mark.parametrize("setting", POSITIVE_INT_SETTINGS, ids=_ids(POSITIVE_INT_SETTINGS))
@pytest.mark.parametrize("raw", ["0", "-1", "-100", "abc", "inf", "nan", "1.5", "", " "])
def test_positive_int_refuses_zero_negative_and_non_numbers(setting: Setting, raw: str) -> None:
    """0, negatives, words, inf, nan, fractions and blanks raise ConfigError."""
    with pytest.raises(ConfigError, match="a whole number greater than 0") as caught:
        Config.from_environ({setting.env: raw})
    assert setting.env in str(caught.value)
    assert repr(raw) in str(caught.value)


@pytest.mark.parametrize("setting", SECONDS_SETTINGS, ids=_ids(SECONDS_SETTINGS))
@pytest.mark.parametrize(
    ("raw", "expected"), [("2", 2.0), ("0.5", 0.5), (" 1.25 ", 1.25), ("30", 30.0)]
)
def test_positive_seconds_accepts_numbers(setting: Setting, raw: str, expected: float) -> None:
    """A positive finite number of seconds, whole or fractional, is read as a float."""
    value = getattr(Config.from_environ({setting.env: raw}), setting.field)
    assert value == expected
    assert isinstance(value, float)


@pytest.mark.parametrize("setting", SECONDS_SETTINGS, ids=_ids(SECONDS_SETTINGS))
@pytest.mark.parametrize(
    "raw", ["0", "0.0", "-1", "-0.5", "abc", "inf", "-inf", "Infinity", "nan", "NaN", ""]
)
def test_positive_seconds_refuses_zero_negative_infinite_and_nan(
    setting: Setting, raw: str
) -> None:
    """0, negatives, words, infinities, nan and blanks raise ConfigError."""
    with pytest.raises(ConfigError, match="a number of seconds greater than 0") as caught:
        Config.from_environ({setting.env: raw})
    assert setting.env in str(caught.value)
    assert repr(raw) in str(caught.value)


def test_redact_query_keys_extend_the_defaults() -> None:
    """WIDE_EVENTS_REDACT_QUERY_KEYS adds lower-cased keys after the defaults, replacing none."""
    cfg = Config.from_environ({config.WIDE_EVENTS_REDACT_QUERY_KEYS: " Foo, bar_baz ,,qux-1 "})
    assert cfg.extra_redact_query_keys == ("foo", "bar_baz", "qux-1")
    assert cfg.redact_query_keys == (*DEFAULT_REDACT_QUERY_KEYS, "foo", "bar_baz", "qux-1")


def test_redact_query_keys_unset_are_the_defaults() -> None:
    """Without WIDE_EVENTS_REDACT_QUERY_KEYS the redacted keys are exactly the defaults."""
    assert Config.from_environ({}).redact_query_keys == DEFAULT_REDACT_QUERY_KEYS


def test_redact_query_keys_empty_value_keeps_the_defaults() -> None:
    """An empty WIDE_EVENTS_REDACT_QUERY_KEYS adds nothing and keeps the defaults."""
    cfg = Config.from_environ({config.WIDE_EVENTS_REDACT_QUERY_KEYS: " , "})
    assert cfg.extra_redact_query_keys == ()
    assert cfg.redact_query_keys == DEFAULT_REDACT_QUERY_KEYS


@pytest.mark.parametrize("raw", ["a.b", "foo bar", "x=y", "ok,bad/key", "k*"])
def test_redact_query_keys_refuse_non_words(raw: str) -> None:
    """Keys with characters other than letters, digits, - and _ raise ConfigError."""
    with pytest.raises(ConfigError, match="letters, digits, - and _") as caught:
        Config.from_environ({config.WIDE_EVENTS_REDACT_QUERY_KEYS: raw})
    assert config.WIDE_EVENTS_REDACT_QUERY_KEYS in str(caught.value)
    assert repr(raw) in str(caught.value)


@pytest.mark.parametrize("setting", PATTERN_SETTINGS, ids=_ids(PATTERN_SETTINGS))
def test_pattern_list_is_split_and_stripped(setting: Setting) -> None:
    """A comma-separated list of names and regexes becomes a tuple of stripped patterns."""
    cfg = Config.from_environ({setting.env: " X-Custom , x-.*-id,, "})
    assert getattr(cfg, setting.field) == ("X-Custom", "x-.*-id")


@pytest.mark.parametrize("setting", PATTERN_SETTINGS, ids=_ids(PATTERN_SETTINGS))
@pytest.mark.parametrize("bad", ["(", "[a-", "*x", "a)", "(?P<x"])
def test_pattern_list_refuses_bad_regex(setting: Setting, bad: str) -> None:
    """A pattern that is not a valid regular expression raises ConfigError naming it."""
    raw = f"x-good,{bad}"
    with pytest.raises(ConfigError) as caught:
        Config.from_environ({setting.env: raw})
    message = str(caught.value)
    assert setting.env in message
    assert repr(raw) in message
    assert repr(bad) in message
    assert "regular expressions" in message


def test_bad_regex_in_capture_request_headers_raises() -> None:
    """A bad regex in the request-header capture variable stops start-up with ConfigError."""
    with pytest.raises(ConfigError, match=config.OTEL_CAPTURE_REQUEST_HEADERS):
        Config.from_environ({config.OTEL_CAPTURE_REQUEST_HEADERS: "x-ok,x-(bad"})


@pytest.mark.parametrize("django_first", [True, False])
def test_django_excluded_urls_win_over_generic(django_first: bool) -> None:
    """OTEL_PYTHON_DJANGO_EXCLUDED_URLS replaces OTEL_PYTHON_EXCLUDED_URLS, whatever the order."""
    items = [
        (config.OTEL_DJANGO_EXCLUDED_URLS, "healthz,metrics"),
        (config.OTEL_EXCLUDED_URLS, "ping"),
    ]
    environ = dict(items if django_first else reversed(items))
    assert Config.from_environ(environ).excluded_urls == ("healthz", "metrics")


def test_generic_excluded_urls_used_without_django_variable() -> None:
    """OTEL_PYTHON_EXCLUDED_URLS applies when the Django-specific variable is unset."""
    cfg = Config.from_environ({config.OTEL_EXCLUDED_URLS: "ping, /static/.*"})
    assert cfg.excluded_urls == ("ping", "/static/.*")


def test_empty_django_excluded_urls_still_win() -> None:
    """A set-but-empty Django variable wins, as opentelemetry-util-http's get_excluded_urls does."""
    cfg = Config.from_environ(
        {config.OTEL_DJANGO_EXCLUDED_URLS: "", config.OTEL_EXCLUDED_URLS: "ping"}
    )
    assert cfg.excluded_urls == ()


def test_all_settings_at_once() -> None:
    """Every variable set together lands in its own field."""
    cfg = Config.from_environ(
        {
            config.WIDE_EVENTS_CAPTURE_USER_ID: "yes",
            config.WIDE_EVENTS_REDACT_QUERY_KEYS: "ssn",
            config.WIDE_EVENTS_SQL_MAX_LENGTH: "100",
            config.WIDE_EVENTS_SHUTDOWN_TIMEOUT: "1.5",
            config.OTEL_CAPTURE_REQUEST_HEADERS: "x-a",
            config.OTEL_CAPTURE_RESPONSE_HEADERS: "x-b",
            config.OTEL_SANITIZE_HEADER_FIELDS: "x-c",
            config.OTEL_EXCLUDED_URLS: "generic",
        }
    )
    assert cfg == Config(
        capture_user_id=True,
        extra_redact_query_keys=("ssn",),
        sql_max_length=100,
        shutdown_timeout_s=1.5,
        capture_request_headers=("x-a",),
        capture_response_headers=("x-b",),
        sanitize_header_fields=("x-c",),
        excluded_urls=("generic",),
    )


def test_config_is_frozen() -> None:
    """Assigning to a Config field raises FrozenInstanceError."""
    cfg = Config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.sql_max_length = 1  # type: ignore[misc]


def test_config_has_no_instance_dict() -> None:
    """Config uses slots, so no attribute can be added to an instance."""
    cfg = Config()
    with pytest.raises((AttributeError, TypeError)):
        cfg.unknown = 1  # type: ignore[attr-defined]


def test_config_is_hashable_and_compares_by_value() -> None:
    """Two Configs with the same values are equal and hash the same."""
    assert Config(sql_max_length=10) == Config(sql_max_length=10)
    assert hash(Config(sql_max_length=10)) == hash(Config(sql_max_length=10))


def test_seconds_parser_result_is_finite() -> None:
    """The seconds parser never returns an infinite or nan value for accepted input."""
    value = Config.from_environ({config.WIDE_EVENTS_SHUTDOWN_TIMEOUT: "1e-3"}).shutdown_timeout_s
    assert math.isfinite(value)
    assert value == pytest.approx(0.001)
