"""Limits on what one client may ask of the server.

- request bodies: 413 before a large body is read into memory (`RequestSizeLimit`);
- requests per key: a token bucket per caller, in Redis when there is one (every API process shares
  it) or in this process (the embedded mode); an empty bucket is a 429 with Retry-After;
- jobs per key: queued + running jobs are counted in the database when a job is submitted (see
  api/routes/jobs.py), also a 429 with Retry-After;
- event streams and tree renders held at once, per key and in all (`CallerSlots`), also 429s.

The caps on a job's size (max_nodes, max_depth, max_new_tokens, prompt length) are in api/validation.py.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import redis
from fastapi import HTTPException, Request, status
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tokentree.api.auth import Caller, CallerDep
from tokentree.models.settings import Settings

log = logging.getLogger(__name__)


class BodyTooLarge(Exception):
    pass


class RequestSizeLimit:
    """Refuse bodies over `max_bytes`, by their Content-Length or, when chunked, as they arrive."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                await self._refuse(send)
                return
        received = 0
        started = refused = False

        async def counting_receive() -> Message:
            nonlocal received, refused
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # Answer now: the app may catch the exception (FastAPI turns it into a 400).
                    if not started and not refused:
                        refused = True
                        await self._refuse(send)
                    raise BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if refused:
                return  # the 413 went out; whatever the app answers after it is dropped
            started = started or message["type"] == "http.response.start"
            await send(message)

        with contextlib.suppress(BodyTooLarge):  # answered already
            await self.app(scope, counting_receive, guarded_send)

    async def _refuse(self, send: Send) -> None:
        body = b'{"detail":"request body larger than %d bytes"}' % self.max_bytes
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


# -- requests per key ---------------------------------------------------------------------------------


class RateLimiter(Protocol):
    def take(self, identity: str) -> float:
        """Spend one request of `identity`'s bucket: 0 if allowed, else the seconds until it may retry."""


STREAM_RETRY_S = 5
RENDER_RETRY_S = 2  # a large tree renders in a few seconds

_TAKE = Path(__file__).with_name("rate_limit.lua").read_text()


class RedisRateLimiter:
    """Buckets in Redis, updated by one script (atomic across API processes, Redis' clock)."""

    # After Redis failed to answer, requests go through unlimited for this long before it is asked again,
    # so a hung Redis costs one request its timeout, not every request.
    PAUSE_S = 5.0

    def __init__(self, client: redis.Redis, per_minute: int, burst: int) -> None:
        self.client = client
        self.capacity = burst
        self.per_ms = per_minute / 60_000
        self.script = client.register_script(_TAKE)
        self._paused_until = 0.0

    def take(self, identity: str) -> float:
        if time.monotonic() < self._paused_until:
            return 0.0
        try:
            key = f"tokentree:ratelimit:{identity}"
            wait_ms = int(self.script(keys=[key], args=[self.capacity, self.per_ms]))
        except redis.RedisError as exc:
            # The limiter protects the service; it must not take it down. Jobs still need Redis to queue.
            log.warning("rate limiter: Redis unreachable, letting requests through for %.0f s: %s",
                        self.PAUSE_S, exc)
            self._paused_until = time.monotonic() + self.PAUSE_S
            return 0.0
        return wait_ms / 1000


class LocalRateLimiter:
    """Buckets in this process (the embedded mode has a single API process)."""

    MAX_BUCKETS = 10_000

    def __init__(self, per_minute: int, burst: int) -> None:
        self.capacity = float(burst)
        self.per_s = per_minute / 60
        self.buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self.lock = threading.Lock()

    def take(self, identity: str) -> float:
        now = time.monotonic()
        with self.lock:
            tokens, at = self.buckets.pop(identity, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - at) * self.per_s)
            wait = 0.0
            if tokens >= 1:
                tokens -= 1
            else:
                wait = (1 - tokens) / self.per_s
            self.buckets[identity] = (tokens, now)
            while len(self.buckets) > self.MAX_BUCKETS:
                self.buckets.popitem(last=False)  # the least recently seen: a full bucket by now, likely
        return wait


