"""One view per kind of event: plain, database, app fields, exception, slow, streaming."""

import time
from collections.abc import Iterator

from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from opentelemetry import trace

from gunicorn_django_wide_events import add_fields


def home(request: HttpRequest) -> HttpResponse:
    return HttpResponse("Welcome to the shop.\n", content_type="text/plain")


def product(request: HttpRequest, product_id: int) -> JsonResponse:
    """Reads reviews one query at a time: the N+1 pattern django.db.duplicate_query_count shows."""
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE IF NOT EXISTS review (id INTEGER PRIMARY KEY, stars INT)")
        cursor.execute("SELECT count(*) FROM review")
        if cursor.fetchone()[0] == 0:
            cursor.executemany(
                "INSERT INTO review (stars) VALUES (%s)", [(n % 5 + 1,) for n in range(5)]
            )
        stars = []
        for review_id in range(1, 6):
            cursor.execute("SELECT stars FROM review WHERE id = %s", [review_id])
            stars.append(cursor.fetchone()[0])
    return JsonResponse({"product": product_id, "stars": stars})


def checkout(request: HttpRequest) -> HttpResponse:
    """Business facts on the event: plain OpenTelemetry API or add_fields()."""
    trace.get_current_span().set_attribute("shop.cart.items", 3)
    add_fields({"shop.cart.total_cents": 4599, "shop.payment.provider": "demo-pay"})
    return HttpResponse("Paid.\n", content_type="text/plain")


def boom(request: HttpRequest) -> HttpResponse:
    raise ValueError("the warehouse is on fire")


def slow(request: HttpRequest) -> HttpResponse:
    time.sleep(float(request.GET.get("seconds", "1")))
    return HttpResponse("Finally.\n", content_type="text/plain")


def stream(request: HttpRequest) -> StreamingHttpResponse:
    def lines() -> Iterator[bytes]:
        for number in range(3):
            time.sleep(0.1)
            yield f"line {number}\n".encode()

    return StreamingHttpResponse(lines(), content_type="text/plain")
