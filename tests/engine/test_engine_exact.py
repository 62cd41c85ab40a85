"""The engine's trees against the plain sequential rule, on real models.

The reference (bench/reference.py) evaluates every node with a fresh full forward pass over its
prefix, so matching it checks both the tree and that every probability equals a fresh forward pass.
"""

from __future__ import annotations

import pytest
import torch

from bench.reference import PROB_TOLERANCE, assert_matches_reference, sequential_tree
from tokentree.engine.analysis import build_tree
from tokentree.engine.expand import Expander, top_k_for
from tokentree.engine.loading import ModelSpec, encode_prompt, load_model
from tokentree.engine.params import TreeParams
from tokentree.engine.runner import ModelRunner
from tokentree.engine.scheduler import TreeBuilder

CASES = [
    ("Once upon a time", TreeParams()),
    ("The secret to happiness is", TreeParams()),
    (
        "In the beginning",
        TreeParams(
            min_branch_threshold=0.05,
            max_branch_threshold=0.3,
            soft_queue_limit=60,
            max_completed_paths=25,
            max_depth=30,
        ),
    ),
    (
        "My favourite food is",
        TreeParams(
            min_branch_threshold=0.2,
            max_branch_threshold=0.6,
            soft_queue_limit=3,
            candidate_threshold=0.05,
            max_completed_paths=8,
        ),
    ),
    (
        "A robot walked into a bar and",
        TreeParams(
            max_depth=7,
            max_nodes=120,
            max_completed_paths=50,
            min_branch_threshold=0.02,
            max_branch_threshold=0.2,
        ),
    ),
]


@pytest.mark.parametrize(("prompt", "params"), CASES, ids=[c[0] for c in CASES])
def test_demo_model_tree_equals_sequential_rule(demo, prompt: str, params: TreeParams) -> None:  # type: ignore[no-untyped-def]
    result = build_tree(demo, prompt, params, max_batch=64)
    reference = sequential_tree(demo.model, encode_prompt(demo, prompt), set(demo.stop_ids), params.to_dict())
    assert assert_matches_reference(result.nodes, reference.root) > 1
    assert result.stats.forward_passes <= reference.forward_passes


@pytest.mark.parametrize("architecture", ["gemma2", "gemma3", "llama"])
@pytest.mark.parametrize("max_batch", [2, 256])
def test_tiny_architectures_equal_sequential_rule(tiny_model_dirs, architecture: str, max_batch: int) -> None:  # type: ignore[no-untyped-def]
    lm = load_model(ModelSpec(name=str(tiny_model_dirs[architecture])))
    # Past the tiny models' sliding window of 8, so the sliding-window cache layers are exercised too.
    params = TreeParams(
        min_branch_threshold=0.05,
        max_branch_threshold=0.4,
        soft_queue_limit=10,
        max_depth=14,
        max_nodes=300,
        max_completed_paths=20,
    )
    prompt = "Once upon a time there was"
    result = build_tree(lm, prompt, params, max_batch=max_batch)
    reference = sequential_tree(lm.model, encode_prompt(lm, prompt), set(lm.stop_ids), params.to_dict())
    assert assert_matches_reference(result.nodes, reference.root) > 20
    assert max(n.depth for n in result.nodes) > 8
    assert any(len(n.children) > 1 for n in result.nodes)


def test_one_forward_pass_per_level_within_the_batch_limit(demo) -> None:  # type: ignore[no-untyped-def]
    params = TreeParams(
        min_branch_threshold=0.05,
        max_branch_threshold=0.3,
        soft_queue_limit=200,
        max_completed_paths=50,
        max_depth=25,
    )
    result = build_tree(demo, "Once upon a time", params, max_batch=10_000)
    levels = max(n.depth for n in result.nodes if n.is_expanded) + 1
    assert result.stats.forward_passes == levels == result.stats.levels


