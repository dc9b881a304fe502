"""A real ASGI server (uvicorn) on a free loopback port, for tests that need one."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
from django.db import connection

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def subprocess_database_url(host: str | None = None, port: int | None = None) -> str:
    """A DATABASE_URL for the database the running test uses (the test database, not the real one)."""
    settings = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{settings['NAME']}"
    scheme, default_user, default_port = {"mysql": ("mysql", "root", 3306)}.get(
        connection.vendor, ("postgres", "postgres", 5432)
    )
    user = settings["USER"] or default_user
    host = host or settings["HOST"] or "127.0.0.1"
    # The connection options the test process was given in its own URL
    # (scripts/test.sh: MariaDB's ?ssl_disabled=true), for the server too.
    query = urlsplit(os.environ.get("DATABASE_URL") or "").query
    return f"{scheme}://{user}@{host}:{port or settings['PORT'] or default_port}/{settings['NAME']}" + (
        f"?{query}" if query else ""
    )


def loopback_settings(port: int) -> dict:
    """The test database's settings, reached at 127.0.0.1:``port`` (without Django's own pool)."""
    options = {k: v for k, v in connection.settings_dict["OPTIONS"].items() if k != "pool"}
    return {**connection.settings_dict, "HOST": "127.0.0.1", "PORT": str(port), "OPTIONS": options}


@contextlib.contextmanager
def uvicorn_server(
    database_url: str, *, workers: int = 1, env: dict[str, str] | None = None, args: tuple[str, ...] = ()
) -> Iterator[str]:
    """Serve the project on 127.0.0.1 until the block ends; yields the base URL once every worker serves."""
    port = free_port()
    log = tempfile.NamedTemporaryFile(prefix="uvicorn-", suffix=".log", delete=False)  # noqa: SIM115
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "aa_project.asgi:application",
         "--host", "127.0.0.1", "--port", str(port), "--no-access-log", "--workers", str(workers),
         "--no-proxy-headers", *args],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": database_url, "DJANGO_SETTINGS_MODULE": "aa_project.settings",
             "API_THROTTLE_USER": "10000000/minute", **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=log,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"

    def not_up(what: str) -> RuntimeError:
        return RuntimeError(f"uvicorn {what}; its log:\n{Path(log.name).read_text(errors='replace')[-3000:]}")

    try:
        deadline = time.monotonic() + 30
        # One client for every probe (each new client loads a TLS context: 20 ms of CPU).
        with httpx.Client(timeout=5) as probe:
            while True:
                try:
                    probe.get(f"{base}/api/health/")  # any answer: the app is loaded and serving
                    break
                except httpx.TransportError:
                    if time.monotonic() > deadline or process.poll() is not None:
                        raise not_up("did not come up") from None
                    time.sleep(0.05)
        # One worker answered; the others may still be loading the app (on a
        # busy machine, for seconds), and every connection would go to that
        # one. Each worker logs its start-up (uvicorn's own log line) as it
        # begins to serve.
        while (
            workers > 1
            and Path(log.name).read_text(errors="replace").count("Application startup complete.") < workers
        ):
            if time.monotonic() > deadline or process.poll() is not None:
                raise not_up(f"did not start all {workers} workers")
            time.sleep(0.05)
        yield base
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()
        os.unlink(log.name)


class RedisServer:
    """A private ``redis-server`` on a free loopback port, to stop and start again at will (same port)."""

    def __init__(self, directory: str | Path) -> None:
        import shutil

        self.executable = shutil.which("redis-server")
        if self.executable is None:
            raise FileNotFoundError("redis-server is not installed (Debian package redis-server)")
        self.directory = str(directory)
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10) -> RedisServer:
        import redis

        self.process = subprocess.Popen(
            [self.executable or "redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", self.directory],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2)
        deadline = time.monotonic() + timeout
        try:
            while True:
                try:
                    client.ping()
                    return self
                except redis.ConnectionError:
                    if time.monotonic() > deadline or self.process.poll() is not None:
                        raise RuntimeError("redis-server did not start") from None
                    time.sleep(0.05)
        finally:
            client.close()

    def kill(self) -> None:
        """SIGKILL: the server is gone at once, as in a crash."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None

    def stats(self) -> dict[str, object]:
        import redis

        with redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2) as client:
            return dict(client.info())

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill()


def worker_count(counter_file: Path, scratch: Path, operation: str) -> float:
    """The ``operation``/``ok`` count in one worker's prometheus multiprocess file, read alone.

    Every worker writes its file at start-up (zeros included), so a file's
    existence says nothing; its count says whether that worker served calls.
    """
    import shutil
    import tempfile

    import prometheus_client
    from prometheus_client import multiprocess

    alone = Path(tempfile.mkdtemp(dir=scratch))
    shutil.copy(counter_file, alone / counter_file.name)
    registry = prometheus_client.CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(alone))  # type: ignore[no-untyped-call]
    for metric in registry.collect():
        for sample in metric.samples:
            if (
                sample.name == "sessions_store_operations_total"
                and sample.labels.get("operation") == operation
                and sample.labels.get("outcome") == "ok"
            ):
                return sample.value
    return 0.0
