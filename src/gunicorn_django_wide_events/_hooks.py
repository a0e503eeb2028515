"""The table of contents: every gunicorn server hook the package uses, and who does the work.

Each method is gunicorn's hook of that name and shape, and hands over in a line or two to the
master side (``_master/master.py``) or the worker side (``_worker/worker.py``); the two keep
their own state. ``setup`` and ``workers_managed`` are no gunicorn hooks: they run from the
patched ``Arbiter.setup`` and ``Arbiter.manage_workers`` (``_gunicorn.py``), which is also where
these hooks are chained with the user's own, so a gunicorn config file keeps working unchanged.
Every hook is guarded: a failure of ours is logged once and never reaches gunicorn.
"""

from __future__ import annotations

from typing import Any

from ._config import Config
from ._export.handover import ForkSafeExport
from ._guard import never_raise
from ._master.master import MasterSide
from ._worker.worker import WorkerSide


class GunicornHooks:
    """Everything the package does in gunicorn's master and workers, hook by hook."""

    # Hooks where ours runs before the user's: the user's code may rely on what ours sets up.
    RUN_FIRST = ("pre_fork", "post_fork", "worker_abort")
    # Hooks where ours runs after the user's: wrap the final app, flush the last spans.
    RUN_LAST = ("when_ready", "post_worker_init", "child_exit", "worker_exit", "on_exit")

    def __init__(self, config: Config, export: ForkSafeExport) -> None:
        self.master = MasterSide(config, export)
        self.worker = WorkerSide(config, export)

    # -- master: not hooks, run from the patched arbiter -----------------------------------

    def setup(self, server: Any) -> None:
        self.master.setup(server)

    def workers_managed(self, server: Any) -> None:
        self.master.workers_managed(server)

    # -- master hooks ----------------------------------------------------------------------

    def when_ready(self, server: Any) -> None:
        with never_raise("hooks.when_ready"):
            self.master.when_ready(server)

    def pre_fork(self, server: Any, worker: Any) -> None:
        with never_raise("hooks.pre_fork"):
            self.master.pre_fork(worker)

    def child_exit(self, server: Any, worker: Any) -> None:
        with never_raise("hooks.child_exit"):
            self.master.child_exit(server, worker)

    def on_exit(self, server: Any) -> None:
        with never_raise("hooks.on_exit"):
            self.master.on_exit(server)

    # -- worker hooks ----------------------------------------------------------------------

    def post_fork(self, server: Any, worker: Any) -> None:
        with never_raise("hooks.post_fork"):
            self.master.after_fork_in_worker()
            self.worker.post_fork(server, worker, self.master.board)

    def post_worker_init(self, worker: Any) -> None:
        with never_raise("hooks.post_worker_init"):
            self.worker.post_worker_init(worker)

    def worker_abort(self, worker: Any) -> None:
        with never_raise("hooks.worker_abort"):
            self.worker.worker_abort()

    def worker_exit(self, server: Any, worker: Any) -> None:
        with never_raise("hooks.worker_exit"):
            self.worker.worker_exit(server)
