"""Server-sent events, read line by line: the lines of `GET /v1/jobs/{id}/events` in, whole events out
(the stream's keep-alive comments end no event)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Event:
    name: str  # `progress`, `end` or `error` on the job stream
    data: str


class EventReader:
    """Feed it the stream's lines; a blank line completes the event being read."""

    def __init__(self) -> None:
        self._name = ""
        self._data: list[str] = []

    def feed(self, line: str) -> Event | None:
        if not line:
            event = Event(self._name or "message", "\n".join(self._data)) if self._data else None
            self._name, self._data = "", []
            return event
        if line.startswith(":"):
            return None  # a comment: the server saying the stream is alive
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "event":
            self._name = value
        elif field == "data":
            self._data.append(value)
        return None
