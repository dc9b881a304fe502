"""``manage.py revoke_agent_key PREFIX``: revoke an agent key for good.

The next request with the key is refused (401) in this process at once,
and in every process sharing the cache (README, "Security"). Revoking
cannot be undone (djangorestframework-api-key's rule); issue a new key.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ...models import AgentKey


class Command(BaseCommand):
    help = "Revoke the agent key with this prefix (the part before the dot); it cannot be undone."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("prefix", help="The key's public prefix (the part before the dot).")

    def handle(self, *args: Any, **options: Any) -> None:
        prefix: str = options["prefix"].partition(".")[0]
        try:
            key = AgentKey.objects.get(prefix=prefix)
        except AgentKey.DoesNotExist:
            raise CommandError(f"no agent key has the prefix {prefix!r}") from None
        if key.revoked:
            self.stdout.write(f"Agent key {prefix} ({key.name}) was already revoked.")
            return
        key.revoked = True
        key.save(update_fields=["revoked"])  # a signal: kept answers are retired
        self.stdout.write(f"Revoked agent key {prefix} ({key.name}).")
