"""Settings of the throughput benchmark's app: as small as a real project's hello world gets.

The middleware stack is Django's two defaults that need no database or sessions, so every
variant pays the same Django cost; ``DEBUG`` is off (with it Django keeps every query).
The database is a sqlite file prepared by the benchmark (``BENCHAPP_DATABASE``); connections
persist across requests (``CONN_MAX_AGE``) as in a production setup, so the ``/db/`` view
measures queries, not connecting.
"""

from __future__ import annotations

import os
import tempfile

DEBUG = False
SECRET_KEY = "django-insecure-wide-events-benchmark-only"  # noqa: S105
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]

INSTALLED_APPS: list[str] = []

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
]

ROOT_URLCONF = "benchapp.urls"
WSGI_APPLICATION = "benchapp.wsgi.application"

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get(
            "BENCHAPP_DATABASE", os.path.join(tempfile.gettempdir(), "wide-events-bench.sqlite3")
        ),
        "CONN_MAX_AGE": 600,
    }
}

USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler", "stream": "ext://sys.stderr"}},
    "loggers": {"django": {"handlers": ["stderr"], "level": "ERROR", "propagate": False}},
}
