"""A TCP forwarder on 127.0.0.1 that a test can cut and restore, to play a database going away."""

from __future__ import annotations

import contextlib
import socket
import threading


class SwitchableProxy:
    """Forwards 127.0.0.1:<port> to ``target``; ``cut()`` drops every connection and stops listening.

    ``lose_next_answer()``: the next data the server sends on any connection
    is not passed on; that connection is dropped instead. The server has
    then done what it was asked (it answered), and the client never learns it.
    """

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = 0
        self._listener: socket.socket | None = None
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._lose_answer = threading.Event()
        self._pass_before_losing = 0
        self.answers_lost = 0

    def lose_next_answer(self, after: int = 0) -> None:
        """Drop the connection instead of passing on the server's next data (after ``after`` pieces)."""
        self._pass_before_losing = after
        self._lose_answer.set()

    def start(self) -> SwitchableProxy:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def cut(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        with self._lock:
            doomed, self._sockets = self._sockets, set()
        for sock in doomed:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    restore = start

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets |= {client, upstream}
            for source, sink, answers in ((client, upstream, False), (upstream, client, True)):
                threading.Thread(target=self._pump, args=(source, sink, answers), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, answers: bool) -> None:
        try:
            while data := source.recv(65536):
                if answers and self._lose_answer.is_set():
                    with self._lock:
                        lose = self._lose_answer.is_set() and self._pass_before_losing == 0
                        if lose:
                            self._lose_answer.clear()
                        else:
                            self._pass_before_losing -= 1
                    if lose:
                        self.answers_lost += 1
                        break  # the finally drops both sides
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
