"""Django settings for the integration-test project.

Kept minimal on purpose: only what the routes need, so that any span
attribute or warning seen in the tests comes from the package under test and
not from incidental Django configuration.
"""

from __future__ import annotations

import os

DEBUG = False
SECRET_KEY = "django-insecure-wide-events-integration-tests-only"  # noqa: S105
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
    "djangoapp.middleware.HeaderUserMiddleware",
]

ROOT_URLCONF = "djangoapp.urls"
WSGI_APPLICATION = "djangoapp.wsgi.application"

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        # Each test points this at its own tmp_path so runs never share state.
        "NAME": os.environ.get("DJANGOAPP_DATABASE", "/tmp/djangoapp.sqlite3"),
    }
}

# The REST framework API (djangoapp.api) answers JSON only and authenticates nobody itself
# (HeaderUserMiddleware does): no templates, sessions or user table needed.
REST_FRAMEWORK = {
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_AUTHENTICATION_CLASSES": [],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.AllowAny"],
    "UNAUTHENTICATED_USER": None,
}

USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# With DEBUG off Django would only mail unhandled errors to ADMINS; send them
# to stderr instead so they end up in the gunicorn log the tests read. The app's
# own records go there too, in a format that names the event they belong to
# (fields the package puts on every record), and on to the root logger.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "correlated": {
            "format": (
                "djangoapp-log %(levelname)s trace_id=%(otelTraceID)s span_id=%(otelSpanID)s "
                "sampled=%(otelTraceSampled)s service=%(otelServiceName)s %(message)s"
            ),
        },
    },
    "handlers": {
        "stderr": {"class": "logging.StreamHandler", "stream": "ext://sys.stderr"},
        "correlated": {
            "class": "logging.StreamHandler",
            "stream": "ext://sys.stderr",
            "formatter": "correlated",
        },
    },
    "loggers": {
        "django": {"handlers": ["stderr"], "level": "WARNING", "propagate": False},
        "djangoapp": {"handlers": ["correlated"], "level": "INFO"},
    },
}
