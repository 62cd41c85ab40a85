"""Many trees in one batch: each equals the same tree built alone, and the plain sequential rule.

Hypothesis mixes random prompts of random lengths (some longer than the tiny models' sliding window of
8, so windows cut into the prompt; some equal, so trees share a prompt's KV) with random parameters,
on the demo model and on tiny random Gemma-2 (attention soft-capping), Gemma-3 and Llama models; each
tree with sampler settings of its own.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.reference import PROB_TOLERANCE, assert_matches_reference, sequential_tree
from tests.engine.plain_sampler import plain_sampler
from tokentree.engine.analysis import TreeRequest, build_tree, build_trees
from tokentree.engine.loading import LoadedModel, ModelSpec, encode_prompt, load_model
from tokentree.engine.params import SAMPLER_PARAMETERS, TreeParams

WORDS = ["once", "upon", "a", "time", "there", "was", "a", "little", "robot", "who", "lived", "in", "the",
         "city", "by", "the", "sea", "and", "dreamed"]


@st.composite
def requests(draw: st.DrawFn) -> list[TreeRequest]:
    prompts = draw(st.lists(st.lists(st.sampled_from(WORDS), min_size=1, max_size=30), min_size=1,
                            max_size=3))
    out = []
    for _ in range(draw(st.integers(2, 6))):
        low = draw(st.floats(0.03, 0.4))
        params = TreeParams(
            min_branch_threshold=low,
            max_branch_threshold=draw(st.floats(low, 0.8)),
            soft_queue_limit=draw(st.integers(1, 40)),
            candidate_threshold=draw(st.sampled_from([0.0, 0.01, 0.1])),
            max_depth=draw(st.integers(1, 14)),
            max_completed_paths=draw(st.integers(1, 12)),
            max_nodes=draw(st.integers(1, 150)),
            # Each tree its own sampler: the rows of one batch are processed each by its own.
            temperature=draw(st.sampled_from([1.0, 0.6, 1.4])),
            top_k_filter=draw(st.sampled_from([0, 0, 4, 40])),
            top_p=draw(st.sampled_from([1.0, 1.0, 0.9, 0.6])),
            min_p=draw(st.sampled_from([0.0, 0.0, 0.05])),
        )
        out.append(TreeRequest(" ".join(draw(st.sampled_from(prompts))), params))
    return out


def assert_batched_trees_are_exact(lm: LoadedModel, batch: list[TreeRequest], max_batch: int) -> None:
    together = build_trees(lm, batch, max_batch=max_batch)
    for request, result in zip(batch, together, strict=True):
        alone = build_tree(lm, request.prompt, request.params, max_batch=max_batch)
        assert [(n.token_id, n.parent_id, n.queue_depth, n.finish_reason) for n in result.nodes] == [
            (n.token_id, n.parent_id, n.queue_depth, n.finish_reason) for n in alone.nodes
        ]
        assert [n.prob for n in result.nodes] == pytest.approx([n.prob for n in alone.nodes],
                                                              abs=PROB_TOLERANCE)
        sampler = {name: getattr(request.params, name) for name in SAMPLER_PARAMETERS}
        reference = sequential_tree(lm.model, encode_prompt(lm, request.prompt), set(lm.stop_ids),
                                    request.params.to_dict(), depth_limit=lm.context_length,
                                    warp=plain_sampler(**sampler))
        assert_matches_reference(result.nodes, reference.root)


PROPERTY = settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(batch=requests(), max_batch=st.sampled_from([3, 17, 256]))
def test_demo_model_trees_in_one_batch_are_exact(demo, batch: list[TreeRequest], max_batch: int) -> None:  # type: ignore[no-untyped-def]
    assert_batched_trees_are_exact(demo, batch, max_batch)


@pytest.mark.parametrize("architecture", ["gemma2", "gemma3", "llama"])
def test_tiny_architectures_trees_in_one_batch_are_exact(tiny_model_dirs, architecture: str) -> None:  # type: ignore[no-untyped-def]
    lm = load_model(ModelSpec(name=str(tiny_model_dirs[architecture])))

    @PROPERTY
    @given(batch=requests(), max_batch=st.sampled_from([3, 17, 256]))
    def check(batch: list[TreeRequest], max_batch: int) -> None:
        assert_batched_trees_are_exact(lm, batch, max_batch)

    check()


def test_trees_of_one_prompt_share_its_kv(demo) -> None:  # type: ignore[no-untyped-def]
    """Ten parameter sets over one prompt: the prompt is evaluated once, and the trees still differ."""
    from tokentree.engine.analysis import tree_builder
    from tokentree.engine.expand import Expander, run_trees
    from tokentree.engine.runner import ModelRunner

    prompt = "Once upon a time"
    ids = encode_prompt(demo, prompt)
    runner = ModelRunner(demo.model, top_k=10)
    sets = [TreeParams(min_branch_threshold=t, max_branch_threshold=t) for t in (0.05, 0.1, 0.2, 0.3)]
    trees = [Expander(tree_builder(demo, prompt, ids, p), runner, ids) for p in sets]
    run_trees(trees)
    prompt_passes = (len(ids) + 511) // 512
    # One prefill for all four, and their levels share forward passes.
    assert runner.forward_passes <= prompt_passes + max(t.stats.forward_passes for t in trees)
    assert sum(t.stats.forward_passes for t in trees) > 2 * runner.forward_passes
    assert len({len(t.builder.nodes) for t in trees}) > 1


def test_bf16_trees_in_one_batch(demo) -> None:  # type: ignore[no-untyped-def]
    """bf16 keeps working: batched trees build, and their probabilities track fp32's."""
    lm = load_model(ModelSpec(name="demo", dtype="bf16"))
    assert lm.model.dtype == torch.bfloat16
    batch = [TreeRequest("Once upon a time", TreeParams(max_nodes=60)),
             TreeRequest("The capital of France is", TreeParams(max_nodes=60, min_branch_threshold=0.05))]
    low = build_trees(lm, batch)
    full = build_trees(demo, batch)
    for a, b in zip(low, full, strict=True):
        assert len(a.nodes) > 5
        # The root's children come from the same prompt: bf16 rounds, it does not reorder the top choice.
        assert a.nodes[1].token_id == b.nodes[1].token_id
        assert a.nodes[1].prob == pytest.approx(b.nodes[1].prob, abs=0.05)
