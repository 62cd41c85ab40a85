import pytest

from tokentree.engine.params import LogprobsParams, ParameterError, TreeParams, branch_threshold


@pytest.mark.parametrize(
    ("queue_depth", "expected"),
    [(0, 0.1), (1, 0.1 + 0.4 / 30), (15, 0.3), (30, 0.5), (31, 0.5), (10_000, 0.5)],
)
def test_threshold_rises_with_the_queue_and_saturates(queue_depth: int, expected: float) -> None:
    assert branch_threshold(queue_depth, TreeParams()) == pytest.approx(expected)


def test_threshold_is_constant_when_min_equals_max() -> None:
    params = TreeParams(min_branch_threshold=0.3, max_branch_threshold=0.3)
    assert [branch_threshold(q, params) for q in (0, 5, 30, 300)] == pytest.approx([0.3] * 4)


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"min_branch_threshold": -0.1}, "min_branch_threshold"),
        ({"max_branch_threshold": 1.5}, "max_branch_threshold"),
        ({"candidate_threshold": 2}, "candidate_threshold"),
        ({"min_branch_threshold": 0.6, "max_branch_threshold": 0.5}, "min_branch_threshold"),
        ({"soft_queue_limit": 0}, "soft_queue_limit"),
        ({"max_depth": 0}, "max_depth"),
        ({"max_completed_paths": 0}, "max_completed_paths"),
        ({"max_nodes": 0}, "max_nodes"),
        ({"max_nodes": 10**9}, "max_nodes"),
        ({"soft_queue_limit": 2.5}, "soft_queue_limit"),
        ({"min_branch_threshold": "0.1"}, "min_branch_threshold"),
        ({"max_depth": True}, "max_depth"),
        ({"max_candidates": 0}, "max_candidates"),
        ({"max_candidates": 101}, "max_candidates"),
        ({"temperature": 0.0}, "temperature"),
        ({"temperature": -1}, "temperature"),
        ({"temperature": float("nan")}, "temperature"),
        ({"temperature": 1e9}, "temperature"),
        ({"top_k_filter": -1}, "top_k_filter"),
        ({"top_k_filter": 2.0}, "top_k_filter"),
        ({"top_p": 1.01}, "top_p"),
        ({"min_p": -0.1}, "min_p"),
    ],
)
def test_bad_parameters_name_their_field(values: dict, field: str) -> None:
    with pytest.raises(ParameterError) as caught:
        TreeParams(**values)
    assert caught.value.field == field
    assert str(caught.value).startswith(field + ": ")


def test_unknown_parameter_names_are_rejected() -> None:
    with pytest.raises(ParameterError) as caught:
        TreeParams.from_dict({"max_dept": 5})
    assert caught.value.field == "max_dept"


def test_defaults_are_the_seed_experiment() -> None:
    assert TreeParams().to_dict() == {
        "min_branch_threshold": 0.1,
        "max_branch_threshold": 0.5,
        "soft_queue_limit": 30,
        "candidate_threshold": 0.01,
        "max_depth": 1000,
        "max_completed_paths": 5,
        "max_nodes": 100_000,
        # Ours: the seed's candidate count, and a sampler that changes nothing.
        "max_candidates": 10,
        "temperature": 1.0,
        "top_k_filter": 0,
        "top_p": 1.0,
        "min_p": 0.0,
    }


def test_children_bound_covers_every_token_above_the_threshold() -> None:
    # Fewer than 1/T tokens can each exceed T: with T = 0.1 at most 9, and the bound must allow them.
    assert TreeParams().most_children() >= 9
    assert TreeParams(min_branch_threshold=0.0, max_nodes=50).most_children() == 50


@pytest.mark.parametrize(
    ("values", "field"),
    [({"max_new_tokens": 0}, "max_new_tokens"), ({"top_k": 0}, "top_k"), ({"top_k": 1000}, "top_k"),
     ({"temperature": 0}, "temperature"), ({"top_p": 2}, "top_p")],
)
def test_bad_logprobs_parameters(values: dict, field: str) -> None:
    with pytest.raises(ParameterError) as caught:
        LogprobsParams(**values)
    assert caught.value.field == field


def test_temperature_is_a_positive_number_not_a_probability() -> None:
    assert TreeParams(temperature=2.5).temperature == 2.5  # above 1: floats are not all probabilities
    with pytest.raises(ParameterError) as caught:
        TreeParams(temperature=0)
    assert str(caught.value) == "temperature: must be greater than 0 and at most 100, got 0"
    described = {p["name"]: p for p in TreeParams.describe()}
    assert described["temperature"]["exclusive_minimum"] is True
    assert described["top_p"]["exclusive_minimum"] is False
