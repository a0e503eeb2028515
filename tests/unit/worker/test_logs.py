"""_worker/logs.py: the record factory counts the request's records on its event and gives
every record the ``otel*`` fields.

Each test installs the factory over the stdlib's ``LogRecord`` (and puts the previous one back)
and logs through a logger of its own that keeps the records it handles.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from opentelemetry import context, trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from gunicorn_django_wide_events._guard import LOGGER_NAME
from gunicorn_django_wide_events._worker import logs
from gunicorn_django_wide_events._worker.event import RequestEvent, current_event
from tests.unit.worker.tracing import Tracing

SERVICE = "shop"
LOGGER = "tests.unit.worker.logs"
LOG_FIELDS = (
    "wide_event.log.warning_count",
    "wide_event.log.error_count",
    "wide_event.log.first_error",
)


class KeepRecords(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@dataclass
class Logging(Tracing):
    """The test's tracer, and a logger of its own whose records ``kept`` keeps."""

    logger: logging.Logger
    kept: KeepRecords

    def log_fields(self) -> dict[str, object]:
        attributes = self.only_span().attributes or {}
        return {key: attributes[key] for key in LOG_FIELDS if key in attributes}


@pytest.fixture
def logged(tracing: Tracing) -> Iterator[Logging]:
    previous = logging.getLogRecordFactory()
    logging.setLogRecordFactory(logs.record_factory_for(previous, SERVICE))
    logger = logging.getLogger(LOGGER)
    kept = KeepRecords()
    logger.addHandler(kept)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield Logging(tracing.tracer, tracing.exporter, logger, kept)
    finally:
        logging.setLogRecordFactory(previous)
        logger.removeHandler(kept)


@contextlib.contextmanager
def serving(event: RequestEvent) -> Iterator[RequestEvent]:
    """``event`` is the current request's, as the WSGI middleware makes it."""
    token = current_event.set(event)
    try:
        yield event
    finally:
        current_event.reset(token)


# -- counting -----------------------------------------------------------------------------


def test_warnings_and_errors_are_counted_by_level(logged: Logging) -> None:
    """WARNING up to ERROR counts as a warning, ERROR and CRITICAL as errors; INFO not."""
    with serving(logged.event()) as event:
        logged.logger.info("not counted")
        logged.logger.warning("one")
        logged.logger.log(35, "a level between WARNING and ERROR")
        logged.logger.error("first error")
        logged.logger.critical("second error")
        logged.logger.debug("below the logger's level: no record is made")
    event.finish("request")

    assert logged.log_fields() == {
        "wide_event.log.warning_count": 2,
        "wide_event.log.error_count": 2,
        "wide_event.log.first_error": f"{LOGGER}: first error",
    }


def test_first_error_is_the_template_never_the_arguments(logged: Logging) -> None:
    """``record.msg`` as written in the code: the argument (a card number) stays out."""
    with serving(logged.event()) as event:
        logged.logger.error("card %s declined", "4242-4242")
        logged.logger.error("a second error is only counted")
    event.finish("request")

    attributes = logged.only_span().attributes or {}
    assert attributes["wide_event.log.first_error"] == f"{LOGGER}: card %s declined"
    assert "4242" not in repr(dict(attributes))
    assert logged.kept.records[0].getMessage() == "card 4242-4242 declined"


def test_message_that_is_not_a_string_is_named_by_its_type(logged: Logging) -> None:
    """``logger.exception(exc)``: the exception's text is data, its type is not."""
    with serving(logged.event()) as event:
        logged.logger.error(ValueError("token=s3cr3t"))
    event.finish("request")

    assert logged.log_fields()["wide_event.log.first_error"] == f"{LOGGER}: <ValueError>"


def test_first_error_is_cut_to_its_maximum_length(logged: Logging) -> None:
    with serving(logged.event()) as event:
        logged.logger.error("x" * 1000)
    event.finish("request")

    first_error = logged.log_fields()["wide_event.log.first_error"]
    assert isinstance(first_error, str)
    assert len(first_error) == logs.FIRST_ERROR_MAX_LENGTH
    assert first_error.startswith(f"{LOGGER}: xxx")


def test_a_request_that_logs_nothing_worth_counting_has_no_log_fields(logged: Logging) -> None:
    """Zero counts are left out, and so is an INFO-only request's."""
    with serving(logged.event()) as event:
        logged.logger.info("just information")
    event.finish("request")

    assert logged.log_fields() == {}


def test_records_outside_a_request_are_not_counted(logged: Logging) -> None:
    event = logged.event()
    logged.logger.error("before the request")
    with serving(event):
        pass
    logged.logger.error("after the request")
    event.finish("request")

    assert logged.log_fields() == {}


def test_records_of_other_threads_are_not_counted_even_in_the_request_context(
    logged: Logging,
) -> None:
    """A thread that copied the request's context is not the request's thread."""
    with serving(logged.event()) as event:
        copied = contextvars.copy_context()
        helper = threading.Thread(target=copied.run, args=(logged.logger.error, "helper"))
        helper.start()
        helper.join()
        assert copied.get(current_event) is event  # the helper did see the event
        logged.logger.warning("the request's own")
    event.finish("request")

    assert logged.log_fields() == {"wide_event.log.warning_count": 1}


def test_the_package_own_messages_are_not_counted(logged: Logging) -> None:
    own = logging.getLogger(LOGGER_NAME)
    previous_handlers, previous_propagate = own.handlers, own.propagate
    own.handlers, own.propagate = [KeepRecords()], False
    try:
        with serving(logged.event()) as event:
            own.warning("gunicorn-django-wide-events: internal error in a place")
    finally:
        own.handlers, own.propagate = previous_handlers, previous_propagate
    event.finish("request")

    assert logged.log_fields() == {}


