"""The demo: serve the example shop under `opentelemetry-instrument gunicorn`, print its events.

No collector needed: the events go to gunicorn's stderr through the package's console exporter
(OTEL_TRACES_EXPORTER=wide_events_console, JSON lines), and this script prints each one.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
REQUESTS = [
    ("/", "a plain page"),
    ("/products/7/?utm_source=mail&token=s3cret", "database queries, a secret in the query"),
    ("/checkout/", "fields added by the app"),
    ("/boom/", "an unhandled exception"),
    ("/stream/", "a streaming response"),
    ("/slow/?seconds=10", "a slow page that runs into gunicorn's 3 s timeout"),
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_listening(port: int, server: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if server.poll() is not None:
            sys.exit(f"gunicorn exited early:\n{log.read_text()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"gunicorn did not start:\n{log.read_text()}")


def events_in(log: Path) -> list[dict[str, object]]:
    events = []
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("{") and '"wide_event.type"' in line:
            events.append(json.loads(line))
    return events


def main() -> None:
    workdir = Path(tempfile.mkdtemp(prefix="wide-events-demo-"))
    log = workdir / "gunicorn.log"
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "WIDE_EVENTS_"))},
        "PYTHONPATH": str(EXAMPLES),
        "DJANGO_SETTINGS_MODULE": "shop.settings",
        "SHOP_DATABASE": str(workdir / "shop.sqlite3"),
        "XDG_RUNTIME_DIR": str(workdir),
        "OTEL_SERVICE_NAME": "shop",
        "OTEL_TRACES_EXPORTER": "wide_events_console",
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "WIDE_EVENTS_CONSOLE_FORMAT": "json",
    }
    command = [
        str(BIN / "opentelemetry-instrument"),
        str(BIN / "gunicorn"),
        "shop.wsgi",
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        "2",
        "--timeout",
        "3",
    ]
    print("$ " + " ".join(["opentelemetry-instrument", "gunicorn", *command[2:]]), flush=True)
    with log.open("wb") as output:
        server = subprocess.Popen(
            command, env=env, cwd=workdir, stdout=output, stderr=output, start_new_session=True
        )
    try:
        wait_until_listening(port, server, log)
        for path, what in REQUESTS:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as answer:
                    answer.read()
                    status = answer.status
            except urllib.error.HTTPError as error:
                status = error.code
            print(f"GET {path:45} -> {status}  ({what})", flush=True)
        deadline = time.monotonic() + 30
        while len(events_in(log)) < len(REQUESTS) and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)
    events = events_in(log)
    for event in events:
        event.pop("exception.stacktrace", None)  # long; it is on the real event
        print(f"\n--- wide event: {event.get('http.request.method')} {event.get('url.path')}")
        print(json.dumps(event, indent=2))
    print(f"\n{len(events)} wide events for {len(REQUESTS)} requests.")
    shutil.rmtree(workdir, ignore_errors=True)
    if len(events) != len(REQUESTS):
        sys.exit(1)


if __name__ == "__main__":
    main()
