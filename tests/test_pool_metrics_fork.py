"""The pool gauges in a child made by ``os.fork()``, under prometheus-client's multiprocess mode.

The child's gauges start from 0 (a file of its own); the connections it
inherits are not its own, so they must not be subtracted from them.
Runs in a process of its own: multiprocess mode is chosen when
prometheus-client is imported. The connections are stand-ins: only the
counting is under test, and it needs no database.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

PROBE = textwrap.dedent(
    """
    import asyncio, json, os, sys, types

    from prometheus_client import CollectorRegistry, multiprocess
    from psycopg.pq import TransactionStatus

    from sessions_app.storage import metrics
    from sessions_app.storage.db.postgresql import LeanPool, PostgresPath


    class StandIn:
        closed = False
        pgconn = types.SimpleNamespace(
            socket=-1, finish=lambda: None, transaction_status=TransactionStatus.IDLE
        )


    class Spec:
        async def connect(self):
            return StandIn()


    def own():
        return {"open": metrics._pool_open._value.get(), "in_use": metrics._pool_in_use._value.get()}


    def total():
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return {
            sample.labels["state"]: sample.value
            for family in registry.collect()
            if family.name == "sessions_store_pool_connections"
            for sample in family.samples
        }


    async def main():
        path = PostgresPath("default")
        pool = LeanPool(Spec(), 4, 1.0)
        path._pools[asyncio.get_running_loop()] = pool
        lent = [(await pool.acquire())[0] for _ in range(3)]
        pool.release(lent.pop())  # 3 open, 2 of them lent
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read_end)
            for conn in lent:  # a task of the parent's loop giving back what it was lent
                pool.release(conn)
            os.write(write_end, json.dumps({"own": own(), "total": total()}).encode())
            os._exit(0)
        os.close(write_end)
        with os.fdopen(read_end, "rb") as pipe:
            child = json.loads(pipe.read())
        os.waitpid(pid, 0)
        print(json.dumps({"parent": own(), "child": child}))


    asyncio.run(main())
    """
)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork() is POSIX only")
def test_pool_gauges_stay_at_or_above_zero_in_a_forked_child_in_multiprocess_mode(tmp_path: Path):
    metrics_dir = tmp_path / "prometheus"
    metrics_dir.mkdir()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    done = subprocess.run(
        [sys.executable, "-c", PROBE],
        env=env,
        cwd=Path(__file__).resolve().parent.parent,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["parent"] == {"open": 3, "in_use": 2}
    assert seen["child"]["own"] == {"open": 0, "in_use": 0}  # none of them is the child's
    assert seen["child"]["total"] == {"open": 3, "in_use": 2}  # parent's and child's, added up