def test_timeout_event_carries_what_was_logged_before_it(logged: Logging) -> None:
    """The watchdog's ``time_out`` reads the counts at the deadline; later records are lost."""
    with serving(logged.event()) as event:
        logged.logger.warning("before")
        logged.logger.error("before the deadline: %s", "order 17")
        assert event.time_out(stack=None, answered=False)
        logged.logger.error("after the deadline")
        logged.logger.warning("after the deadline")
    event.end_response()

    assert logged.log_fields() == {
        "wide_event.log.warning_count": 1,
        "wide_event.log.error_count": 1,
        "wide_event.log.first_error": f"{LOGGER}: before the deadline: %s",
    }


# -- the fields every record carries ------------------------------------------------------


def test_records_of_a_request_carry_its_ids(logged: Logging) -> None:
    """The event's own span ids (not a child span's), as 32 and 16 lowercase hex digits."""
    event = logged.event()
    span_context = event.span.get_span_context()
    with serving(event), logged.tracer.start_as_current_span("child"):
        logged.logger.info("inside a child span")
    event.finish("request")

    (record,) = logged.kept.records
    assert record.otelTraceID == f"{span_context.trace_id:032x}" == event.trace_id_hex
    assert record.otelSpanID == f"{span_context.span_id:016x}" == event.span_id_hex
    assert record.otelTraceSampled is True
    assert record.otelServiceName == SERVICE


def test_records_outside_a_request_carry_zeros_or_the_current_span(logged: Logging) -> None:
    """As OpenTelemetry's logging instrumentation: "0" without a span, else the span's."""
    logged.logger.info("no span")
    span_context = SpanContext(0xABC, 0xDEF, is_remote=False, trace_flags=TraceFlags(1))
    token = context.attach(trace.set_span_in_context(NonRecordingSpan(span_context)))
    try:
        logged.logger.info("in a span of someone else")
    finally:
        context.detach(token)

    outside, in_span = logged.kept.records
    assert (outside.otelTraceID, outside.otelSpanID, outside.otelTraceSampled) == ("0", "0", False)
    assert outside.otelServiceName == SERVICE
    assert in_span.otelTraceID == f"{0xABC:032x}"
    assert in_span.otelSpanID == f"{0xDEF:016x}"
    assert in_span.otelTraceSampled is True


def test_fields_an_inner_factory_set_outside_a_request_are_kept(logged: Logging) -> None:
    """Chained under another factory that already said (OpenTelemetry's), ours keeps its say."""

    def theirs(*args: object, **kwargs: object) -> logging.LogRecord:
        record = logging.LogRecord(*args, **kwargs)  # type: ignore[arg-type]
        record.otelTraceID = "theirs"
        return record

    logging.setLogRecordFactory(logs.record_factory_for(theirs, SERVICE))
    logged.logger.info("outside")

    (record,) = logged.kept.records
    assert record.otelTraceID == "theirs"


def test_format_with_the_fields_works_for_every_record(logged: Logging) -> None:
    """A format naming the fields never fails, in a request or outside."""
    formatter = logging.Formatter("%(otelTraceID)s %(otelSpanID)s %(otelServiceName)s %(message)s")
    logged.logger.info("outside")
    with serving(logged.event()) as event:
        logged.logger.info("inside")

    outside, inside = (formatter.format(record) for record in logged.kept.records)
    assert outside == f"0 0 {SERVICE} outside"
    assert inside == f"{event.trace_id_hex} {event.span_id_hex} {SERVICE} inside"


@pytest.mark.usefixtures("fresh_reports")
def test_a_failure_inside_the_factory_leaves_logging_working(
    logged: Logging, caplog: pytest.LogCaptureFixture
) -> None:
    """The record is still made and handled; the failure is reported once."""
    event = logged.event()
    event.log_fields = 42  # type: ignore[assignment]
    with serving(event):
        logged.logger.warning("still logged")
        logged.logger.warning("and again")

    assert [record.getMessage() for record in logged.kept.records] == [
        "still logged",
        "and again",
    ]
    reports = [r for r in caplog.records if "internal error in logs.record_factory" in r.message]
    assert len(reports) == 1


# -- installing ---------------------------------------------------------------------------


@pytest.fixture
def stdlib_factory() -> Iterator[None]:
    previous = logging.getLogRecordFactory()
    logging.setLogRecordFactory(logging.LogRecord)
    try:
        yield
    finally:
        logging.setLogRecordFactory(previous)


@pytest.mark.usefixtures("stdlib_factory")
def test_instrument_installs_once_and_uninstrument_puts_the_previous_back() -> None:
    logs.instrument_logging()
    installed = logging.getLogRecordFactory()
    logs.instrument_logging()

    assert installed is not logging.LogRecord
    assert logging.getLogRecordFactory() is installed
    logs.uninstrument_logging()
    assert logging.getLogRecordFactory() is logging.LogRecord


@pytest.mark.usefixtures("stdlib_factory")
def test_uninstrument_leaves_a_factory_installed_after_ours_in_place() -> None:
    """Another wrapper calls ours: unwrapping would drop it, so ours stays under it."""
    logs.instrument_logging()
    ours = logging.getLogRecordFactory()

    def theirs(*args: object, **kwargs: object) -> logging.LogRecord:
        return ours(*args, **kwargs)

    logging.setLogRecordFactory(theirs)
    logs.uninstrument_logging()

    assert logging.getLogRecordFactory() is theirs
