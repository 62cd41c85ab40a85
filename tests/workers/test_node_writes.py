"""Bulk, idempotent node writes (models/node_writes.py) on Postgres and on SQLite."""

from __future__ import annotations

import dataclasses
import json
import math
import threading
import time
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from tokentree.engine.tree import Candidate, candidates_json, unexplored_mass
from tokentree.migrations import upgrade_database
from tokentree.models import jobs
from tokentree.models.db import make_engine, make_session_factory
from tokentree.models.node_reads import tree_json
from tokentree.models.node_writes import (
    Expansion,
    Finish,
    Limits,
    NewChild,
    StepToWrite,
    load_nodes,
    open_node_ids,
    path_tokens,
    start_tree,
    tree_totals,
    write_step,
    write_steps,
)
from tokentree.models.schema import Job, NodeRow

NO_LIMITS = Limits(max_nodes=1_000_000, max_completed_paths=1_000_000)
CANDIDATES = candidates_json([Candidate(10, "a", 0.6), Candidate(11, "b", 0.3)])


@pytest.fixture(scope="module")
def sqlite_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[sessionmaker[Session]]:
    url = f"sqlite+pysqlite:///{tmp_path_factory.mktemp('sqlite') / 'nodes.sqlite3'}"
    upgrade_database(url)
    engine = make_engine(url)
    yield make_session_factory(engine)
    engine.dispose()


@pytest.fixture(params=["postgres", "sqlite"])
def factory(request: pytest.FixtureRequest) -> sessionmaker[Session]:
    if request.param == "postgres":
        return request.getfixturevalue("session_factory")
    return request.getfixturevalue("sqlite_factory")


def running_job(factory: sessionmaker[Session], prompt: str = "p") -> tuple[str, int]:
    with factory() as session:
        job = jobs.create_job(session, kind="tree", prompt=prompt, model="demo", parameters={})
        start = start_tree(session, job.id, prompt)
        assert start is not None and start.root is not None and start.root.text == prompt
        again = start_tree(session, job.id, prompt)  # the root is made once only
        assert again is not None and again.root is None and again.node_count == 1
        assert again.started_at == start.started_at  # the first start's time stays
    return str(job.id), start.root.id


def expansion(node_id: int, depth: int, tokens: list[int], prob: float = 0.4) -> Expansion:
    return Expansion(
        node_id=node_id,
        depth=depth,
        candidates_json=CANDIDATES,
        threshold=0.2,
        queue_depth=3,
        entropy=1.5,
        children=[NewChild(t, f"t{t}", prob, -0.9, prob) for t in tokens],
    )


def counts(factory: sessionmaker[Session], job_id: str) -> tuple[int, int, int]:
    with factory() as session:
        job = jobs.get_job(session, job_id)
        assert job is not None
        rows = session.scalar(select(func.count()).select_from(NodeRow).where(NodeRow.job_id == job.id))
        return job.node_count, job.completed_paths, rows or 0


def test_a_step_writes_children_best_first_and_marks_its_pops(factory: sessionmaker[Session]) -> None:
    job_id, root = running_job(factory)
    with factory() as session:
        written = write_step(session, job_id, [expansion(root, 0, [5, 1, 9])], NO_LIMITS, "w1")
        assert written.running and written.outcomes == ["applied"]
        kids = written.child_ids[0]
        assert kids == sorted(kids)  # ids grow best first: the API lists children by id
        assert open_node_ids(session, job_id, [root]) == kids
        assert [load_nodes(session, job_id, kids)[k].token_id for k in kids] == [5, 1, 9]
        assert load_nodes(session, job_id, [root])[root].is_expanded
        assert open_node_ids(session, job_id) == kids
        # A child created and popped in the same step is named by parent and token.
        written = write_step(
            session,
            job_id,
            [
                expansion(kids[0], 1, [1, 7]),
                Finish(node_id=None, reason="stop", parent_id=kids[0], token_id=1),
                Finish(node_id=kids[2], reason="max_depth"),
            ],
            NO_LIMITS,
            "w1",
        )
        assert written.outcomes == ["applied", "applied", "applied"]
        stop_child = written.child_ids[0][0]
        assert written.finished_children == {stop_child}
        assert path_tokens(session, job_id, [written.child_ids[0][1]]) == {written.child_ids[0][1]: [5, 7]}
        expanded_by = session.scalar(select(NodeRow.expanded_by).where(NodeRow.id == root))
    assert expanded_by == "w1"
    assert counts(factory, job_id) == (6, 1, 6)


def test_text_no_database_can_hold_is_stored_replaced_and_candidates_as_written(
    factory: sessionmaker[Session],
) -> None:
    # A byte-level tokenizer can decode a token to NUL, which Postgres text cannot hold.
    job_id, root = running_job(factory)
    step = Expansion(node_id=root, depth=0, candidates_json=CANDIDATES, threshold=0.2, queue_depth=1,
                     entropy=None, children=[NewChild(0, "a\x00b", 0.5, -0.7, 0.5)])
    with factory() as session:
        written = write_step(session, job_id, [step], NO_LIMITS, "w1")
        child = written.child_ids[0][0]
        assert session.scalar(select(NodeRow.text).where(NodeRow.id == child)) == "a\ufffdb"
        assert session.scalar(select(NodeRow.candidates).where(NodeRow.id == root)) == CANDIDATES


