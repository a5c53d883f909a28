"""The real server (uvicorn in a subprocess) against clients that stall: bodies that never come, a flood of them,
and a body that trickles in. Raw sockets, so the test controls every byte and every pause."""

from __future__ import annotations

import http.client
import json
import shutil
import socket
import time
import uuid
from collections.abc import Iterator

import pytest

from dedup.api.app import MAX_UPLOADS_PER_CLIENT
from dedup.service import ingest_folder, open_store

from .conftest import SAMPLE_CATALOG, SAMPLE_QUERIES
from .servers import running_server

#: The deadlines the server under test runs with (the defaults are 5 s and 60 s; shorter keeps the test short).
IDLE_S = 1.0
TOTAL_S = 3.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    base = tmp_path_factory.mktemp("limits")
    catalog = base / "catalog"
    shutil.copytree(SAMPLE_CATALOG / "products" / "animals", catalog)
    store_dir = base / "store"
    with open_store(store_dir) as store:
        ingest_folder(store, catalog)
    options = f"api_key='', body_idle_timeout_s={IDLE_S}, body_timeout_s={TOTAL_S}"
    with running_server(store_dir, base / "server.log", options) as url:
        host, port = url.removeprefix("http://").split(":")
        yield host, int(port)


def _stalled(host: str, port: int, declared: int = 100_000) -> socket.socket:
    """A connection that sends the headers of an upload and the first bytes of its body, then nothing."""
    sock = socket.create_connection((host, port), timeout=15)
    head = (
        f"POST /api/v1/query HTTP/1.1\r\nHost: {host}\r\nContent-Type: multipart/form-data; boundary=b\r\n"
        f"Content-Length: {declared}\r\n\r\n--b\r\n"
    )
    sock.sendall(head.encode())
    return sock


def _answer(sock: socket.socket) -> tuple[int, dict[str, object], float]:
    """The status and JSON body the server sends on ``sock`` (read to its close), and when it came."""
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            break
        if not chunk:
            break
        data += chunk
        if b"\r\n\r\n" in data:
            head, _, body = data.partition(b"\r\n\r\n")
            lengths = [int(v.split(b":")[1]) for v in head.split(b"\r\n") if v.lower().startswith(b"content-length")]
            length = lengths[0] if lengths else None
            if length is not None and len(body) >= length:
                break
    when = time.monotonic()
    sock.close()
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ")[1]) if head else 0
    return status, (json.loads(body) if body else {}), when


def _query(host: str, port: int, source: str = "127.0.0.1") -> int:
    """A whole, valid query upload from ``source``; returns its status."""
    boundary = uuid.uuid4().hex
    photo = (SAMPLE_QUERIES / "farm__phone.jpg").read_bytes()
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="q.jpg"\r\n'
            "Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        + photo
        + f"\r\n--{boundary}--\r\n".encode()
    )
    conn = http.client.HTTPConnection(host, port, timeout=30, source_address=(source, 0))
    try:
        conn.request("POST", "/api/v1/query", body, {"Content-Type": f"multipart/form-data; boundary={boundary}"})
        return conn.getresponse().status
    finally:
        conn.close()


def test_stalled_uploads_are_dropped_and_other_clients_are_served(server: tuple[str, int]) -> None:
    host, port = server
    started = time.monotonic()
    flood = [_stalled(host, port) for _ in range(3 * MAX_UPLOADS_PER_CLIENT)]
    time.sleep(0.2)
    # While the flood holds this address's slots: another address is served, and so are reads from this one.
    assert _query(host, port, source="127.0.0.2") == 200
    conn = http.client.HTTPConnection(host, port, timeout=10)
    conn.request("GET", "/healthz")
    assert conn.getresponse().status == 200
    conn.close()
    answers = [_answer(s) for s in flood]
    statuses = sorted(a[0] for a in answers)
    assert statuses == [408] * MAX_UPLOADS_PER_CLIENT + [503] * (2 * MAX_UPLOADS_PER_CLIENT)
    for status, body, when in answers:
        assert body["error"]["code"] == {408: "request_timeout", 503: "busy"}[status]  # type: ignore[index]
        if status == 408:
            assert when - started < IDLE_S + 2.0  # dropped within the idle deadline, not left open
    assert _query(host, port) == 200  # the slots are free again


def test_a_trickling_body_meets_the_total_deadline(server: tuple[str, int]) -> None:
    host, port = server
    sock = _stalled(host, port)
    started = time.monotonic()
    sent_until = started
    try:
        while time.monotonic() - started < TOTAL_S + 3:  # a byte every half idle period: never idle, never done
            sock.sendall(b"x")
            sent_until = time.monotonic()
            time.sleep(IDLE_S / 2)
    except (BrokenPipeError, ConnectionResetError):
        pass
    status, body, when = _answer(sock)
    assert status == 408 and body["error"]["code"] == "request_timeout"  # type: ignore[index]
    assert when - started < TOTAL_S + 2.0 and sent_until - started < TOTAL_S + 2.0
