"""Resource attributes of a worker process, and of the master: who sent an event or a point.

A worker's are computed by the worker for its own events and by the master for the fallback
events it sends on a dead worker's behalf, so both derive the same ``service.instance.id``. The
master's own metrics carry the master's: its ``process.pid`` and a ``service.instance.id`` of
its own.
"""

from __future__ import annotations

import hashlib
import os
import platform
import socket
import uuid
from typing import Any

import django
import gunicorn
from opentelemetry.sdk.resources import Resource

from .. import _attributes as attr


def service_instance_id(master_pid: int, worker_pid: int, spawned_at: float) -> str:
    """The same id in the worker and, for its fallback events, in the master."""
    name = f"{socket.gethostname()}:{master_pid}:{worker_pid}:{spawned_at!r}"
    # BLAKE2 is Python's own: uuid5's SHA-1 would run OpenSSL's code for the first time in
    # each new worker and cost it a MiB of resident pages.
    digest = hashlib.blake2b(name.encode(), digest_size=16).digest()
    return str(uuid.UUID(bytes=digest, version=4))


def worker_resource(
    server: Any, worker: Any, slot: int | None, pid: int, spawned_at: float
) -> Resource:
    """Resource attributes of one worker process, as the worker or the master sees it."""
    attributes: dict[str, Any] = {
        "process.pid": pid,
        "process.parent_pid": server.pid,
        "service.instance.id": service_instance_id(server.pid, pid, spawned_at),
        attr.GUNICORN_WORKER_CLASS: f"{type(worker).__module__}.{type(worker).__qualname__}",
        attr.GUNICORN_WORKERS_CONFIGURED: int(server.cfg.workers),
        attr.GUNICORN_TIMEOUT: int(server.cfg.timeout),
        attr.GUNICORN_VERSION: gunicorn.__version__,
        attr.DJANGO_VERSION: django.get_version(),
        "process.runtime.version": platform.python_version(),
    }
    if slot is not None:
        attributes[attr.GUNICORN_WORKER_ID] = slot
    return Resource(attributes)


def master_resource(server: Any, started_at: float) -> Resource:
    """Resource attributes of the gunicorn master process (this one), for its own metrics."""
    pid = os.getpid()
    return Resource(
        {
            "process.pid": pid,
            # Named like a worker's, with the master's pid in the worker's place: no worker's.
            "service.instance.id": service_instance_id(pid, pid, started_at),
            attr.GUNICORN_WORKERS_CONFIGURED: int(server.cfg.workers),
            attr.GUNICORN_TIMEOUT: int(server.cfg.timeout),
            attr.GUNICORN_VERSION: gunicorn.__version__,
            attr.DJANGO_VERSION: django.get_version(),
            "process.runtime.version": platform.python_version(),
        }
    )
