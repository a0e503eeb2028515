"""ASGI entry point (``benchapp.asgi:application``), for the ASGI worker classes (``asgi``,
``uvicorn_worker.UvicornWorker``)."""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchapp.settings")

application = get_asgi_application()
