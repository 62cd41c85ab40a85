"""uvicorn's HTTP/1.1 protocol (h11) with a deadline on each request's head: a connection that has not
sent a whole request line and headers within `head_timeout_s` of opening (or of its last response) is
closed. uvicorn alone keeps a half-sent request open for ever (its keep-alive timeout stops at the first
byte), so a client could hold thousands of sockets with a few bytes each. A request's body and its
response take as long as they take: the deadline is for the head only.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol


def with_head_timeout(head_timeout_s: float) -> type[H11Protocol]:
    """The protocol class to give `uvicorn.run(http=...)`."""

    class HeadTimeoutProtocol(H11Protocol):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._head_deadline: asyncio.TimerHandle | None = None
            self._cycle_before_head: object = None  # the request cycle the deadline waits to see replaced

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._await_head()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self._head_deadline is not None and self.cycle is not self._cycle_before_head:
                self._head_deadline.cancel()  # a whole head arrived: h11 started a new request cycle
                self._head_deadline = None

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._await_head()  # the next request on this kept-alive connection has the same deadline

        def connection_lost(self, exc: Exception | None) -> None:
            if self._head_deadline is not None:
                self._head_deadline.cancel()
                self._head_deadline = None
            super().connection_lost(exc)

        def _await_head(self) -> None:
            if self._head_deadline is not None:
                self._head_deadline.cancel()
            self._cycle_before_head = self.cycle
            self._head_deadline = self.loop.call_later(head_timeout_s, self._head_overdue)

        def _head_overdue(self) -> None:
            self._head_deadline = None
            waiting = self.cycle is None or self.cycle.response_complete  # not a pipelined request running
            if self.cycle is self._cycle_before_head and waiting and not self.transport.is_closing():
                self.transport.close()

    return HeadTimeoutProtocol
