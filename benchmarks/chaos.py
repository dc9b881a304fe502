"""The chaos run: the host project under load while its database, cache and workers fail.

    .venv/bin/python -m benchmarks.chaos            # 3 minutes
    .venv/bin/python -m benchmarks.chaos --quick    # 30 seconds (the test command runs this)

Serves the host project (``aa_project``) as deployed: ``scripts/serve.sh``'s
server (uvicorn's supervisor, which starts a new worker when one dies) with
two workers, on PostgreSQL (database ``sessions_chaos`` on
``BENCH_POSTGRES_SERVER``, created if missing) and a private
``redis-server`` as Django's cache. 32 clients (``HttpSessionStore``, half
with an operator's token, half with agent keys) save, load and delete at
random, one record or a few at a time, over a shared set of ids, while
faults are injected on a schedule:

- ``db-kill``: every database connection of the app terminated (``pg_terminate_backend``);
- ``redis-kill``: the Redis server killed (SIGKILL), started again 1.5 s later;
- ``worker-kill``: a worker process SIGKILLed (the supervisor starts another);
- ``half-request``: a client sends half a request and stalls for 8 s;
- ``slow-db``: the session table locked for 3 s (every call that needs it waits).

Calls on one id are serialised by the driver, so a model knows, for each
id, what it may hold: the value of the last acknowledged write, or (after a
call that failed, whose effect is unknown) any of the values it might have
left. Every read is checked against the model as it happens, and at the end
everything is read back. Reported: operations by kind and outcome, every
HTTP status seen (retried attempts included), faults injected, the longest
time from each kind of fault to its last failed call, Redis' connection
count, and the two numbers that must be 0: acknowledged writes lost and
acknowledged deletes resurrected. Exits 1 if either is not 0, if a read
returned a value never written, or if any answer was a 500. Only 127.0.0.1
is targeted; every load is bounded by ``--seconds``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx
import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.run import postgres_url  # noqa: E402
from tests.servers import RedisServer, free_port  # noqa: E402

ABSENT = None
FAULTS = ("db-kill", "redis-kill", "worker-kill", "half-request", "slow-db")
READ_TIMEOUT = 3  # the server's SERVER_READ_TIMEOUT in this run: a stalled request is cut off then
AGENTS = (1, 2, 3, 4)


@dataclass
class Tally:
    """What happened, for the report."""

    operations: collections.Counter[str] = field(default_factory=collections.Counter)
    statuses: collections.Counter[int] = field(default_factory=collections.Counter)
    failures: collections.Counter[str] = field(default_factory=collections.Counter)
    # Every HTTP attempt that failed (a 5xx or a connection error), retried or not: (when, what).
    attempt_failures: list[tuple[float, str]] = field(default_factory=list)
    faults: list[tuple[str, float]] = field(default_factory=list)
    wrong_reads: list[str] = field(default_factory=list)
    # What each fault did, checked: backends terminated, workers back, stalls cut off by the server.
    effects: collections.Counter[str] = field(default_factory=collections.Counter)
    redis_connections: int = 0


class Model:
    """Per id, the values it may hold now (``ABSENT`` for no row); calls on an id are serialised."""

    def __init__(self, ids: list[str]) -> None:
        self.possible: dict[str, set[tuple[int, int] | None]] = {sid: {ABSENT} for sid in ids}
        self.acknowledged: dict[
            str, str
        ] = {}  # id -> "write" | "delete": the last call, if it was acknowledged
        self.locks = {sid: asyncio.Lock() for sid in ids}

    def wrote(self, sid: str, value: tuple[int, int] | None, acknowledged: bool) -> None:
        if acknowledged:
            self.possible[sid] = {value}
            self.acknowledged[sid] = "write" if value is not ABSENT else "delete"
        else:
            self.possible[sid].add(value)
            self.acknowledged.pop(sid, None)

    def read(self, sid: str, value: tuple[int, int] | None) -> str | None:
        """Check a read against the model and narrow it; a message if the value was impossible."""
        if value not in self.possible[sid]:
            return f"{sid}: read {value}, the model allows {sorted(map(str, self.possible[sid]))}"
        self.possible[sid] = {value}  # what a read saw is as good as an acknowledgement
        self.acknowledged[sid] = "write" if value is not ABSENT else "delete"
        return None


def prepare_database(url: str) -> dict[str, list[str]]:
    """Migrate, and make the credentials: one operator token and agent keys covering every agent."""
    os.environ["BENCH_DATABASE_URL"] = url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchmarks.settings")
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Permission
    from django.core.management import call_command
    from rest_framework.authtoken.models import Token

    from sessions_app.models import AgentKey, ExecutionSession

    call_command("migrate", verbosity=0)
    ExecutionSession.objects.all().delete()
    user, _ = get_user_model().objects.get_or_create(username="chaos")
    user.user_permissions.set(Permission.objects.filter(codename__endswith="_executionsession"))
    token, _ = Token.objects.get_or_create(user=user)
    keys = [AgentKey.objects.create_key(name=f"chaos {n}", agent_ids=list(AGENTS))[1] for n in range(4)]
    return {"token": [token.key], "key": keys}


def start_server(
    database_url: str, redis_url: str, port: int, workers: int, metrics: str, log: IO[bytes]
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "DJANGO_REDIS_URL": redis_url,
        "DJANGO_SETTINGS_MODULE": "aa_project.settings",
        "DJANGO_DEBUG": "0",
        "DJANGO_SECRET_KEY": "chaos-" + os.urandom(16).hex(),
        "DJANGO_SECURE_SSL_REDIRECT": "0",
        "API_THROTTLE_USER": "100000000/minute",
        "PROMETHEUS_MULTIPROC_DIR": metrics,
        "WEB_CONCURRENCY": str(workers),
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "SERVER_READ_TIMEOUT": str(READ_TIMEOUT),
    }
    env.pop("BENCH_DATABASE_URL", None)
    return subprocess.Popen(
        ["bash", "scripts/serve.sh"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def wait_until_up(base: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/api/health/", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError("the server did not come up")


def worker_pids(server: subprocess.Popen[bytes]) -> list[int]:
    """The supervisor's worker processes (not multiprocessing's resource tracker)."""
    children = Path(f"/proc/{server.pid}/task/{server.pid}/children")
    try:
        pids = [int(pid) for pid in children.read_text().split()]
    except OSError:
        return []
    workers = []
    for pid in pids:
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"resource_tracker" not in command:
            workers.append(pid)
    return workers


# -- faults ------------------------------------------------------------------------


async def inject(
    fault: str,
    *,
    database_url: str,
    redis: RedisServer,
    server: subprocess.Popen[bytes],
    port: int,
    workers: int,
    tally: Tally,
) -> None:
    if fault == "db-kill":
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
            cursor = await conn.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            row = await cursor.fetchone()
            tally.effects["database connections terminated"] += int(row[0]) if row else 0
    elif fault == "redis-kill":
        tally.redis_connections += int(str(redis.stats()["total_connections_received"]))
        redis.kill()
        await asyncio.sleep(1.5)
        await asyncio.to_thread(redis.start)
    elif fault == "worker-kill":
        pids = worker_pids(server)
        if not pids:
            raise RuntimeError("found no worker process to kill")
        killed = random.choice(pids)
        os.kill(killed, signal.SIGKILL)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            now = worker_pids(server)
            if killed not in now and len(now) >= workers:
                tally.effects["workers started again by the supervisor"] += 1
                break
    elif fault == "half-request":
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b'PUT /api/sessions/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n{"agent')
        await writer.drain()
        try:  # the server must close it (SERVER_READ_TIMEOUT), not this client
            await asyncio.wait_for(reader.read(), READ_TIMEOUT + 3)
            tally.effects["stalled requests cut off by the server"] += 1
        except TimeoutError:
            tally.effects["stalled requests NOT cut off"] += 1
        writer.close()
    elif fault == "slow-db":
        async with await psycopg.AsyncConnection.connect(database_url) as conn, conn.transaction():
            await conn.execute("LOCK TABLE sessions_app_executionsession IN ACCESS EXCLUSIVE MODE")
            await asyncio.sleep(3)


async def fault_schedule(until: float, every: float, tally: Tally, **where: Any) -> None:
    running: list[asyncio.Task[None]] = []
    for n in range(10_000):
        await asyncio.sleep(every)
        if time.monotonic() + 2 > until:
            break
        fault = FAULTS[n % len(FAULTS)]
        tally.faults.append((fault, time.monotonic()))
        running.append(asyncio.create_task(inject(fault, tally=tally, **where)))
    await asyncio.gather(*running)


# -- clients -----------------------------------------------------------------------


async def client_loop(
    number: int,
    base: str,
    credentials: dict[str, list[str]],
    model: Model,
    ids: list[str],
    until: float,
    tally: Tally,
    counter: list[int],
) -> None:
    from sessions_app.client import HttpSessionStore
    from sessions_app.storage import NotFound, SessionId, SessionRecord, StorageError

    rng = random.Random(number)

    async def seen(response: httpx.Response) -> None:
        tally.statuses[response.status_code] += 1
        if response.status_code >= 500:
            tally.attempt_failures.append((time.monotonic(), str(response.status_code)))

    http = httpx.AsyncClient(timeout=10, event_hooks={"response": [seen]}, transport=CountingTransport(tally))
    kind = "token" if number % 2 == 0 else "key"
    secret = credentials[kind][number % len(credentials[kind])]
    auth = {"token": secret} if kind == "token" else {"api_key": secret}
    store = HttpSessionStore(f"{base}/api/sessions/", client=http, retries=3, timeout=10, **auth)
    try:
        while time.monotonic() < until:
            operation = rng.choice(
                ["save", "save", "load", "load", "delete", "save_many", "load_many", "delete_many"]
            )
            chosen = sorted(rng.sample(ids, 3 if operation.endswith("_many") else 1))
            for sid in chosen:
                await model.locks[sid].acquire()
            try:
                counter[0] += 1
                values = {sid: (rng.choice(AGENTS), counter[0] * 10 + n) for n, sid in enumerate(chosen)}
                records = [SessionRecord(SessionId.parse(sid), *values[sid]) for sid in chosen]
                try:
                    if operation == "save":
                        await store.save(records[0])
                    elif operation == "save_many":
                        await store.save_many(records)
                    elif operation == "delete":
                        await store.delete(SessionId.parse(chosen[0]))  # the detail route
                    elif operation == "delete_many":
                        await store.delete_many([SessionId.parse(sid) for sid in chosen])
                    elif operation == "load":
                        try:
                            found = await store.load(SessionId.parse(chosen[0]))
                            answer: dict[str, tuple[int, int] | None] = {
                                chosen[0]: (found.agent_id, found.started_at_ns)
                            }
                        except NotFound:
                            answer = {chosen[0]: ABSENT}
                    else:
                        loaded = await store.load_many([SessionId.parse(sid) for sid in chosen])
                        found_by_id = {str(sid): (r.agent_id, r.started_at_ns) for sid, r in loaded.items()}
                        answer = {sid: found_by_id.get(sid, ABSENT) for sid in chosen}
                    acknowledged = True
                except StorageError as exc:
                    acknowledged = False
                    tally.failures[f"{type(exc).__name__}: {_status_of(exc)}"] += 1
                tally.operations[f"{operation} {'ok' if acknowledged else 'failed'}"] += 1
                if operation.startswith(("save", "delete")):
                    # A failed write may or may not have happened: the model keeps both.
                    for sid in chosen:
                        written = values[sid] if operation.startswith("save") else ABSENT
                        model.wrote(sid, written, acknowledged=acknowledged)
                elif acknowledged:
                    for sid, value in answer.items():
                        wrong = model.read(sid, value)
                        if wrong:
                            tally.wrong_reads.append(wrong)
            finally:
                for sid in chosen:
                    model.locks[sid].release()
    finally:
        await store.aclose()
        await http.aclose()


class CountingTransport(httpx.AsyncHTTPTransport):
    """httpx's transport, noting every attempt that failed to connect or to get an answer (retries too)."""

    def __init__(self, tally: Tally) -> None:
        super().__init__()
        self.tally = tally

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            return await super().handle_async_request(request)
        except httpx.TransportError as exc:
            self.tally.attempt_failures.append((time.monotonic(), type(exc).__name__))
            raise


