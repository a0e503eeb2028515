"""The master side: what the gunicorn master does for the workers it forks.

The board's monitor thread (``monitor``), the event of a worker that died mid-request
(``fallback``), gunicorn's own metrics (``metrics``), and the hooks' master part (``master``).
Never imports the worker side.
"""
