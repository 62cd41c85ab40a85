"""Sampler settings: the distributions the rule branches on, against a plain sampler over a fresh full
forward pass (bench/reference.py with tests/engine/plain_sampler.py); ties at the top-p boundary on
hand-made logits; defaults that change nothing; rows of one batch with settings of their own; and the
probability mass a tree covers, on hand-made trees."""

from __future__ import annotations

import json
import math

import pytest
import torch

from bench.reference import PROB_TOLERANCE, assert_matches_reference, sequential_tree
from tests.engine.plain_sampler import plain_sampler
from tokentree.engine.analysis import TreeRequest, analyze_logprobs, build_tree, build_trees
from tokentree.engine.loading import LoadedModel, encode_prompt
from tokentree.engine.params import LogprobsParams, ParameterError, TreeParams
from tokentree.engine.runner import reduce_logits
from tokentree.engine.sampling import SamplerSettings, processed_logprobs, processed_rows
from tokentree.engine.scheduler import Distribution, TreeBuilder
from tokentree.engine.tree import coverage, tree_json_text, unexplored_mass

SAMPLERS = [
    {"temperature": 0.7, "top_p": 0.9},
    {"temperature": 1.6, "top_k_filter": 5},
    {"min_p": 0.1},
    {"temperature": 1.3, "top_p": 0.6, "min_p": 0.05},
    {"temperature": 0.5, "top_k_filter": 3, "top_p": 0.95, "min_p": 0.02},
]
# Small trees that still branch: the reference runs a full forward pass per node.
SMALL = {"max_nodes": 120, "max_completed_paths": 8, "min_branch_threshold": 0.05,
         "max_branch_threshold": 0.3, "soft_queue_limit": 40, "candidate_threshold": 0.0,
         "max_candidates": 12}


@pytest.mark.parametrize("sampler", SAMPLERS, ids=[str(s) for s in SAMPLERS])
def test_trees_branch_on_the_samplers_distribution(demo: LoadedModel, sampler: dict) -> None:
    params = TreeParams(**SMALL, **sampler)
    prompt = "Once upon a time"
    result = build_tree(demo, prompt, params, max_batch=16)
    reference = sequential_tree(demo.model, encode_prompt(demo, prompt), set(demo.stop_ids), params.to_dict(),
                                warp=plain_sampler(**sampler))
    assert assert_matches_reference(result.nodes, reference.root) > 30
    # The sampler changed something: probabilities differ from the model's own, and filtered tokens
    # (probability 0) are never candidates even with candidate_threshold 0.
    assert any(abs(n.prob - n.raw_prob) > 1e-3 for n in result.nodes[1:] if n.raw_prob is not None)
    for node in result.nodes:
        assert all(c.prob > 0 and c.raw_prob is not None and c.logprob is not None for c in node.candidates)
        assert all(math.isclose(math.exp(c.raw_logprob), c.raw_prob, rel_tol=1e-6)  # type: ignore[arg-type]
                   for c in node.candidates)


def test_temperature_and_top_p_change_the_tree(demo: LoadedModel) -> None:
    """The README's example: what the sampler does to "The secret to happiness is"."""
    prompt = "The secret to happiness is"
    plain = build_tree(demo, prompt, TreeParams())
    assert plain.completed_paths[0].text == " to enjoy the little things.<eos>"
    # A lower temperature and top-p concentrate the mass: the completed paths cover more of it.
    focused = build_tree(demo, prompt, TreeParams(temperature=0.7, top_p=0.9))
    assert focused.metadata["coverage"]["completed_mass"] > plain.metadata["coverage"]["completed_mass"] + 0.2
    # A higher one flattens every step: the short answer wins, as fewer steps lose less.
    hot = build_tree(demo, prompt, TreeParams(temperature=1.5))
    assert hot.completed_paths[0].text == " simple.<eos>"