def test_kv_slots_follow_the_frontier_paths_not_the_tree(demo) -> None:  # type: ignore[no-untyped-def]
    """After every step the pool holds exactly one slot per node on the paths of the handles kept (the
    last two levels): never a copy of the prompt, and paths shared below their forks."""
    params = TreeParams(
        min_branch_threshold=0.05,
        max_branch_threshold=0.3,
        soft_queue_limit=200,
        max_completed_paths=10**5,
        max_depth=30,
        max_nodes=3000,
    )
    prompt_ids = encode_prompt(demo, "Once upon a time")
    builder = TreeBuilder(params, demo.stop_ids, "Once upon a time", demo.decode)
    runner = ModelRunner(demo.model, top_k_for(params))
    expander = Expander(builder, runner, prompt_ids)
    most = 0
    copied = 0  # what one cache row per kept node would hold below the prompt (the old layout)
    while not builder.done():
        expander.step(64)
        on_paths: set[int] = set()
        for node_id in expander._kv:
            node = builder.nodes[node_id]
            while node.parent_id is not None and node.id not in on_paths:
                on_paths.add(node.id)
                node = builder.nodes[node.parent_id]
        assert runner.pool.in_use == len(on_paths)
        most = max(most, runner.pool.in_use)
        copied = max(copied, sum(builder.nodes[i].depth for i in expander._kv))
    assert len(builder.nodes) > 1000
    # Siblings share their ancestors' slots: a fraction of one row per node, and never the prompt.
    assert most * 3 < copied
    expander.forget_kv()
    assert runner.pool.in_use == 0


def test_prefilled_takeover_matches(demo) -> None:  # type: ignore[no-untyped-def]
    """Nodes handed over without caches (another worker's) are prefilled and give the same distributions."""
    params = TreeParams(max_completed_paths=20, min_branch_threshold=0.05)
    prompt = "The capital of France is"
    prompt_ids = encode_prompt(demo, prompt)
    whole = build_tree(demo, prompt, params)
    builder = TreeBuilder(params, demo.stop_ids, prompt, demo.decode)
    expander = Expander(builder, ModelRunner(demo.model, top_k_for(params)), prompt_ids)
    for _ in range(4):
        expander.step(256)
    # Drop every KV handle: the next level is evaluated from whole paths below the prompt.
    expander.forget_kv()
    expander.run(256)
    assert [(n.token_id, n.parent_id, len(n.children)) for n in builder.nodes] == [
        (n.token_id, n.parent_id, len(n.children)) for n in whole.nodes
    ]
    assert [n.prob for n in builder.nodes] == pytest.approx([n.prob for n in whole.nodes], abs=PROB_TOLERANCE)


def test_entropy_and_logprob_are_consistent(demo) -> None:  # type: ignore[no-untyped-def]
    result = build_tree(demo, "Once upon a time", TreeParams())
    for node in result.nodes[1:]:
        assert node.logprob == pytest.approx(torch.tensor(node.prob).log().item(), abs=1e-6)
    expanded = [n for n in result.nodes if n.is_expanded]
    assert all(n.entropy is not None and n.entropy >= 0 for n in expanded)
    assert any(n.entropy > 0.5 for n in expanded)


def test_kv_memory_of_a_10000_node_tree_stays_within_its_bound(demo) -> None:  # type: ignore[no-untyped-def]
    """The stated bound (docs/engine.md): KV bytes <= (prompt + 2 x the most slots live at once) x bytes
    per token, the live slots never more than the tree's nodes; the pool doubles, so 2 x."""
    params = TreeParams(min_branch_threshold=0.05, max_branch_threshold=0.3, soft_queue_limit=100_000,
                        max_completed_paths=100_000, max_depth=60, max_nodes=10_000)
    prompt_ids = encode_prompt(demo, "Once upon a time")
    runner = ModelRunner(demo.model, top_k_for(params))
    builder = TreeBuilder(params, demo.stop_ids, "Once upon a time", demo.decode)
    expander = Expander(builder, runner, prompt_ids)
    config = demo.model.config
    per_token = 2 * config.num_hidden_layers * config.num_key_value_heads * config.head_dim * 4  # fp32 k, v
    most_slots = most_bytes = 0
    while not builder.done():
        expander.step()
        most_slots = max(most_slots, runner.pool.in_use)
        most_bytes = max(most_bytes, runner.memory_bytes())
    assert len(builder.nodes) == 10_000
    assert most_slots <= len(builder.nodes)
    assert most_bytes <= (len(prompt_ids) + 2 * most_slots) * per_token
