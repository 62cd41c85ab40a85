import pytest

from engine.params import LogprobsParams, ParameterError, TreeParams, branch_threshold


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
    }


def test_children_bound_covers_every_token_above_the_threshold() -> None:
    # Fewer than 1/T tokens can each exceed T: with T = 0.1 at most 9, and the bound must allow them.
    assert TreeParams().most_children() >= 9
    assert TreeParams(min_branch_threshold=0.0, max_nodes=50).most_children() == 50


@pytest.mark.parametrize(
    ("values", "field"),
    [({"max_new_tokens": 0}, "max_new_tokens"), ({"top_k": 0}, "top_k"), ({"top_k": 1000}, "top_k")],
)
def test_bad_logprobs_parameters(values: dict, field: str) -> None:
    with pytest.raises(ParameterError) as caught:
        LogprobsParams(**values)
    assert caught.value.field == field
