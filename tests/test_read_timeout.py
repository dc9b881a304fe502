"""A client that sends half a request, or nothing, loses its connection after the read timeout."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from .servers import subprocess_database_url, uvicorn_server

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

READ_TIMEOUT = 1.0


@pytest.fixture(scope="module")
def base(django_db_setup, django_db_blocker) -> Iterator[str]:
    with django_db_blocker.unblock():
        url = subprocess_database_url()
    protocol = ("--http", "aa_project.server:ReadTimeoutHttpToolsProtocol")  # as scripts/serve.sh
    with uvicorn_server(url, env={"SERVER_READ_TIMEOUT": str(READ_TIMEOUT)}, args=protocol) as served:
        yield served


def closed_by_server_within(sock: socket.socket, seconds: float) -> float | None:
    """Seconds until the server closed ``sock`` (None if it was still open after ``seconds``)."""
    started = time.monotonic()
    sock.settimeout(seconds)
    try:
        while sock.recv(4096):
            pass
    except TimeoutError:
        return None
    return time.monotonic() - started


@pytest.mark.parametrize(
    "sent",
    [b"", b"GET /api/health/ HTTP/1.1\r\nHost: 127.0.0.1\r\n", b"PUT /api/sessions/ HTTP/1.1\r\n"
     b"Host: 127.0.0.1\r\nContent-Length: 100\r\n\r\n{\"agent"],
    ids=["nothing", "half the headers", "half the body"],
)  # fmt: skip
def test_a_stalled_client_is_cut_off_and_others_are_served_meanwhile(base, sent):
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as stalled:
        stalled.sendall(sent)
        assert httpx.get(f"{base}/api/health/", timeout=5).status_code == 200
        waited = closed_by_server_within(stalled, READ_TIMEOUT * 10)
    assert waited is not None, "the server kept the stalled connection open"


def test_a_slow_but_complete_request_within_the_timeout_is_served(base):
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as slow:
        for piece in (b"GET /api/health/ HTTP/1.1\r\n", b"Host: 127.0.0.1\r\n", b"Connection: close\r\n\r\n"):
            slow.sendall(piece)
            time.sleep(READ_TIMEOUT / 5)
        slow.settimeout(5)
        answer = b""
        while chunk := slow.recv(4096):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200")


def test_a_kept_alive_connection_is_not_cut_between_requests(base):
    """The read timeout covers a request's arrival, not the idle time after an answer (keep-alive's)."""
    host, port = base.removeprefix("http://").split(":")
    request = b"GET /api/health/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    with socket.create_connection((host, int(port))) as kept:
        kept.settimeout(5)
        for round_trip in range(2):
            if round_trip:
                time.sleep(READ_TIMEOUT * 2)  # idle past the read timeout, within keep-alive's 5 s
            kept.sendall(request)
            answer = b""
            while b"\r\n\r\n" not in answer or len(answer.split(b"\r\n\r\n", 1)[1]) < content_length(answer):
                chunk = kept.recv(4096)
                assert chunk, "the server closed the kept-alive connection"
                answer += chunk
            assert answer.startswith(b"HTTP/1.1 200")


def content_length(answer: bytes) -> int:
    head = answer.split(b"\r\n\r\n", 1)[0].lower()
    for line in head.split(b"\r\n"):
        if line.startswith(b"content-length:"):
            return int(line.split(b":", 1)[1])
    return 1 << 30