def test_default_settings_are_the_identity_and_skip_the_warpers(demo: LoadedModel) -> None:
    assert SamplerSettings().is_identity
    assert SamplerSettings(temperature=1, top_k_filter=0, top_p=1, min_p=0).is_identity
    assert not SamplerSettings(top_k_filter=50).is_identity
    logits = torch.randn(3, 50)
    raw = torch.log_softmax(logits, dim=-1)
    assert processed_rows(logits, raw, [SamplerSettings()] * 3) is raw  # nothing computed at all
    # Today's distributions exactly: processed equals raw, bit for bit.
    [dist] = reduce_logits(logits[:1], 10, [SamplerSettings()])
    [today] = reduce_logits(logits[:1], 10)
    assert dist == today and dist.probs == dist.raw_probs and dist.logprobs == dist.raw_logprobs
    # And the default tree is the plain rule's, with raw equal to processed everywhere.
    result = build_tree(demo, "The secret to happiness is", TreeParams())
    reference = sequential_tree(demo.model, encode_prompt(demo, "The secret to happiness is"),
                                set(demo.stop_ids), TreeParams().to_dict())
    assert assert_matches_reference(result.nodes, reference.root) > 20
    assert all(n.raw_prob == n.prob and n.raw_logprob == n.logprob for n in result.nodes[1:])


def test_a_top_p_boundary_tie_keeps_every_tied_token() -> None:
    """[0.4, 0.25, 0.25, 0.1] with top_p 0.6: 0.4 + one 0.25 reaches 0.6, and the two 0.25s are tied.
    transformers keeps one of them, whichever its sort puts last; the engine keeps both, whatever their
    order, as top-k and min-p keep ties."""
    probs = torch.tensor([0.4, 0.25, 0.25, 0.1])
    expected = torch.tensor([0.4, 0.25, 0.25, 0.0]) / 0.9
    for order in ([0, 1, 2, 3], [1, 3, 0, 2], [3, 2, 1, 0], [2, 0, 3, 1]):
        logits = probs[order].log()[None, :]
        got = processed_logprobs(logits, SamplerSettings(top_p=0.6)).exp()[0]
        assert torch.allclose(got, expected[order], atol=1e-6), order
    # A tie above the boundary changes nothing: 0.4 alone reaches top_p 0.3.
    got = processed_logprobs(probs.log()[None, :], SamplerSettings(top_p=0.3)).exp()[0]
    assert torch.allclose(got, torch.tensor([1.0, 0.0, 0.0, 0.0]))
    # A tie at the top with top_p 0: both most likely tokens stay.
    tied_top = torch.tensor([[2.0, 2.0, 1.0]])
    got = processed_logprobs(tied_top, SamplerSettings(top_p=0.0)).exp()[0]
    assert torch.allclose(got, torch.tensor([0.5, 0.5, 0.0]))


def test_rows_of_one_batch_get_their_own_settings() -> None:
    torch.manual_seed(0)
    logits = torch.randn(6, 40) * 3
    focused = SamplerSettings(temperature=0.7, top_p=0.9)
    settings = [focused, SamplerSettings(), SamplerSettings(top_k_filter=4), focused,
                SamplerSettings(min_p=0.2), SamplerSettings()]
    together = reduce_logits(logits, 8, settings)
    for row, setting in enumerate(settings):
        [alone] = reduce_logits(logits[row : row + 1], 8, [setting])
        assert together[row] == alone
        plain = plain_sampler(**{f: getattr(setting, f) for f in ("temperature", "top_k_filter", "top_p",
                                                                   "min_p")})(logits[row])
        assert alone.probs == pytest.approx(plain.topk(8).values.tolist(), abs=1e-6)
        raw = torch.softmax(logits[row], -1)[alone.token_ids]
        assert alone.raw_probs == pytest.approx(raw.tolist(), abs=1e-6)
        entropy = float(torch.special.entr(plain).sum())
        assert alone.entropy == pytest.approx(entropy, abs=1e-5)  # the processed distribution's