def _status_of(exc: BaseException) -> str:
    text = str(exc)
    marker = text.find("HTTP ")
    return text[marker + 5 : marker + 8] if marker >= 0 else "connection"


# -- the run -----------------------------------------------------------------------


def recovery_by_fault(tally: Tally) -> dict[str, float]:
    """For each kind of fault, the longest time from one injection to the last failed attempt before the next.

    Attempts, not calls: a call that the client retried into a success still
    counts its failed attempts (a 5xx or a connection error) here.
    """
    longest: dict[str, float] = {fault: 0.0 for fault in FAULTS}
    moments = sorted(tally.faults, key=lambda item: item[1])
    for index, (fault, started) in enumerate(moments):
        ends = moments[index + 1][1] if index + 1 < len(moments) else float("inf")
        after = [moment for moment, _ in tally.attempt_failures if started <= moment < ends]
        if after:
            longest[fault] = max(longest[fault], max(after) - started)
    return longest


async def run(
    args: argparse.Namespace,
    base: str,
    credentials: dict[str, list[str]],
    database_url: str,
    redis: RedisServer,
    server: subprocess.Popen[bytes],
    port: int,
) -> tuple[Tally, Model]:
    ids = [str(uuid.uuid4()) for _ in range(args.ids)]
    model = Model(ids)
    tally = Tally()
    until = time.monotonic() + args.seconds
    counter = [0]
    clients = [
        client_loop(n, base, credentials, model, ids, until, tally, counter) for n in range(args.clients)
    ]
    every = (args.seconds - 4) / len(FAULTS) if args.quick else args.fault_every
    faults = fault_schedule(
        until,
        every,
        tally,
        database_url=database_url,
        redis=redis,
        server=server,
        port=port,
        workers=args.workers,
    )
    await asyncio.gather(*clients, faults)
    return tally, model


