"""``manage.py create_agent_key``: issue an agent key and print it, once.

    manage.py create_agent_key planner --agent 42
    manage.py create_agent_key fleet-a --agent 42 --agent 43 --scope read --scope write --expires-in 86400

The key (``<prefix>.<secret>``) is the last line of the output, alone, so a
script can take it with ``tail -n 1``; only its hash is stored, so it cannot
be shown again. With no ``--scope`` the key gets all three (read, write,
delete). Rotate a key by creating the new one, deploying it, then
``revoke_agent_key`` on the old prefix.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from ...models import SCOPES, AgentKey, agent_ids_of, scopes_of

NAME_MAX = AgentKey._meta.get_field("name").max_length or 50


class Command(BaseCommand):
    help = "Create an agent key for one or more agents and print it (shown once; only its hash is stored)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help=f"A name for the key (at most {NAME_MAX} characters).")
        parser.add_argument(
            "--agent",
            dest="agents",
            action="append",
            required=True,
            metavar="AGENT_ID",
            help="An agent id the key acts for; repeat for several.",
        )
        parser.add_argument(
            "--scope",
            dest="scopes",
            action="append",
            choices=SCOPES,
            help="What the key may do; repeat for several. Default: read, write and delete.",
        )
        parser.add_argument(
            "--expires-in", type=int, metavar="SECONDS", help="Seconds until the key expires; default never."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        name: str = options["name"]
        if not name.strip() or len(name) > NAME_MAX:
            raise CommandError(f"NAME must be 1..{NAME_MAX} characters, got {len(name)}")
        try:
            agents = agent_ids_of([_agent_id(text) for text in options["agents"]])
            scopes = scopes_of(options["scopes"] or SCOPES)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        expires_in = options["expires_in"]
        if expires_in is not None and expires_in < 1:
            raise CommandError(f"--expires-in must be a whole number of seconds from 1, got {expires_in}")
        expiry = None if expires_in is None else timezone.now() + timedelta(seconds=expires_in)
        key_row, key = AgentKey.objects.create_key(
            name=name, agent_ids=list(agents), scopes=list(scopes), expiry_date=expiry
        )
        self.stdout.write(
            f"Created agent key {key_row.prefix} ({name}) for agents {', '.join(map(str, agents))}, "
            f"scopes {', '.join(scopes)}, "
            + (f"expiring {expiry.isoformat()}" if expiry else "never expiring")
            + ". The key is shown this once:"
        )
        self.stdout.write(key)


def _agent_id(text: str) -> int:
    if not text.strip().isdigit():
        raise ValueError(f"--agent must be an integer in 0..9223372036854775807, got {text!r}")
    return int(text)
