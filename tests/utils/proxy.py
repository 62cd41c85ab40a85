"""A TCP proxy on a free loopback port that a test can cut and restore: Postgres (or anything) going away
under a live client, as after a crash or a network split, and coming back on the same address; or freeze
and thaw: a server that keeps its connections and answers nothing."""

from __future__ import annotations

import contextlib
import socket
import threading


class TcpProxy:
    """Forwards a free loopback port to `target`; `cut()` closes the listener and every connection (the
    database is gone, as after a crash or a network split), `restore()` listens on the same port again.
    `freeze()` keeps every connection open and accepts new ones, but passes nothing on (a server stopped
    with SIGSTOP, or hung: its kernel still acknowledges what it is sent) until `thaw()`."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = 0
        self.listener: socket.socket | None = None
        self.connections: list[socket.socket] = []
        self.lock = threading.Lock()
        self.accepted = 0  # connections taken since the proxy was made (clients reconnecting show here)
        self.flowing = threading.Event()  # cleared by `freeze()`: bytes are taken and held, not passed on
        self.flowing.set()

    def restore(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        self.port = listener.getsockname()[1]
        listener.listen(64)
        self.listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self.lock:
                if self.listener is not listener:  # cut while this one was being connected
                    for end in (client, upstream):
                        end.close()
                    return
                self.connections += [client, upstream]
                self.accepted += 1
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                self.flowing.wait()
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        with self.lock:
            listener, self.listener = self.listener, None
            if listener is not None:
                # shutdown first: close() alone leaves a socket blocked in accept() listening (Linux).
                with contextlib.suppress(OSError):
                    listener.shutdown(socket.SHUT_RDWR)
                listener.close()
            for connection in self.connections:
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)
                connection.close()
            self.connections.clear()

    def freeze(self) -> None:
        self.flowing.clear()

    def thaw(self) -> None:
        self.flowing.set()
