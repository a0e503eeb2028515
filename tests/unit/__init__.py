"""Unit tests: one module at a time, no gunicorn process, no collector."""