def test_a_redone_step_changes_nothing_and_maps_to_the_same_rows(factory: sessionmaker[Session]) -> None:
    job_id, root = running_job(factory)
    step = [expansion(root, 0, [3, 4])]
    with factory() as session:
        first = write_step(session, job_id, step, NO_LIMITS, "w1")
        again = write_step(session, job_id, step, NO_LIMITS, "w2")
    assert first.outcomes == ["applied"] and again.outcomes == ["done"]
    assert again.child_ids == [[]]  # nothing new; the children were put on the frontier the first time
    assert counts(factory, job_id) == (3, 0, 3)
    with factory() as session:
        assert (
            session.scalar(select(NodeRow.expanded_by).where(NodeRow.id == root)) == "w1"
        )  # the first write stays


def test_limits_are_checked_before_every_pop(factory: sessionmaker[Session]) -> None:
    job_id, root = running_job(factory)
    with factory() as session:
        kids = write_step(session, job_id, [expansion(root, 0, [1, 2, 3])], NO_LIMITS, "w").child_ids[0]
        limits = Limits(max_nodes=6, max_completed_paths=1)
        written = write_step(
            session,
            job_id,
            [expansion(kids[0], 1, [1, 2, 3]), Finish(kids[1], "stop"), Finish(kids[2], "stop")],
            limits,
            "w",
        )
    # Two of three children fit under max_nodes=6, which then ends the tree: nothing after is applied.
    assert written.outcomes == ["applied", "skipped", "skipped"]
    assert [len(ids) for ids in written.child_ids] == [2, 0, 0]
    assert counts(factory, job_id) == (6, 0, 6)


def test_nothing_is_written_once_the_job_is_cancelled(factory: sessionmaker[Session]) -> None:
    job_id, root = running_job(factory)
    with factory() as session:
        assert jobs.cancel_job(session, job_id)
        written = write_step(session, job_id, [expansion(root, 0, [1])], NO_LIMITS, "w")
    assert written.status == "cancelled" and not written.running
    assert counts(factory, job_id) == (1, 0, 1)


