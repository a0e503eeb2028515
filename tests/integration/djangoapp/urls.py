"""Routes of the test project; every route is named so ``http.route`` can be checked."""

from __future__ import annotations

from django.urls import include, path
from djangoapp import api, async_views, views

urlpatterns = [
    path("ok/", views.ok, name="ok"),
    path("items/<int:item_id>/", views.item_detail, name="item-detail"),
    path("raise/", views.raise_error, name="raise"),
    path("sql/", views.sql, name="sql"),
    path("slow/", views.slow, name="slow"),
    path("stream/", views.stream, name="stream"),
    path("stream-large/", views.stream_large, name="stream-large"),
    path("stream-raise/", views.stream_raise, name="stream-raise"),
    path("stream-raise-at-once/", views.stream_raise_at_once, name="stream-raise-at-once"),
    path("attrs/", views.attrs, name="attrs"),
    path("status/<int:code>/", views.status, name="status"),
    path("echo/", views.echo, name="echo"),
    path("slow-sql/", views.slow_sql, name="slow-sql"),
    path("hold-gil/", views.hold_gil, name="hold-gil"),
    path("regex-storm/", views.regex_storm, name="regex-storm"),
    path("crash/", views.crash, name="crash"),
    path("crash-in-sql/", views.crash_in_sql, name="crash-in-sql"),
    path("log/", views.log_warning, name="log"),
    path("log-levels/", views.log_levels, name="log-levels"),
    path("log-in-threads/", views.log_in_threads, name="log-in-threads"),
    path("log-then-sleep/", views.log_then_sleep, name="log-then-sleep"),
    path("stream-stall/", views.stream_stall, name="stream-stall"),
    # Shaped like django.contrib.auth's password-reset confirmation link.
    path("reset/<uidb64>/<token>/", views.password_reset_confirm, name="password_reset_confirm"),
    path("api/", include(api.router.urls)),
    path("process/", views.process_state, name="process"),
    path("async/ok/", async_views.async_ok, name="async-ok"),
    path("async/attrs/", async_views.async_attrs, name="async-attrs"),
    path("async/mixed/", async_views.async_mixed, name="async-mixed"),
    path("async/log/", async_views.async_log, name="async-log"),
    path("async/raise/", async_views.async_raise, name="async-raise"),
    path("async/stream/", async_views.async_stream, name="async-stream"),
    path("async/sleep/", async_views.async_sleep, name="async-sleep"),
    path("async/cpu/", async_views.async_cpu, name="async-cpu"),
    path("async/blocking-sleep/", async_views.async_blocking_sleep, name="async-blocking-sleep"),
    path("async/regex-storm/", async_views.async_regex_storm, name="async-regex-storm"),
    path("interleaved/", views.interleaved, name="interleaved"),
    path("cpu-loop/", views.cpu_loop, name="cpu-loop"),
    path("blocking-sleep/", views.blocking_sleep, name="blocking-sleep"),
]
