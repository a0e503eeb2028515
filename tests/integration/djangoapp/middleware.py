"""Test-only authentication: the user comes from a request header.

Wide events record who made a request; the tests need authenticated and
anonymous requests without sessions, a user table or a login flow, so a
header stands in for real authentication.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from django.contrib.auth.models import AnonymousUser
from django.http import HttpRequest, HttpResponse

TEST_USER_HEADER = "X-Test-User"


@dataclass(frozen=True)
class HeaderUser:
    """Just enough of a user for code that reads ``pk``/``is_authenticated``."""

    pk: int | str
    is_authenticated: bool = True
    is_anonymous: bool = False

    @property
    def id(self) -> int | str:
        return self.pk


class HeaderUserMiddleware:
    """Set ``request.user`` from ``X-Test-User: <id>``, else ``AnonymousUser``.

    A numeric id becomes an ``int`` (like a default Django primary key).
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        raw = request.headers.get(TEST_USER_HEADER)
        if raw:
            raw = raw.strip()
            request.user = HeaderUser(pk=int(raw) if raw.isdigit() else raw)
        else:
            request.user = AnonymousUser()
        return self.get_response(request)