def test_a_batch_mixing_settings_equals_each_tree_alone(demo: LoadedModel) -> None:
    requests = [TreeRequest("The secret to happiness is", TreeParams(**sampler)) for sampler in SAMPLERS[:3]]
    requests.append(TreeRequest("The secret to happiness is", TreeParams()))
    requests.append(TreeRequest("My favourite food is", TreeParams(**SAMPLERS[3])))
    together = build_trees(demo, requests, max_batch=24)
    for request, result in zip(requests, together, strict=True):
        alone = build_tree(demo, request.prompt, request.params, max_batch=24)
        assert [(n.token_id, n.parent_id, n.queue_depth) for n in result.nodes] == [
            (n.token_id, n.parent_id, n.queue_depth) for n in alone.nodes]
        assert [n.prob for n in result.nodes] == pytest.approx([n.prob for n in alone.nodes],
                                                              abs=PROB_TOLERANCE)
        assert [n.raw_prob for n in result.nodes] == pytest.approx([n.raw_prob for n in alone.nodes],
                                                                  abs=PROB_TOLERANCE)
    # The settings made different trees of one prompt (min_p 0.1 happens to leave the default's).
    assert len({tuple((n.token_id, n.parent_id) for n in r.nodes) for r in together[:4]}) >= 3


def test_logprobs_choose_on_the_samplers_distribution(demo: LoadedModel) -> None:
    params = LogprobsParams(max_new_tokens=12, top_k=8, temperature=0.6, top_k_filter=3)
    record = analyze_logprobs(demo, "Once upon a time", params)
    plain = analyze_logprobs(demo, "Once upon a time", LogprobsParams(max_new_tokens=12, top_k=8))
    assert [s["token"] for s in record["data"]] == [s["token"] for s in plain["data"]]  # greedy either way
    for step, before in zip(record["data"], plain["data"], strict=True):
        assert step["raw_logprob"] == pytest.approx(before["logprob"], abs=1e-5)
        assert step["prob"] >= step["raw_prob"]  # sharpened and filtered: the best token gains
        assert len(step["other_tokens"]) <= 3  # the top-k filter leaves three tokens at most
        assert math.isclose(sum(o["prob"] for o in step["other_tokens"]), 100.0, rel_tol=1e-4)
    assert record["metadata"]["parameters"]["temperature"] == 0.6


def test_sampler_settings_are_checked_like_a_logits_processor() -> None:
    with pytest.raises(ParameterError) as caught:
        SamplerSettings(temperature=0.0)
    assert caught.value.field == "temperature" and "greater than 0" in caught.value.message
    with pytest.raises(ParameterError) as caught:
        SamplerSettings(top_p=1.5)
    assert caught.value.field == "top_p"
    assert SamplerSettings.of(TreeParams(temperature=0.5, min_p=0.1)) == SamplerSettings(temperature=0.5,
                                                                                          min_p=0.1)


# -- probability mass, on hand-made trees ---------------------------------------------------------------


def _builder(params: TreeParams, table: dict[tuple[int, ...], dict[int, float]],
             lm: LoadedModel | None = None) -> TreeBuilder:
    """Grow a tree whose distributions are `table[path]` (token -> probability); token 0 stops. With
    `lm`, tokens are that model's (their text and bytes)."""
    if lm is None:
        builder = TreeBuilder(params, {0}, root_text="p", decode=str)
    else:
        builder = TreeBuilder(params, {0}, root_text="p", decode=lm.decode, token_bytes=lm.token_bytes)
    paths: dict[int, tuple[int, ...]] = {0: ()}
    while not builder.done():
        wanted = builder.schedule(64)
        dists = {}
        for node_id in wanted:
            probs = table[paths[node_id]]
            dists[node_id] = Distribution(token_ids=list(probs), probs=list(probs.values()),
                                          logprobs=[math.log(p) for p in probs.values()], entropy=0.0)
        for child in builder.update(dists):
            node = builder.nodes[child]
            paths[child] = (*paths[node.parent_id], node.token_id)  # type: ignore[index]
    return builder


