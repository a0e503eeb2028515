"""The views the throughput benchmark drives, and one for bench/first_request.py."""

from __future__ import annotations

import gc
import sqlite3
import time

from django.db import connection
from django.http import HttpRequest, HttpResponse

ITEMS = 100


def hello(request: HttpRequest) -> HttpResponse:
    """Hello world: what the framework and the instrumentation cost, and nothing else."""
    return HttpResponse("Hello, world!\n", content_type="text/plain")


async def async_hello(request: HttpRequest) -> HttpResponse:
    """Hello world from ``async def``: what an ASGI worker serves without a thread hop (Django
    runs a sync view in a thread under ASGI)."""
    return HttpResponse("Hello, world!\n", content_type="text/plain")


def db(request: HttpRequest) -> HttpResponse:
    """Three cheap queries on an indexed table (microseconds each in sqlite)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT name FROM bench_item WHERE id = %s", [7])
        name = cursor.fetchone()[0]
        cursor.execute("SELECT count(*) FROM bench_item WHERE price < %s", [50])
        cheap = cursor.fetchone()[0]
        cursor.execute("SELECT id, price FROM bench_item ORDER BY id LIMIT %s", [5])
        first = cursor.fetchall()
    return HttpResponse(f"{name} {cheap} {len(first)}\n", content_type="text/plain")


def full_collection(request: HttpRequest) -> HttpResponse:
    """Milliseconds a full garbage collection takes in this worker now (what a gen-2 collection
    that lands on a request costs it), and the objects it walked."""
    started = time.perf_counter()
    gc.collect()
    elapsed_ms = (time.perf_counter() - started) * 1e3
    return HttpResponse(f"{elapsed_ms:.3f} {len(gc.get_objects())}\n", content_type="text/plain")


def create_database(path: str) -> None:
    """The table ``db`` reads: created by the benchmark before any server starts."""
    with sqlite3.connect(path) as conn:
        conn.execute("DROP TABLE IF EXISTS bench_item")
        conn.execute("CREATE TABLE bench_item (id INTEGER PRIMARY KEY, name TEXT, price INTEGER)")
        conn.executemany(
            "INSERT INTO bench_item (id, name, price) VALUES (?, ?, ?)",
            [(i, f"item-{i}", i % 100) for i in range(1, ITEMS + 1)],
        )
    conn.close()
