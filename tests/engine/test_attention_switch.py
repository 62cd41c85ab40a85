"""The tree-attention switch on a shared model: callers in different threads overlap (the embedded worker
beside a notebook's in-process build), so the first to leave must not turn it off under the other."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

from tokentree.engine.kv import ATTENTION_NAME, tree_attention_on


def test_overlapping_users_keep_the_switch_on_until_the_last_leaves() -> None:
    model = cast(Any, SimpleNamespace(config=SimpleNamespace(_attn_implementation="sdpa")))
    first, second = tree_attention_on(model), tree_attention_on(model)
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)  # the first caller is done; the second is mid-forward
    assert model.config._attn_implementation == ATTENTION_NAME
    second.__exit__(None, None, None)
    assert model.config._attn_implementation == "sdpa"
