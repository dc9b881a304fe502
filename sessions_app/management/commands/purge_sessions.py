"""``manage.py purge_sessions``: delete the sessions that started before a cut-off, in batches.

    manage.py purge_sessions --older-than 30d
    manage.py purge_sessions --before 2025-01-01T00:00:00Z --batch-size 50000 --dry-run
    manage.py purge_sessions --before 1735689600000000000

It deletes through the store's ``purge_before()``, as ``clearsessions``
calls a session backend's ``clear_expired()``: rows never travel to Python,
each batch is one ``DELETE`` of at most ``--batch-size`` rows chosen by the
database, so memory stays flat and locks stay short however many rows go.
Running it again deletes nothing more (idempotent). ``--database`` defaults
to ``SESSIONS_APP["DATABASE_ALIAS"]``.
"""

from __future__ import annotations

import re
import sys
import time
from datetime import UTC, datetime
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ...conf import app_settings
from ...storage.db import SyncDjangoSessionStore
from ...storage.errors import StorageError
from ...storage.types import STARTED_AT_NS_MAX

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
NS = 1_000_000_000


def parse_age(text: str) -> int:
    """``30d``, ``12h``, ``90m``, ``2w``, ``45s`` -> nanoseconds."""
    match = re.fullmatch(r"(\d+)([smhdw])", text.strip())
    if not match:
        raise CommandError(
            f"--older-than must be a number and a unit (s, m, h, d or w), like 30d; got {text!r}"
        )
    return int(match.group(1)) * _UNITS[match.group(2)] * NS


def parse_moment(text: str) -> int:
    """An ISO 8601 date-time (UTC when it names no zone) or an integer of nanoseconds -> nanoseconds."""
    text = text.strip()
    if text.isdigit():
        value = int(text)
    else:
        try:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise CommandError(
                f"--before must be an ISO 8601 date-time (2025-01-01T00:00:00Z) or nanoseconds; got {text!r}"
            ) from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        seconds = int(moment.timestamp())
        value = seconds * NS + moment.microsecond * 1000
    if not 0 <= value <= STARTED_AT_NS_MAX:
        raise CommandError(f"--before must be in 0..{STARTED_AT_NS_MAX} ns since the epoch; got {value}")
    return value


class Command(BaseCommand):
    help = "Delete execution sessions that started before a cut-off, in batches."

    def add_arguments(self, parser: CommandParser) -> None:
        cutoff = parser.add_mutually_exclusive_group(required=True)
        cutoff.add_argument("--older-than", metavar="AGE", help="e.g. 30d, 12h, 90m, 2w, 45s")
        cutoff.add_argument(
            "--before", metavar="WHEN", help="ISO 8601 date-time (UTC by default) or nanoseconds"
        )
        parser.add_argument("--batch-size", type=int, default=10_000, help="rows per DELETE (default 10000)")
        parser.add_argument("--dry-run", action="store_true", help="count what would go; delete nothing")
        parser.add_argument("--database", help="the database alias (default: SESSIONS_APP['DATABASE_ALIAS'])")
        parser.add_argument("--no-progress", action="store_true", help="no progress bar, even on a terminal")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["batch_size"] < 1:
            raise CommandError(f"--batch-size must be at least 1; got {options['batch_size']}")
        if options["older_than"]:
            cutoff = max(0, time.time_ns() - parse_age(options["older_than"]))
        else:
            cutoff = parse_moment(options["before"])
        store = SyncDjangoSessionStore(options["database"] or app_settings.DATABASE_ALIAS)
        when = datetime.fromtimestamp(cutoff // NS, tz=UTC).isoformat().replace("+00:00", "Z")

        if options["dry_run"]:
            count = store.count_before(cutoff)
            self.stdout.write(f"Would purge {count} sessions that started before {when} ({cutoff} ns).")
            return

        started = time.perf_counter()
        progress = None
        if not options["no_progress"] and sys.stderr.isatty():
            total = store.count_before(cutoff)
            if total > options["batch_size"]:
                from tqdm import tqdm

                progress = tqdm(total=total, unit="rows", desc="purging", file=sys.stderr)

        def advance(batch: int) -> None:
            if progress is not None:
                progress.update(batch)

        try:
            deleted = store.purge_before(cutoff, batch_size=options["batch_size"], progress=advance)
        except StorageError as exc:
            raise CommandError(f"purge failed: {exc}") from exc
        finally:
            if progress is not None:
                progress.close()
        elapsed = time.perf_counter() - started
        rate = deleted / elapsed if elapsed > 0 else 0.0
        self.stdout.write(
            self.style.SUCCESS(
                f"Purged {deleted} sessions that started before {when} ({cutoff} ns) "
                f"in {elapsed:.2f} s ({rate:.0f} rows/s)."
            )
        )
