"""A Django REST framework API, routed the usual way: a router, a viewset, a custom action.

No model behind it (the test database has no tables): the viewset serves a fixed list, which is
all the events need to show which action ran.
"""

from __future__ import annotations

from rest_framework import routers, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

BOOKS = {1: {"id": 1, "title": "Dune"}, 2: {"id": 2, "title": "Emma"}}


class BookViewSet(viewsets.ViewSet):
    """``list``, ``retrieve``, ``create`` and the custom ``publish`` action."""

    def list(self, request: Request) -> Response:
        return Response(list(BOOKS.values()))

    def retrieve(self, request: Request, pk: str | None = None) -> Response:
        book = BOOKS.get(int(pk or 0))
        if book is None:
            return Response(status=status.HTTP_404_NOT_FOUND)
        return Response(book)

    def create(self, request: Request) -> Response:
        return Response({"id": 3, **request.data}, status=status.HTTP_201_CREATED)

    @action(detail=True, methods=["post"])
    def publish(self, request: Request, pk: str | None = None) -> Response:
        return Response({"id": int(pk or 0), "published": True})


router = routers.DefaultRouter()
router.register("books", BookViewSet, basename="book")
