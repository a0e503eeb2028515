"""The worker side: everything that runs in a forked gunicorn worker.

The request path (``wsgi``: one event per request, from the WSGI call to the last byte), the
event itself (``event``), what the request says over HTTP (``http``, ``propagation``), the
light SERVER span (``span``), Django's route, view, user and database work (``django``,
``django_db``, ``contrib_django``), requests gunicorn answers itself (``rejected``), the HTTP
server metrics of every event (``metrics``, ``histogram``), the worker's board slot
(``slot``), the watchdog that turns a stuck request into a timeout event (``watchdog``),
``add_fields`` (``fields``), and the hooks' worker part (``worker``). Never imports the master
side.
"""
