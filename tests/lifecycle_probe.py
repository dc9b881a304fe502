"""Runs the store in a process of its own, for the lifecycle tests: ``python -m tests.lifecycle_probe MODE``.

``fork``: the parent uses the store, forks; the child uses the inherited
store and exits normally; the parent then uses its own connection again.
Prints JSON with what each side saw.

``exit``: hands the store a batch of ``ROWS`` records and leaves at once
(the loop closed and the process ending while the batch is in flight, the
connections never closed by hand). The test counts the rows afterwards.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
import warnings

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "aa_project.settings")
django.setup()

from django.db import connection  # noqa: E402

from sessions_app.storage import DjangoSessionStore, SessionId, SessionRecord  # noqa: E402

ROWS = 5_000


async def identity(store: DjangoSessionStore) -> str:
    """Which server session (PostgreSQL) or thread (SQLite) served the call."""
    if connection.vendor == "postgresql":
        row = await store.path.fetchone(("SELECT pg_backend_pid()", ()))
        assert row is not None
        return f"backend {row[0]}"
    threads = [t.ident for t in threading.enumerate() if t.name.startswith("sessions_app-sqlite")]
    return f"threads {threads}"


def fork() -> None:
    store = DjangoSessionStore()
    record = SessionRecord(SessionId.new(), 7, 7)
    runner = asyncio.Runner()
    runner.run(store.save(record))
    before = runner.run(identity(store))

    read, write = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(read)

        async def in_child() -> dict[str, object]:
            loaded = await asyncio.wait_for(store.load(record.session_id), 20)
            mine = SessionRecord(SessionId.new(), 8, 8)
            await store.save(mine)
            return {"loaded": loaded == record, "saved": await store.load(mine.session_id) == mine}

        seen = asyncio.run(in_child())
        # The parent's event loop came along with fork(). It must not be
        # closed here: its epoll instance is shared with the parent, and
        # closing would unregister the parent's own descriptors. Python
        # warns about it at exit; that warning is about the loop, not the store.
        warnings.filterwarnings("ignore", "unclosed event loop", ResourceWarning)
        os.write(write, json.dumps(seen).encode())
        os.close(write)
        sys.exit(0)  # a normal exit: atexit hooks and finalizers run

    os.close(write)
    _, status = os.waitpid(child, 0)
    child_saw = json.loads(os.read(read, 4096) or b"{}")
    after = runner.run(identity(store))
    loaded = runner.run(store.load(record.session_id)) == record
    runner.run(store.aclose())
    runner.close()
    print(
        json.dumps(
            {
                "child_exit": os.waitstatus_to_exitcode(status),
                "child": child_saw,
                "parent_before": before,
                "parent_after": after,
                "parent_loaded": loaded,
            }
        )
    )


def exit_with_work_in_flight() -> None:
    store = DjangoSessionStore()
    records = [SessionRecord(SessionId.new(), 1, n) for n in range(ROWS)]

    async def main() -> None:
        asyncio.get_running_loop().create_task(store.save_many(records))
        await asyncio.sleep(0)  # the batch is handed over; the loop ends now

    # A loop closed by hand (no asyncio.run(), so no async-generator
    # shutdown): its pool is what exit must close.
    loop = asyncio.new_event_loop()
    loop.run_until_complete(store.load_many([SessionId.new()]))
    loop.close()
    asyncio.run(main())
    print(json.dumps({"first_id": str(records[0].session_id), "last_id": str(records[-1].session_id)}))


if __name__ == "__main__":
    {"fork": fork, "exit": exit_with_work_in_flight}[sys.argv[1]]()