async def read_back(base: str, token: str, model: Model) -> dict[str, int]:
    from sessions_app.client import HttpSessionStore
    from sessions_app.storage import SessionId

    async with HttpSessionStore(f"{base}/api/sessions/", token=token, retries=5) as store:
        stored = await store.load_many([SessionId.parse(sid) for sid in model.possible])
    counts = collections.Counter[str]()
    for sid, possible in model.possible.items():
        record = stored.get(SessionId.parse(sid))
        value = None if record is None else (record.agent_id, record.started_at_ns)
        if value in possible:
            counts["as the model allows"] += 1
            if len(possible) > 1:  # a failed call left it open which value it holds
                counts["  of which open after a failed call"] += 1
        elif model.acknowledged.get(sid) == "write":
            counts["lost acknowledged writes"] += 1
        elif model.acknowledged.get(sid) == "delete":
            counts["resurrected acknowledged deletes"] += 1
        else:
            counts["other mismatches"] += 1
    return dict(counts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="30 seconds, each fault once")
    parser.add_argument("--seconds", type=float, default=180.0)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--ids", type=int, default=300)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--fault-every", type=float, default=6.0, help="seconds between faults (full run)")
    args = parser.parse_args()
    if args.quick:
        args.seconds = 30.0
    database_url = postgres_url("sessions_chaos")
    if database_url is None:
        print("RESULT " + json.dumps({"skipped": "PostgreSQL is not reachable"}))
        raise SystemExit(0 if not os.environ.get("CI") else 1)
    credentials = prepare_database(database_url)
    port = free_port()
    with tempfile.TemporaryDirectory() as scratch:
        redis = RedisServer(scratch).start()
        metrics = Path(scratch) / "metrics"
        metrics.mkdir()
        log_path = Path(scratch) / "server.log"
        log = log_path.open("wb")
        server = start_server(database_url, redis.url, port, args.workers, str(metrics), log)
        base = f"http://127.0.0.1:{port}"
        try:
            wait_until_up(base)
            started = time.monotonic()
            tally, model = asyncio.run(run(args, base, credentials, database_url, redis, server, port))
            elapsed = time.monotonic() - started
            wait_until_up(base)  # a killed worker is back
            final = asyncio.run(read_back(base, credentials["token"][0], model))
            # Redis counts from its last start: add what it had counted before each kill.
            redis_connections = tally.redis_connections + int(
                str(redis.stats()["total_connections_received"])
            )
        except BaseException:
            print("the server's log, last lines:\n" + log_path.read_text(errors="replace")[-3000:])
            raise
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
            redis.kill()
            log.close()
    report(args, tally, final, elapsed, redis_connections)


