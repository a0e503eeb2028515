"""Loaded by ``opentelemetry-instrument`` before it runs gunicorn: bad ``OTEL_*`` values stop it.

``opentelemetry-instrument`` imports every module of the ``opentelemetry_environment_variables``
entry-point group to turn their ``OTEL_*`` names into command-line flags, before it configures
anything; this module is one (with no such names: it adds no flag). It is the one moment this
package runs before the SDK's configuration, which on a bad value only logs a traceback, loads
no instrumentor and lets gunicorn serve without events (see ``_otel_environ.py``).
"""

from __future__ import annotations

import sys

from ._otel_environ import check_launch as _check_launch

_check_launch(sys.argv)
