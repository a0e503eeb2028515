"""never_raise: failures inside the instrumentation are swallowed and logged once per site."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from gunicorn_django_wide_events import _guard as guard
from gunicorn_django_wide_events._guard import forget_reports, log_once, never_raise

LOGGER = "gunicorn_django_wide_events"


@pytest.fixture(autouse=True)
def fresh_reports() -> Iterator[None]:
    """Each test starts and ends with no site reported yet."""
    forget_reports()
    yield
    forget_reports()


def records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.name == LOGGER]


def fail_in(site: never_raise, exc: BaseException) -> str:
    """Raise ``exc`` inside ``site``; return what ran after the block."""
    with site:
        raise exc
    return "after"


def test_exception_is_swallowed(caplog: pytest.LogCaptureFixture) -> None:
    """An Exception raised in the block does not propagate; code after the block runs."""
    caplog.set_level(logging.WARNING, logger=LOGGER)
    assert fail_in(never_raise("test.swallow"), ValueError("boom")) == "after"


@pytest.mark.parametrize("exc", [ValueError("x"), KeyError("k"), RuntimeError("r"), OSError(5)])
def test_any_exception_subclass_is_swallowed(
    caplog: pytest.LogCaptureFixture, exc: Exception
) -> None:
    """Every Exception subclass is swallowed."""
    caplog.set_level(logging.WARNING, logger=LOGGER)
    assert fail_in(never_raise("test.subclasses"), exc) == "after"


def test_block_without_exception_runs_normally(caplog: pytest.LogCaptureFixture) -> None:
    """A block that does not raise runs to the end and logs nothing."""
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    ran = []
    with never_raise("test.quiet"):
        ran.append(1)
    assert ran == [1]
    assert records(caplog) == []


def test_logs_once_per_site_with_traceback(caplog: pytest.LogCaptureFixture) -> None:
    """The first failure of a site is logged as a warning with traceback; later ones are not."""
    caplog.set_level(logging.WARNING, logger=LOGGER)
    site = never_raise("test.once")
    for index in range(5):
        fail_in(site, ValueError(f"boom {index}"))
    logged = records(caplog)
    assert len(logged) == 1
    record = logged[0]
    assert record.levelno == logging.WARNING
    assert "test.once" in record.getMessage()
    assert record.exc_info is not None
    assert record.exc_info[0] is ValueError
    assert str(record.exc_info[1]) == "boom 0"


def test_sites_are_logged_independently(caplog: pytest.LogCaptureFixture) -> None:
    """Two sites each log their own first failure."""
    caplog.set_level(logging.WARNING, logger=LOGGER)
    for _ in range(3):
        fail_in(never_raise("test.site_a"), ValueError("a"))
        fail_in(never_raise("test.site_b"), ValueError("b"))
    messages = [record.getMessage() for record in records(caplog)]
    assert len(messages) == 2
    assert "test.site_a" in messages[0]
    assert "test.site_b" in messages[1]


def test_same_site_name_shares_the_report(caplog: pytest.LogCaptureFixture) -> None:
    """Two guards with the same site name log only once between them."""
    caplog.set_level(logging.WARNING, logger=LOGGER)
    fail_in(never_raise("test.shared"), ValueError("1"))
    fail_in(never_raise("test.shared"), ValueError("2"))
    assert len(records(caplog)) == 1


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit, GeneratorExit])
def test_base_exceptions_pass_through(
    caplog: pytest.LogCaptureFixture, exc_type: type[BaseException]
) -> None:
    """KeyboardInterrupt, SystemExit and other non-Exception BaseExceptions propagate unlogged."""
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    with pytest.raises(exc_type):
        fail_in(never_raise("test.base"), exc_type())
    assert records(caplog) == []


def test_base_exception_does_not_use_up_the_report(caplog: pytest.LogCaptureFixture) -> None:
    """A SystemExit through a site does not stop its first real failure from being logged."""
    caplog.set_level(logging.WARNING, logger=LOGGER)
    site = never_raise("test.base_then_real")
    with pytest.raises(SystemExit):
        fail_in(site, SystemExit(3))
    fail_in(site, ValueError("real"))
    assert len(records(caplog)) == 1


def test_forget_reports_lets_a_site_log_again(caplog: pytest.LogCaptureFixture) -> None:
    """After forget_reports(), a site that already logged logs its next failure again."""
    caplog.set_level(logging.WARNING, logger=LOGGER)
    site = never_raise("test.forget")
    fail_in(site, ValueError("first"))
    fail_in(site, ValueError("quiet"))
    assert len(records(caplog)) == 1
    forget_reports()
    fail_in(site, ValueError("again"))
    logged = records(caplog)
    assert len(logged) == 2
    assert logged[1].exc_info is not None
    assert str(logged[1].exc_info[1]) == "again"


def test_log_once_formats_arguments(caplog: pytest.LogCaptureFixture) -> None:
    """log_once logs its message with arguments once per site."""
    caplog.set_level(logging.WARNING, logger=LOGGER)
    log_once("test.log_once", "value %s of %d", "x", 3)
    log_once("test.log_once", "value %s of %d", "y", 4)
    assert [record.getMessage() for record in records(caplog)] == ["value x of 3"]


def test_guard_is_a_shared_slotted_object() -> None:
    """never_raise keeps only its site (slots), so one instance per place costs nothing."""
    site = never_raise("test.slots")
    assert site.site == "test.slots"
    assert not hasattr(site, "__dict__")
    assert guard.logger.name == LOGGER
