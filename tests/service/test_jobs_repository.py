"""The job repository on both backends: lifecycle, exactly-once finishing, listing, deleting, counts."""

from __future__ import annotations

import threading
import uuid

import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bench.factories import insert_tree, make_job, node_rows, synthetic_tree
from tokentree.models import jobs
from tokentree.models.db import make_session_factory
from tokentree.models.node_writes import start_tree
from tokentree.models.schema import NodeRow


def test_a_new_job_is_queued_with_zero_counts(db_session: Session) -> None:
    job = make_job(db_session, chat=True, prefix="Sure,")
    again = jobs.get_job(db_session, str(job.id))
    assert again is not None
    assert (again.status, again.node_count, again.completed_paths) == ("queued", 0, 0)
    assert (again.chat, again.prefix, again.parameters) == (True, "Sure,", {"max_nodes": 100})
    assert again.started_at is None and again.finished_at is None


def test_get_job_of_an_unknown_id_is_none(db_session: Session) -> None:
    assert jobs.get_job(db_session, uuid.uuid4()) is None
    with pytest.raises(ValueError):
        jobs.get_job(db_session, "not-a-uuid")


def test_lifecycle_queued_running_succeeded(db_session: Session) -> None:
    job = make_job(db_session)
    assert jobs.mark_running(db_session, job.id, "worker-a")
    assert jobs.mark_running(db_session, job.id, "worker-b")  # a second worker joins
    running = jobs.get_job(db_session, job.id)
    assert running is not None and running.status == "running"
    started = running.started_at
    assert jobs.finish_job(db_session, job.id, "succeeded", result={"stats": {"nodes": 3}})
    done = jobs.get_job(db_session, job.id)
    assert done is not None
    assert (done.status, done.started_at, done.result) == ("succeeded", started, {"stats": {"nodes": 3}})
    assert done.finished_at is not None and done.finished_at >= done.started_at  # type: ignore[operator]
    assert not jobs.mark_running(db_session, job.id, "worker-c")  # a late worker keeps off


def test_finish_happens_once(db_session: Session) -> None:
    job = make_job(db_session)
    assert jobs.finish_job(db_session, job.id, "failed", error="out of memory")
    assert not jobs.finish_job(db_session, job.id, "succeeded")
    assert not jobs.cancel_job(db_session, job.id)
    done = jobs.get_job(db_session, job.id)
    assert done is not None and (done.status, done.error) == ("failed", "out of memory")


def test_finish_refuses_a_non_terminal_status(db_session: Session) -> None:
    job = make_job(db_session)
    with pytest.raises(ValueError, match="terminal"):
        jobs.finish_job(db_session, job.id, "running")


def test_long_errors_keep_head_and_tail(db_session: Session) -> None:
    job = make_job(db_session)
    jobs.finish_job(db_session, job.id, "failed", error="head" + "x" * 100_000 + "tail")
    error = jobs.get_job(db_session, job.id).error  # type: ignore[union-attr]
    assert error is not None and len(error) < 9_000
    assert error.startswith("head") and error.endswith("tail")


@pytest.mark.services
def test_racing_finishers_have_exactly_one_winner(pg_session: Session) -> None:
    job = make_job(pg_session)
    jobs.mark_running(pg_session, job.id, "w")
    factory = make_session_factory(pg_session.get_bind())  # type: ignore[arg-type]
    barrier = threading.Barrier(8)
    wins: list[bool] = []

    def finish(status: str) -> None:
        with factory() as session:
            barrier.wait()
            wins.append(jobs.finish_job(session, job.id, status))

    threads = [threading.Thread(target=finish, args=(["succeeded", "cancelled"][i % 2],)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(wins) == [False] * 7 + [True]


def test_a_cancelled_job_stays_closed(db_session: Session) -> None:
    job = make_job(db_session)
    assert jobs.cancel_job(db_session, job.id)
    assert not jobs.cancel_job(db_session, job.id)  # once only
    assert not jobs.mark_running(db_session, job.id, "w")
    assert start_tree(db_session, job.id, "p") is None  # no worker starts it, nor gives it a root


def test_list_pages_newest_first_and_filters(db_session: Session) -> None:
    made = [make_job(db_session, prompt=f"prompt {i}") for i in range(5)]
    jobs.mark_running(db_session, made[1].id, "w")
    jobs.mark_running(db_session, made[3].id, "w")
    page, total = jobs.list_jobs(db_session, limit=2)
    assert total == 5
    assert [j.prompt for j in page] == ["prompt 4", "prompt 3"]
    page, _ = jobs.list_jobs(db_session, limit=2, offset=4)
    assert [j.prompt for j in page] == ["prompt 0"]
    page, total = jobs.list_jobs(db_session, status="running")
    assert total == 2 and [j.prompt for j in page] == ["prompt 3", "prompt 1"]
    assert jobs.count_by_status(db_session) == {"queued": 3, "running": 2, "succeeded": 0, "failed": 0,
                                                 "cancelled": 0}


def test_delete_removes_the_job_and_its_nodes(db_session: Session) -> None:
    keep, gone = make_job(db_session), make_job(db_session)
    insert_tree(db_session, keep.id, synthetic_tree(20, seed=1))
    insert_tree(db_session, gone.id, synthetic_tree(30, seed=2))
    assert jobs.delete_job(db_session, gone.id)
    assert not jobs.delete_job(db_session, gone.id)
    assert jobs.get_job(db_session, gone.id) is None
    counts = dict(db_session.execute(select(NodeRow.job_id, func.count()).group_by(NodeRow.job_id)).all())
    assert counts == {keep.id: 20}


def test_add_counts_adds_atomically_and_commits_with_the_caller(db_session: Session) -> None:
    job = make_job(db_session)
    jobs.add_counts(db_session, job.id, nodes=10, completed_paths=1)
    jobs.add_counts(db_session, job.id, nodes=5)
    db_session.rollback()  # not committed by add_counts: rolled back with the caller's transaction
    assert jobs.get_job(db_session, job.id).node_count == 0  # type: ignore[union-attr]
    jobs.add_counts(db_session, job.id, nodes=10, completed_paths=1)
    jobs.add_counts(db_session, job.id, nodes=5)
    db_session.commit()
    job = jobs.get_job(db_session, job.id)  # type: ignore[assignment]
    assert (job.node_count, job.completed_paths) == (15, 1)


def test_a_node_written_twice_is_one_row(db_session: Session) -> None:
    """The unique keys behind idempotent writes: (job, parent, token), and one root per job."""
    job = make_job(db_session)
    tree = synthetic_tree(10, seed=3)
    root_id = insert_tree(db_session, job.id, tree)[0]
    for rows in (node_rows(job.id, tree[:1], {}, "w"), node_rows(job.id, tree[1:2], {0: root_id}, "w")):
        with pytest.raises(IntegrityError):
            db_session.execute(insert(NodeRow), rows)
        db_session.rollback()
    assert db_session.scalar(select(func.count()).select_from(NodeRow)) == len(tree) == 10

