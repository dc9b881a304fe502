"""uvicorn's httptools protocol with a read timeout: slow or stalled clients cannot hold a connection.

uvicorn bounds an idle keep-alive connection (``--timeout-keep-alive``) but
not the reading of a request: a client that opens a connection and sends
nothing, or half a request, holds it (and its worker's file descriptor) for
as long as it likes. ``scripts/serve.sh`` runs uvicorn with this protocol
(``--http aa_project.server:ReadTimeoutHttpToolsProtocol``): a new
connection must start its request, and a request must arrive whole (headers
and body), within ``SERVER_READ_TIMEOUT`` seconds (10 by default) of its
first byte; otherwise the connection is closed. The time the application
takes to answer is not bounded here. Behind a proxy that buffers requests
(nginx's ``client_header_timeout``/``client_body_timeout``) this never fires.
"""

from __future__ import annotations

import asyncio
import logging
import os

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

logger = logging.getLogger("uvicorn.error")

READ_TIMEOUT = float(os.environ.get("SERVER_READ_TIMEOUT", "10"))


class ReadTimeoutHttpToolsProtocol(HttpToolsProtocol):
    """``HttpToolsProtocol``, closing a connection whose request does not arrive in ``READ_TIMEOUT`` s."""

    read_timeout = READ_TIMEOUT
    _read_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()  # the first request must start in time

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._disarm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._read_timer = self.loop.call_later(self.read_timeout, self._timed_out)

    def _disarm(self) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None

    def _timed_out(self) -> None:
        self._read_timer = None
        if getattr(self.flow, "read_paused", False):
            # uvicorn stopped reading itself (a pipelined request waits for the
            # answer before it, or the client reads slowly): not the client's delay.
            self._arm()
            return
        if not self.transport.is_closing():
            logger.info("closing a connection whose request did not arrive within %.0f s", self.read_timeout)
            self.transport.close()
