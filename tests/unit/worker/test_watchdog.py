"""Heartbeat: a sync worker's deadline follows gunicorn's heartbeat, with no fstat per request."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from gunicorn.config import Config
from gunicorn.workers.workertmp import WorkerTmp

from gunicorn_django_wide_events._worker.watchdog import Heartbeat


@pytest.fixture
def worker_tmp() -> Iterator[WorkerTmp]:
    tmp = WorkerTmp(Config())
    yield tmp
    tmp.close()


def test_starts_from_the_file_gunicorn_reads(worker_tmp: WorkerTmp) -> None:
    worker_tmp.notify()
    assert Heartbeat(worker_tmp).last == worker_tmp.last_update()


def test_follows_every_notify_and_is_never_later_than_gunicorns_stamp(
    worker_tmp: WorkerTmp,
) -> None:
    heartbeat = Heartbeat(worker_tmp)
    for _ in range(3):
        before = time.monotonic()
        worker_tmp.notify()
        assert before <= heartbeat.last <= worker_tmp.last_update()
        time.sleep(0.01)  # so that the next stamp differs


def test_gunicorns_heartbeat_still_reaches_the_file(worker_tmp: WorkerTmp) -> None:
    """The arbiter reads the file's mtime to decide a timeout: wrapping must keep writing it."""
    Heartbeat(worker_tmp)
    worker_tmp.notify()
    first = worker_tmp.last_update()
    time.sleep(0.01)
    worker_tmp.notify()
    assert worker_tmp.last_update() > first