def make_rate_limiter(settings: Settings, client: redis.Redis | None) -> RateLimiter | None:
    if settings.rate_limit_per_minute == 0:
        return None
    if client is not None:
        return RedisRateLimiter(client, settings.rate_limit_per_minute, settings.rate_limit_burst)
    return LocalRateLimiter(settings.rate_limit_per_minute, settings.rate_limit_burst)


def too_many(message: str, retry_after_s: float) -> HTTPException:
    """A 429 with its Retry-After (whole seconds, at least 1)."""
    return HTTPException(status.HTTP_429_TOO_MANY_REQUESTS, message,
                         headers={"Retry-After": str(max(1, math.ceil(retry_after_s)))})


def enforce_rate_limit(request: Request, caller: CallerDep) -> None:
    limiter: RateLimiter | None = request.app.state.rate_limiter
    if limiter is None:
        return
    wait = limiter.take(caller.identity)
    if wait > 0:
        settings: Settings = request.app.state.settings
        request.app.state.metrics.refused("rate_limit")
        who = "this API key" if caller.key_id else "this client"
        raise too_many(f"rate limit exceeded: {settings.rate_limit_per_minute} requests per minute for {who} "
                       f"(bursts of {settings.rate_limit_burst}); retry in {max(1, math.ceil(wait))} s", wait)


class CallerSlots:
    """Things of one kind that callers hold at once in this API process (event streams, tree renders),
    counted per caller (API key, or client address without one) and in all: past either cap the next is a
    429 with Retry-After, saying what to do instead, until one is freed."""

    def __init__(self, per_caller: int, total: int, *, noun: str, state: str, advice: str,
                 retry_after_s: float) -> None:
        self.per_caller, self.total = per_caller, total
        self.noun, self.state, self.advice, self.retry_after_s = noun, state, advice, retry_after_s
        self.open: dict[str, int] = {}
        self.lock = threading.Lock()

    def take(self, caller: Caller) -> Callable[[], None]:
        """A slot for one of `caller`'s (a 429 if none is free); the returned function frees it (calling it
        again does nothing)."""
        identity = caller.identity
        with self.lock:
            mine = self.open.get(identity, 0)
            if mine >= self.per_caller or sum(self.open.values()) >= self.total:
                who = "this API key" if caller.key_id else "this client"
                if mine >= self.per_caller:
                    limit = f"{mine} {self.noun} {self.state} for {who}, the most allowed ({self.per_caller})"
                else:
                    limit = f"the server's {self.total} {self.noun} are {self.state}"
                raise too_many(f"{limit}; {self.advice}", self.retry_after_s)
            self.open[identity] = mine + 1
        freed = threading.Event()

        def free() -> None:
            with self.lock:
                if freed.is_set():
                    return
                freed.set()
                left = self.open.get(identity, 1) - 1
                if left > 0:
                    self.open[identity] = left
                else:
                    self.open.pop(identity, None)

        return free


def stream_slots(settings: Settings) -> CallerSlots:
    """Event streams open at once. Each holds a connection and a share of every reading of the progress
    feed, so one caller's hundreds of streams would still cost everyone: past a cap, a 429 until one
    closes."""
    return CallerSlots(settings.events_max_per_caller, settings.events_max_total, noun="event streams",
                       state="open", advice="close one, or poll GET /v1/jobs/{id} instead",
                       retry_after_s=STREAM_RETRY_S)


def render_slots(settings: Settings) -> CallerSlots:
    """Tree renders running at once (a 100,000-node tree takes seconds of a core and a few hundred MB while
    it renders). A finished tree served from memory, or one joining the same render in flight, takes none."""
    return CallerSlots(settings.renders_max_per_caller, settings.renders_max_total, noun="tree renders",
                       state="running",
                       advice="retry when one ends, or ask for less of the tree (?root=, ?max_depth=)",
                       retry_after_s=RENDER_RETRY_S)


def export_slots(settings: Settings) -> CallerSlots:
    """Study exports running at once (CSV or Parquet of every node of a study): each reads the study's
    nodes from start to end, holding a connection, so they are capped as tree renders are."""
    return CallerSlots(settings.renders_max_per_caller, settings.renders_max_total, noun="study exports",
                       state="running", advice="retry when one ends", retry_after_s=RENDER_RETRY_S)
