"""A small, real Django project served by gunicorn in the integration tests.

It lives next to the tests (not in the package) because it stands in for a
user's application: the package must work with it without the project
knowing anything about wide events beyond installing the package.
"""