def report(
    args: argparse.Namespace, tally: Tally, final: dict[str, int], elapsed: float, redis_connections: object
) -> None:
    recovery = recovery_by_fault(tally)
    calls = sum(tally.operations.values())
    print(
        f"chaos run: {elapsed:.0f} s, {args.clients} clients, {args.workers} workers, {args.ids} shared ids, "
        f"{calls} calls ({calls / elapsed:.0f}/s)"
    )
    print("\noperations")
    for name, count in sorted(tally.operations.items()):
        print(f"  {name:28} {count:8}")
    print("\nHTTP statuses seen (every attempt, retries included)")
    for status, count in sorted(tally.statuses.items()):
        print(f"  {status:<28} {count:8}")
    print("\ncalls that failed after their retries, by error and status")
    for name, count in sorted(tally.failures.items()) or [("none", 0)]:
        print(f"  {name:28} {count:8}")
    print("\nfaults injected, and the longest time from one to its last failed attempt (retries included)")
    injected = collections.Counter(fault for fault, _ in tally.faults)
    for fault in FAULTS:
        print(f"  {fault:28} {injected[fault]:8}   recovered within {recovery[fault]:.2f} s")
    print("\nwhat the faults did (checked)")
    for name, count in sorted(tally.effects.items()):
        print(f"  {name:44} {count:8}")
    failed_attempts = collections.Counter(what for _, what in tally.attempt_failures)
    print("\nfailed attempts (5xx or connection errors, each retry counted), by kind")
    for name, count in sorted(failed_attempts.items()) or [("none", 0)]:
        print(f"  {name:28} {count:8}")
    print(f"\nRedis connections accepted over the run (all its starts): {redis_connections}")
    print("\nread back at the end")
    for name in (
        "as the model allows",
        "  of which open after a failed call",
        "lost acknowledged writes",
        "resurrected acknowledged deletes",
        "other mismatches",
    ):
        print(f"  {name:34} {final.get(name, 0):8}")
    print(f"  {'reads of a value never written':34} {len(tally.wrong_reads):8}")
    for wrong in tally.wrong_reads[:5]:
        print(f"    {wrong}")
    lost = final.get("lost acknowledged writes", 0) + final.get("resurrected acknowledged deletes", 0)
    errors_500 = tally.statuses.get(500, 0)
    slowest = max(recovery.values(), default=0.0)
    print(
        f"\n== targets: lost + resurrected = {lost} (must be 0); 500 answers = {errors_500} (must be 0); "
        f"longest recovery {slowest:.2f} s (target <= 2 s): " + ("held" if slowest <= 2 else "NOT held")
    )
    result = {
        "calls": calls,
        "operations": tally.operations,
        "statuses": tally.statuses,
        "failures": tally.failures,
        "faults": dict(injected),
        "recovery_s": recovery,
        "final": final,
        "wrong_reads": len(tally.wrong_reads),
        "redis_connections": redis_connections,
    }
    print("RESULT " + json.dumps(result))
    if (
        lost
        or errors_500
        or tally.wrong_reads
        or final.get("other mismatches")
        or tally.effects.get("stalled requests NOT cut off")
    ):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
