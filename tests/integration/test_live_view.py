"""``wide-events status`` and ``top`` against a real gunicorn: what each worker is doing now."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.integration.conftest import VENV_BIN, GunicornServer, StartGunicorn
from tests.integration.events import send

WIDE_EVENTS = str(VENV_BIN / "wide-events")
SLOW_SECONDS = 20


def run(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [WIDE_EVENTS, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def wait_for(condition: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {condition}")
        time.sleep(0.1)


def status(server: GunicornServer) -> dict[str, Any]:
    result = run("status", "--pid", str(server.pid), "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


@pytest.fixture
def busy_server(gunicorn_server: StartGunicorn) -> Iterator[tuple[GunicornServer, str]]:
    """Two sync workers, one of them serving a slow request (its trace id given)."""
    server = gunicorn_server(
        workers=2,
        timeout=60,
        env={"WIDE_EVENTS_MONITOR_INTERVAL": "0.2"},
        # The slow request is still running when the test ends: do not wait for it.
        extra_args=("--graceful-timeout", "1"),
    )
    server.wait_for_workers(2)
    trace_id = uuid.uuid4().hex
    headers = {"traceparent": f"00-{trace_id}-{uuid.uuid4().hex[:16]}-01"}

    def slow_request() -> None:
        with contextlib.suppress(OSError):  # the server stops under it at the test's end
            server.request("GET", f"/slow/?seconds={SLOW_SECONDS}", headers=headers)

    thread = threading.Thread(target=slow_request, daemon=True)
    thread.start()
    yield server, trace_id


def test_status_json_shows_the_busy_workers_request_and_the_idle_one(
    busy_server: tuple[GunicornServer, str],
) -> None:
    server, trace_id = busy_server

    def routed() -> dict[str, Any] | None:
        data = status(server)
        return (
            data if any(w["request"] and w["request"]["route"] for w in data["workers"]) else None
        )

    data = wait_for(routed)
    master = data["master"]
    assert master["pid"] == server.pid
    assert (master["workers_total"], master["workers_busy"]) == (2, 1)
    assert sorted(worker["pid"] for worker in data["workers"]) == sorted(server.worker_pids())
    (busy,) = [worker for worker in data["workers"] if worker["request"]]
    (idle,) = [worker for worker in data["workers"] if not worker["request"]]
    request = busy["request"]
    assert request["method"] == "GET"
    assert request["route"] == "slow/"
    assert request["path"] == "/slow/"
    assert request["trace_id"] == trace_id
    assert 0 < request["elapsed_ms"] < SLOW_SECONDS * 1000
    assert busy["state"] == "in view"
    assert 0 < busy["time_left_s"] <= 60
    assert idle["state"] == "idle"
    assert idle["in_flight"] == []


def test_status_text_names_the_route(busy_server: tuple[GunicornServer, str]) -> None:
    server, trace_id = busy_server
    wait_for(lambda: any(w["request"] for w in status(server)["workers"]))
    result = run("status", "--pid", str(server.pid))
    assert result.returncode == 0
    assert f"gunicorn master {server.pid}" in result.stdout
    assert "slow/" in result.stdout
    assert trace_id in result.stdout


def test_status_of_a_worker_pid_shows_its_master(busy_server: tuple[GunicornServer, str]) -> None:
    server, _ = busy_server
    result = run("status", "--pid", str(server.worker_pids()[0]), "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["master"]["pid"] == server.pid


def test_status_of_a_process_that_is_no_such_gunicorn_fails_in_one_line() -> None:
    result = run("status", "--pid", str(os.getpid()))
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert "is not a gunicorn master running gunicorn-django-wide-events" in result.stderr
    assert "Traceback" not in result.stderr
    missing = run("status", "--pid", "999999999")
    assert (missing.returncode, missing.stderr) == (1, "wide-events: no process 999999999\n")


def test_the_live_view_can_be_turned_off(gunicorn_server: StartGunicorn) -> None:
    server = gunicorn_server(env={"WIDE_EVENTS_LIVE_VIEW": "false"})
    assert send(server, "/ok/").status == 200
    result = run("status", "--pid", str(server.pid))
    assert result.returncode == 1
    assert "WIDE_EVENTS_LIVE_VIEW is off" in result.stderr


def test_the_board_is_owner_only(busy_server: tuple[GunicornServer, str]) -> None:
    server, _ = busy_server
    fd_dir = f"/proc/{server.pid}/fd"
    (mode,) = {
        os.stat(os.path.join(fd_dir, name)).st_mode & 0o777
        for name in os.listdir(fd_dir)
        if "wide-events-board" in os.readlink(os.path.join(fd_dir, name))
    }
    assert mode == 0o600


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_top_draws_the_request_in_a_real_terminal(
    busy_server: tuple[GunicornServer, str],
) -> None:
    server, _ = busy_server
    wait_for(lambda: any(w["request"] for w in status(server)["workers"]))
    session = f"wide-events-{uuid.uuid4().hex[:8]}"
    tmux = ["tmux", "-L", session]
    subprocess.run(
        [*tmux, "new-session", "-d", "-s", session, "-x", "160", "-y", "30",
         f"{WIDE_EVENTS} top --pid {server.pid}"],
        check=True, timeout=30,
    )  # fmt: skip
    try:

        def screen() -> str:
            return subprocess.run(
                [*tmux, "capture-pane", "-p", "-t", session],
                capture_output=True, text=True, check=False, timeout=10,
            ).stdout  # fmt: skip

        def drawn_route() -> str | None:
            text = screen()
            return text if "slow/" in text else None

        drawn = wait_for(drawn_route)
        assert f"gunicorn master {server.pid}" in drawn
        assert "sort: deadline" in drawn
        subprocess.run([*tmux, "send-keys", "-t", session, "s"], check=True, timeout=10)
        wait_for(lambda: "sort: id" in screen())
        subprocess.run([*tmux, "resize-window", "-t", session, "-x", "100", "-y", "20"],
                       check=False, timeout=10)  # fmt: skip
        wait_for(lambda: "sort: id" in screen())
        subprocess.run([*tmux, "send-keys", "-t", session, "q"], check=True, timeout=10)
        wait_for(
            lambda: (
                subprocess.run(
                    [*tmux, "has-session", "-t", session], capture_output=True, check=False
                ).returncode
                != 0
            )
        )
    finally:
        subprocess.run([*tmux, "kill-server"], capture_output=True, check=False, timeout=10)


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_top_says_plainly_when_the_master_goes_away(gunicorn_server: StartGunicorn) -> None:
    server = gunicorn_server(extra_args=("--graceful-timeout", "1"))
    session = f"wide-events-{uuid.uuid4().hex[:8]}"
    tmux = ["tmux", "-L", session]
    subprocess.run(
        [*tmux, "new-session", "-d", "-s", session, "-x", "160", "-y", "30",
         f"{WIDE_EVENTS} top --pid {server.pid}; echo top exited with $?; sleep 60"],
        check=True, timeout=30,
    )  # fmt: skip
    try:

        def screen() -> str:
            return subprocess.run(
                [*tmux, "capture-pane", "-p", "-t", session],
                capture_output=True, text=True, check=False, timeout=10,
            ).stdout  # fmt: skip

        wait_for(lambda: f"gunicorn master {server.pid}" in screen())
        server.stop()

        def exited() -> str | None:
            text = screen()
            return text if "top exited" in text else None

        text = wait_for(exited)
        assert f"wide-events: gunicorn master {server.pid} has exited" in text
        assert "top exited with 1" in text
        assert "Traceback" not in text
    finally:
        subprocess.run([*tmux, "kill-server"], capture_output=True, check=False, timeout=10)
