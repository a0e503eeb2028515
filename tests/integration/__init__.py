"""Integration tests: real gunicorn processes exporting to a real OTLP receiver."""