def test_unexplored_mass_and_coverage_of_a_hand_made_tree() -> None:
    # Root: 1 (0.5) and 2 (0.3) branch, 3 (0.2) does not (T = 0.25 flat). Below 1: stop 0 (0.9) and 4
    # (0.1, left out). Below 2: 0 (0.6) and 5 (0.4) both branch; below (2, 5): stop (1.0).
    table = {(): {1: 0.5, 2: 0.3, 3: 0.2}, (1,): {0: 0.9, 4: 0.1}, (2,): {0: 0.6, 5: 0.4},
             (2, 5): {0: 1.0}}
    params = TreeParams(min_branch_threshold=0.25, max_branch_threshold=0.25, max_completed_paths=10)
    builder = _builder(params, table)
    by_path = {}
    for node in builder.nodes:
        path, walk = [], node
        while walk.parent_id is not None:
            path.append(walk.token_id)
            walk = builder.nodes[walk.parent_id]
        by_path[tuple(path[::-1])] = node
    assert by_path[()].unexplored_mass == pytest.approx(0.2)
    assert by_path[(1,)].unexplored_mass == pytest.approx(0.1)
    assert by_path[(2,)].unexplored_mass == pytest.approx(0.0)
    assert by_path[(2, 5)].unexplored_mass == pytest.approx(0.0)
    assert by_path[(1, 0)].unexplored_mass is None  # a leaf: never expanded
    found = coverage(builder.nodes)
    # Completed: 1 0 (0.45), 2 0 (0.18), 2 5 0 (0.12); every leaf is completed here.
    assert found.completed_mass == pytest.approx(0.45 + 0.18 + 0.12)
    assert found.leaf_mass == pytest.approx(0.75)
    # The mass is conserved: leaves plus what the expanded nodes left out is the whole.
    left_out = sum(n.cumulative_prob * n.unexplored_mass for n in builder.nodes
                   if n.unexplored_mass is not None)
    assert found.leaf_mass + left_out == pytest.approx(1.0)


def test_coverage_counts_open_and_depth_cut_leaves() -> None:
    table = {(): {1: 0.6, 2: 0.4}, (1,): {0: 0.5, 3: 0.5}, (2,): {3: 0.7, 4: 0.3}, (1, 3): {0: 1.0},
             (2, 3): {5: 1.0}, (2, 4): {0: 1.0}}
    params = TreeParams(min_branch_threshold=0.2, max_branch_threshold=0.2, max_depth=3,
                        max_completed_paths=10)
    builder = _builder(params, table)
    assert {n.finish_reason for n in builder.nodes if n.depth == 3} == {"max_depth"}
    found = coverage(builder.nodes)
    assert found.completed_mass == pytest.approx(0.3)  # 1 0; the rest end at max_depth
    assert found.leaf_mass == pytest.approx(1.0)  # every token above T: nothing unexplored
    # A tree stopped early: its open nodes are leaves too.
    stopped = TreeBuilder(params, {0}, root_text="p", decode=str)
    stopped.update({0: Distribution([1, 2, 3], [0.5, 0.3, 0.2], [math.log(p) for p in (0.5, 0.3, 0.2)], 0.0)})
    found = coverage(stopped.nodes)
    assert found.completed_mass == 0.0 and found.leaf_mass == pytest.approx(0.8)


def test_unexplored_mass_never_dips_below_zero() -> None:
    assert unexplored_mass([0.7, 0.3000000000000001]) == 0.0
    assert unexplored_mass([]) == 1.0


# -- bytes of tokens that are not valid UTF-8 on their own ------------------------------------------------


def test_a_token_that_is_part_of_a_character_carries_its_bytes(demo: LoadedModel) -> None:
    """The demo tokenizer writes "é" (c3 a9) as two byte tokens, each decoding to U+FFFD alone."""
    ids = demo.tokenizer("café", add_special_tokens=False).input_ids
    partial = [i for i in ids if demo.decode(i) == "\ufffd"]
    assert len(partial) == 2
    assert b"".join(demo.token_bytes(i) for i in partial) == "é".encode()  # type: ignore[misc]
    assert demo.token_bytes(ids[0]) is None  # valid text: no bytes
    # Through the rule and into the JSON: a node and a candidate with U+FFFD text carry their bytes.
    first, second = partial
    table = {(): {first: 0.7, 300: 0.3}, (first,): {second: 0.9, 0: 0.1}, (first, second): {0: 1.0},
             (300,): {0: 1.0}}
    builder = _builder(TreeParams(max_completed_paths=10), table, demo)
    document = json.loads(tree_json_text(builder.nodes, {}))
    node = document["tree"]["children"][0]
    assert node["text"] == "\ufffd" and bytes(node["bytes"]) == b"\xc3"
    assert bytes(node["children"][0]["bytes"]) == b"\xa9"
    candidates = document["tree"]["candidates"]
    assert [bytes(c["bytes"]) if "bytes" in c else None for c in candidates] == [b"\xc3", None]
    assert "bytes" not in document["tree"]["children"][1]  # " up" is valid text
