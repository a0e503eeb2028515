"""The live view: ``wide-events top`` and ``wide-events status``, in a process of their own.

They find a running gunicorn's board through ``/proc`` (``find``), read it once into plain data
(``snapshot``) and show it as text or JSON (``status``) or full screen (``top``); ``cli`` is the
console script. They only read the board: nothing here imports the worker, master or export side.
"""
