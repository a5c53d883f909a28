"""The real server for tests: uvicorn in a subprocess on a free loopback port, over a store folder."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A loopback port nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until_up(url: str, proc: subprocess.Popen[bytes], log: Path, timeout_s: float = 180.0) -> None:
    """Return once ``url``/healthz answers 200; fail the test (with the server's log) if it exits or never does."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=2) as r:  # noqa: S310 - loopback only
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            time.sleep(0.25)
    pytest.fail(f"the server did not answer within {timeout_s:.0f} s:\n{log.read_text()[-3000:]}")


@contextmanager
def running_server(
    store_dir: Path, log: Path, app_options: str = "", env: dict[str, str] | None = None
) -> Iterator[str]:
    """``create_app(open_store(store_dir), <app_options>)`` served by uvicorn; yields its base URL.

    ``app_options`` is Python keyword-argument text for ``create_app`` (for example ``"api_key=''"``).
    """
    port = free_port()
    code = (
        "import sys, uvicorn\nfrom dedup.api import create_app\nfrom dedup.service import open_store\n"
        f"app = create_app(open_store(sys.argv[1]), {app_options})\n"
        "uvicorn.run(app, host='127.0.0.1', port=int(sys.argv[2]), log_level='warning')"
    )
    environ = {k: v for k, v in os.environ.items() if k != "DEDUP_API_KEY"} | (env or {})
    environ["PYTHONPATH"] = str(ROOT)
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", code, str(store_dir), str(port)], env=environ, stdout=out, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(url, proc, log)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
