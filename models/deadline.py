"""A deadline on each statement the API sends to Postgres, kept by the client.

Postgres' own `statement_timeout` and TCP keepalive cannot end a wait on a server that is frozen
(SIGSTOP, a hung host's process, a proxy that stops forwarding): its kernel still acknowledges every
packet, so the request thread waits on the socket for ever and, forty of them later, the API's thread
pool is gone. Here a watchdog thread looks at the statements in flight and shuts down the socket of one
that has had no answer for `deadline_s`: psycopg's read fails at once, SQLAlchemy drops the connection,
and the request is a 503 like any lost connection. A statement may ask for a shorter deadline with the
execution option `deadline_s` (the health check does).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from typing import Any

from sqlalchemy import Engine, event

log = logging.getLogger(__name__)

CHECK_EVERY_S = 0.25


class StatementDeadline:
    """Watches one engine's statements; `deadline_s` unless a statement's execution options say less."""

    def __init__(self, engine: Engine, deadline_s: float) -> None:
        self.deadline_s = deadline_s
        # id(Connection), or id(DBAPI connection) for a ping -> (give up at, its socket's fd), for each
        # statement in flight
        self._running: dict[int, tuple[float, int]] = {}
        self._lock = threading.Lock()
        event.listen(engine, "before_cursor_execute", self._started)
        event.listen(engine, "after_cursor_execute", self._ended)
        event.listen(engine, "handle_error", lambda context: self._ended(context.connection))
        # The pool's pre-ping (a SELECT 1 on checkout) is a statement too, sent outside the events above.
        ping = engine.dialect.do_ping

        def guarded_ping(dbapi_connection: Any) -> bool:
            with self._lock:
                self._running[id(dbapi_connection)] = (time.monotonic() + self.deadline_s,
                                                       dbapi_connection.pgconn.socket)
            try:
                return bool(ping(dbapi_connection))
            finally:
                self._ended(dbapi_connection)

        engine.dialect.do_ping = guarded_ping  # type: ignore[method-assign]
        threading.Thread(target=self._watch, name="statement-deadline", daemon=True).start()

    def _started(self, conn: Any, cursor: Any, statement: str, parameters: Any, context: Any,
                 executemany: bool) -> None:
        deadline = min(self.deadline_s, conn.get_execution_options().get("deadline_s", self.deadline_s))
        fd = conn.connection.dbapi_connection.pgconn.socket
        with self._lock:
            self._running[id(conn)] = (time.monotonic() + deadline, fd)

    def _ended(self, conn: Any, *_: Any) -> None:
        with self._lock:
            self._running.pop(id(conn), None)

    def _watch(self) -> None:
        while True:
            time.sleep(CHECK_EVERY_S)
            now = time.monotonic()
            # Under the lock: a statement still listed has not returned, so its fd is still its socket's
            # (never one the system has handed out again).
            with self._lock:
                for key, (give_up_at, fd) in list(self._running.items()):
                    if now > give_up_at:
                        del self._running[key]
                        self._shut_down(fd)

    @staticmethod
    def _shut_down(fd: int) -> None:
        log.warning("database: no answer to a statement within its deadline; closing its connection")
        try:
            # A socket object over a copy of the descriptor: shutting it down ends the connection itself
            # (psycopg's read returns), while psycopg keeps its own descriptor and closes it later.
            with socket.socket(fileno=os.dup(fd)) as sock:
                sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
