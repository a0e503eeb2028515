"""ASGI entry point (``djangoapp.asgi:application``), as ``startproject`` makes it: the same
project served by the ASGI worker classes (gunicorn's ``asgi``, uvicorn-worker)."""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "djangoapp.settings")

application = get_asgi_application()
