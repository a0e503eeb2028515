"""Failures of the instrumentation stay inside it: swallowed, and logged once per place.

Invariant 2 of the design: the instrumentation never breaks a request. A guard is a shared,
stateless context manager (one per place, built at import), so using it costs no allocation.
"""

from __future__ import annotations

import logging
import threading
from types import TracebackType
from typing import Final

LOGGER_NAME: Final = "gunicorn_django_wide_events"
logger: Final = logging.getLogger(LOGGER_NAME)

_reported: set[str] = set()
_reported_lock: Final = threading.Lock()


def log_once(site: str, message: str, *args: object, exc_info: bool = False) -> None:
    """Log ``message`` the first time ``site`` reports in this process, then stay quiet."""
    with _reported_lock:
        if site in _reported:
            return
        _reported.add(site)
    logger.warning(message, *args, exc_info=exc_info)


def forget_reports() -> None:
    """Let a new worker process report its own first failures (called after fork)."""
    with _reported_lock:
        _reported.clear()


class never_raise:
    """Swallow an ``Exception`` raised inside the block; log the first one of each site.

    ``BaseException`` that is not an ``Exception`` (``SystemExit``, ``KeyboardInterrupt``)
    passes through: those are the process's business, not ours. Code run on every request
    uses ``try: ... except Exception: guard.report()`` instead of ``with guard:``, which costs
    two Python calls even when nothing goes wrong.
    """

    __slots__ = ("site",)

    def __init__(self, site: str) -> None:
        self.site = site

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool:
        if exc_type is None or not issubclass(exc_type, Exception):
            return False
        self.report()
        return True

    def report(self) -> None:
        """Log the exception being handled, if it is this site's first."""
        log_once(
            self.site,
            "gunicorn-django-wide-events: internal error in %s (the request goes on; "
            "further errors here are not logged)",
            self.site,
            exc_info=True,
        )
