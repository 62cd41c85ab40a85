"""Deterministic synthetic token trees for the browser tests, and a JSON writer for deep trees.

`synthetic_tree(10_000)` has long single-child runs between forks (so it draws as a few dozen
segments), engine-style optional fields, completed and cut-off leaves, and tokens that contain HTML
(`<img src=x onerror=alert(1)>`) which must stay inert in every viewer.
"""

from __future__ import annotations

import json
import math
import random
from collections import deque
from typing import Any

XSS_TOKEN = "<img src=x onerror=alert(1)>"
XSS_PROMPT = 'Synthetic <b>prompt</b> <img src=x onerror=alert("prompt")> with <script>alert(3)</script>'

_VOCAB = [
    " the",
    " model",
    " token",
    " tree",
    " branch",
    " probability",
    " path",
    " of",
    " and",
    " to",
    ",",
    ".",
    " a",
    " is",
    " in",
    " it",
    "\n",
    "\n\n",
    " ",
    "  ",
    "\t",
    " <b>bold</b>",
    " &amp;",
    ' "quoted"',
    " 'single'",
    " café",
    " 東京",
    " 🙂",
    " x < y",
    " y > z",
    " </div>",
    XSS_TOKEN,
    "<script>alert(2)</script>",
    " {",
    "}",
    " ->",
    " λ",
]


def synthetic_tree(n_nodes: int = 10_000, seed: int = 7, run_range: tuple[int, int] = (120, 420)) -> dict:
    """A tree of exactly `n_nodes` nodes in the seed layout plus the engine's optional fields."""
    rng = random.Random(seed)
    next_id = 0

    def new_node(parent: dict | None, text: str, token_id: int | None, prob: float) -> dict:
        nonlocal next_id
        cum = (parent["cumulative_prob"] if parent else 1.0) * prob
        node = {
            "id": next_id,
            "text": text,
            "prob": round(prob, 6),
            "logprob": math.log(prob) if prob > 0 else None,
            "cumulative_prob": cum,
            "token_id": token_id,
            "depth": parent["depth"] + 1 if parent else 0,
            "is_finished": False,
            "finish_reason": None,
            "threshold": None,
            "queue_depth": None,
            "entropy": None,
            "candidates": [],
            "children": [],
        }
        next_id += 1
        if parent is not None:
            parent["children"].append(node)
        return node

    root = new_node(None, XSS_PROMPT, None, 1.0)
    count = 1
    starts: deque[tuple[dict, str, int, float]] = deque()
    # The root forks three ways; the first branch starts with the HTML token.
    for text, tid, p in [(XSS_TOKEN, 9001, 0.46), (" The", 464, 0.31), (" A", 317, 0.12)]:
        starts.append((root, text, tid, p))

    while starts and count < n_nodes:
        parent, text, tid, p = starts.popleft()
        node = new_node(parent, text, tid, p)
        count += 1
        run = rng.randint(*run_range)
        while run > 0 and count < n_nodes:
            i = rng.randrange(len(_VOCAB))
            node = new_node(node, _VOCAB[i], 1000 + i, rng.uniform(0.55, 0.995))
            count += 1
            run -= 1
        remaining = n_nodes - count
        if remaining > 3 * len(starts) + 40 and rng.random() < 0.6:
            k = rng.choice([2, 2, 3])
            probs = sorted((rng.uniform(0.08, 0.6) for _ in range(k)), reverse=True)
            for j, bp in enumerate(probs):
                vi = rng.randrange(len(_VOCAB))
                starts.append((node, _VOCAB[vi], 2000 + 10 * vi + j, bp))
        else:
            node["is_finished"] = rng.random() < 0.8
            node["finish_reason"] = "stop" if node["is_finished"] else "max_depth"
    # Whatever is left in `starts` was never expanded: fine, they are simply absent.

    # Candidates, threshold, queue depth, entropy on every expanded node (iteratively).
    stack = [root]
    while stack:
        node = stack.pop()
        if node["children"] or node["finish_reason"] == "stop":
            cands = [
                {"text": c["text"], "prob": round(c["prob"], 4), "token_id": c["token_id"]}
                for c in node["children"]
            ]
            rest = max(0.0, 1.0 - sum(c["prob"] for c in cands))
            for j in range(3):
                cands.append(
                    {
                        "text": [" unexplored", XSS_TOKEN, "\n"][j],
                        "prob": round(rest * (0.3 / (j + 1)), 4),
                        "token_id": 50_000 + j,
                    }
                )
            cands.sort(key=lambda c: -c["prob"])
            node["candidates"] = cands
            ps = [c["prob"] for c in cands if c["prob"] > 0]
            node["entropy"] = -sum(q * math.log(q) for q in ps)
            node["threshold"] = 0.1 + 0.4 * min(1.0, (node["depth"] % 30) / 30)
            node["queue_depth"] = node["depth"] % 30
        stack.extend(node["children"])

    return {
        "metadata": {
            "prompt": XSS_PROMPT,
            "model": "synthetic <i>model</i>",
            "parameters": {
                "min_branch_threshold": 0.1,
                "max_branch_threshold": 0.5,
                "soft_queue_limit": 30,
                "candidate_threshold": 0.01,
                "max_depth": 5000,
                "max_completed_paths": 50,
            },
        },
        "tree": root,
    }


def count_nodes(doc: dict) -> int:
    stack, n = [doc["tree"]], 0
    while stack:
        node = stack.pop()
        n += 1
        stack.extend(node["children"])
    return n


def prune_depth(doc: dict, max_depth: int) -> dict:
    """A copy of a tree document keeping nodes with depth <= max_depth (iterative)."""

    def shallow(node: dict) -> dict:
        return {k: v for k, v in node.items() if k != "children"} | {"children": []}

    new_root = shallow(doc["tree"])
    stack = [(doc["tree"], new_root, 0)]
    while stack:
        src, dst, depth = stack.pop()
        if depth >= max_depth:
            continue
        for child in src["children"]:
            c = shallow(child)
            dst["children"].append(c)
            stack.append((child, c, depth + 1))
    return {"metadata": doc.get("metadata", {}), "tree": new_root}


class _Raw(str):
    """A piece of JSON text already encoded."""


def dumps_deep(obj: Any) -> str:
    """json.dumps without recursion, for trees thousands of levels deep."""
    out: list[str] = []
    stack: list[Any] = [obj]
    while stack:
        item = stack.pop()
        if isinstance(item, _Raw):
            out.append(item)
        elif isinstance(item, dict):
            out.append("{")
            stack.append(_Raw("}"))
            entries = list(item.items())
            for i in range(len(entries) - 1, -1, -1):
                key, value = entries[i]
                stack.append(value)
                stack.append(_Raw(json.dumps(str(key)) + ":"))
                if i:
                    stack.append(_Raw(","))
        elif isinstance(item, list | tuple):
            out.append("[")
            stack.append(_Raw("]"))
            for i in range(len(item) - 1, -1, -1):
                stack.append(item[i])
                if i:
                    stack.append(_Raw(","))
        else:
            out.append(json.dumps(item))
    return "".join(out)
