"""The rendered-tree cache stays within its byte budget, least recently used out first."""

from __future__ import annotations

import uuid

from tokentree.api.tree_cache import RenderedTrees


def test_least_recently_used_go_first_within_the_budget() -> None:
    cache = RenderedTrees(max_bytes=400)
    a, b, c = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    cache.put((a, None, None), b"a" * 100)
    cache.put((b, None, None), b"b" * 100)
    cache.put((b, 7, 2), b"s" * 100)
    assert cache.get((a, None, None)) == b"a" * 100  # a is now the most recent
    cache.put((c, None, None), b"c" * 100)
    cache.put((c, None, 1), b"d" * 100)  # over 400: the least recent (b's whole tree) goes
    assert cache.get((b, None, None)) is None
    assert cache.get((a, None, None)) is not None and cache.get((b, 7, 2)) is not None


def test_a_document_over_a_quarter_of_the_budget_is_not_kept() -> None:
    cache = RenderedTrees(max_bytes=400)
    cache.put((uuid.uuid4(), None, None), b"x" * 101)
    assert cache._size == 0


def test_forget_drops_every_view_of_a_job() -> None:
    cache = RenderedTrees(max_bytes=1000)
    job, other = uuid.uuid4(), uuid.uuid4()
    for key in ((job, None, None), (job, 3, None), (other, None, None)):
        cache.put(key, b"x" * 10)
    cache.forget(job)
    assert cache.get((job, None, None)) is None and cache.get((job, 3, None)) is None
    assert cache.get((other, None, None)) == b"x" * 10
    assert cache._size == 10


def test_a_zero_budget_keeps_nothing() -> None:
    cache = RenderedTrees(max_bytes=0)
    cache.put((uuid.uuid4(), None, None), b"")
    cache.put((uuid.uuid4(), None, None), b"x")
    assert cache._size == 0
