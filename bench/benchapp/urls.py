"""Routes of the benchmark app."""

from __future__ import annotations

from django.urls import path

from benchapp import views

urlpatterns = [
    path("hello/", views.hello, name="hello"),
    path("ahello/", views.async_hello, name="ahello"),
    path("db/", views.db, name="db"),
    path("gc/", views.full_collection, name="gc"),
]