def test_concurrent_writers_never_pass_max_nodes(session_factory: sessionmaker[Session]) -> None:
    """Two workers expanding different nodes of one job at once: the job's row lock serializes them."""
    job_id, root = running_job(session_factory)
    with session_factory() as session:
        kids = write_step(
            session, job_id, [expansion(root, 0, list(range(1, 41)))], NO_LIMITS, "w"
        ).child_ids[0]
    limits = Limits(max_nodes=500, max_completed_paths=1_000_000)

    def expand(mine: list[int]) -> None:
        with session_factory() as session:
            for node in mine:
                write_step(session, job_id, [expansion(node, 1, list(range(100, 120)))], limits, "w")

    threads = [threading.Thread(target=expand, args=(kids[i::2],)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert counts(session_factory, job_id) == (500, 0, 500)


def test_postgres_takes_20000_nodes_a_second(
    session_factory: sessionmaker[Session], pg_engine: Engine
) -> None:
    """Steps of 256 expansions with two children each, as a worker writes them (the bench's number is
    the real measure; this guards against a per-row round trip creeping back in)."""
    job_id, root = running_job(session_factory)
    frontier, written_nodes = [root], 0
    started = time.perf_counter()
    with session_factory() as session:
        while written_nodes < 20_000:
            batch, frontier = frontier[:256], frontier[256:]
            written = write_step(session, job_id, [expansion(n, 1, [1, 2]) for n in batch], NO_LIMITS, "w")
            for ids in written.child_ids:
                frontier.extend(ids)
                written_nodes += len(ids)
    rate = written_nodes / (time.perf_counter() - started)
    print(f"{rate:.0f} nodes/s")
    # 20,000+/s on a quiet machine; the bound leaves room for a CI machine under load.
    assert rate > 5_000
    with session_factory() as session:
        job = session.get(Job, jobs.as_job_id(job_id))
        assert job is not None and job.node_count == written_nodes + 1


def _tree_rows(factory: sessionmaker[Session], job_id: str) -> list[tuple]:  # type: ignore[type-arg]
    """A job's nodes as (depth, token, finish, threshold, parent's token), by id: what a step wrote."""
    with factory() as session:
        key = jobs.as_job_id(job_id)
        rows = session.scalars(select(NodeRow).where(NodeRow.job_id == key).order_by(NodeRow.id))
        nodes = {n.id: n for n in rows}
        return [(n.depth, n.token_id, n.finish_reason, n.threshold,
                 nodes[n.parent_id].token_id if n.parent_id in nodes else None) for n in nodes.values()]


def test_a_batch_of_steps_writes_what_the_steps_write_alone(factory: sessionmaker[Session]) -> None:
    """`write_steps`: many jobs' steps (one job twice, one job cancelled, limits reached in one) in one
    transaction give the rows, counts and results that writing each step alone gives."""
    def steps(jobs_: list[tuple[str, int]]) -> list[StepToWrite]:
        (a, root_a), (b, root_b), (c, root_c), (d, _) = jobs_
        return [
            StepToWrite(a, [expansion(root_a, 0, [5, 6, 7])], NO_LIMITS, "w"),
            StepToWrite(b, [expansion(root_b, 0, [1, 2]), Finish(None, "stop", root_b, 2)], NO_LIMITS, "w"),
            StepToWrite(c, [expansion(root_c, 0, [3, 4, 8])], Limits(max_nodes=3, max_completed_paths=9),
                        "w"),
            StepToWrite(d, [Finish(None, "stop", 1, 1)], NO_LIMITS, "w"),
        ]

    def fresh() -> list[tuple[str, int]]:
        made = [running_job(factory, prompt) for prompt in "abcd"]
        with factory() as session:
            jobs.finish_job(session, made[3][0], "cancelled")
        return made

    alone_jobs, together_jobs = fresh(), fresh()
    alone = []
    for step in steps(alone_jobs):
        with factory() as session:
            alone.append(write_step(session, step.job_id, step.pops, step.limits, step.worker))
    with factory() as session:
        together = write_steps(session, steps(together_jobs))
    for one, many in zip(alone, together, strict=True):
        assert (one.status, one.node_count, one.completed_paths, one.outcomes) == (
            many.status, many.node_count, many.completed_paths, many.outcomes)
        assert len(one.finished_children) == len(many.finished_children)
        assert [len(ids) for ids in one.child_ids] == [len(ids) for ids in many.child_ids]
    for a, b in zip(alone_jobs, together_jobs, strict=True):
        assert _tree_rows(factory, a[0]) == _tree_rows(factory, b[0])
        assert counts(factory, a[0]) == counts(factory, b[0])
    # The same batch again (a redelivered write) changes nothing: its pops were done already (and c is
    # at its node limit).
    with factory() as session:
        again = write_steps(session, steps(together_jobs))
    assert [w.outcomes for w in again][:3] == [["done"], ["done", "skipped"], ["skipped"]]
    for a, b in zip(alone_jobs, together_jobs, strict=True):
        assert _tree_rows(factory, a[0]) == _tree_rows(factory, b[0])


def test_node_measures_are_stored_and_read_back(factory: sessionmaker[Session]) -> None:
    """Raw probabilities, a token's bytes and an expansion's unexplored mass go in and come back out (in the
    tree JSON the API serves, and in the coverage a finished job records), alone and in a batch; a write
    that keeps fewer children than were asked (max_nodes) records the mass of those it kept."""
    def measured(node_id: int, depth: int) -> Expansion:
        children = [NewChild(5, "\ufffd", 0.5, math.log(0.5), 0.5, raw_prob=0.25, raw_logprob=math.log(0.25),
                             token_bytes=b"\xe2\x80"),
                    NewChild(6, "b", 0.3, math.log(0.3), 0.3, raw_prob=0.35, raw_logprob=math.log(0.35))]
        return dataclasses.replace(expansion(node_id, depth, []), children=children,
                                   unexplored_mass=unexplored_mass([0.5, 0.3]))

    (whole, root_whole), (cut, root_cut) = running_job(factory, "w"), running_job(factory, "c")
    with factory() as session:
        write_steps(session, [StepToWrite(whole, [measured(root_whole, 0)], NO_LIMITS, "w"),
                              StepToWrite(cut, [measured(root_cut, 0)], Limits(2, 9), "w")])
    for job_id, mass, kept in ((whole, 0.2, 2), (cut, 0.5, 1)):
        with factory() as session:
            job = jobs.get_job(session, job_id)
            assert job is not None
            tree = json.loads(tree_json(session, job) or "null")["tree"]
            totals = tree_totals(session, job_id)
        assert tree["unexplored_mass"] == pytest.approx(mass)
        assert len(tree["children"]) == kept
        first = tree["children"][0]
        assert (first["prob"], first["raw_prob"], first["bytes"]) == (0.5, 0.25, [0xE2, 0x80])
        assert first["raw_logprob"] == pytest.approx(math.log(0.25)) and first["unexplored_mass"] is None
        if kept > 1:
            assert "bytes" not in tree["children"][1] and tree["children"][1]["raw_prob"] == 0.35
        # Nothing completed yet; the leaves are the children kept.
        assert totals.coverage.completed_mass == 0.0
        assert totals.coverage.leaf_mass == pytest.approx(1.0 - mass)
        assert (totals.nodes, totals.expanded, totals.completed_paths) == (1 + kept, 1, 0)
