"""The node writer process: a step written from it has the effects of one written in-process, a write
that breaks its connection says so, and a writer that died is started again."""

from __future__ import annotations

import os
import signal

import pytest
import redis
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from tests.workers.test_node_writes import expansion, running_job
from tokentree.models.node_writes import Limits, load_nodes, open_node_ids
from tokentree.models.schema import NodeRow
from tokentree.models.settings import Settings
from tokentree.workers.errors import is_connection_loss
from tokentree.workers.frontier import RedisFrontier
from tokentree.workers.writer import ProcessWriter, StepWrite, WriterDied

LIMITS = Limits(max_nodes=1000, max_completed_paths=1000)


def step_for(job_id: str, root: int, tokens: list[int]) -> StepWrite:
    return StepWrite(job_id=job_id, unit="w1:unit", worker="w1", model="demo",
                     pops=[expansion(root, 0, tokens)], limits=LIMITS, lease_ttl_s=10.0)


@pytest.fixture()
def writer(settings: Settings) -> ProcessWriter:
    process_writer = ProcessWriter(settings)
    yield process_writer
    process_writer.close()


def test_a_step_written_from_the_writer_process(
    writer: ProcessWriter, session_factory: sessionmaker[Session], redis_client: redis.Redis
) -> None:
    job_id, root = running_job(session_factory)
    RedisFrontier(redis_client).load(job_id, [root])
    result = writer.submit(step_for(job_id, root, [4, 2, 7])).result()
    assert result.written.outcomes == ["applied"] and result.committed is not None
    with session_factory() as session:
        kids = open_node_ids(session, job_id, [root])
        assert [load_nodes(session, job_id, kids)[k].token_id for k in kids] == [4, 2, 7]
        assert result.written.child_ids == [kids]
        assert session.scalar(select(NodeRow.expanded_by).where(NodeRow.id == root)) == "w1"
    assert result.committed.open_count == 3  # the children are on the frontier, the root is not
    # Written again (a redone step): one effect, reported as such.
    again = writer.submit(step_for(job_id, root, [4, 2, 7])).result()
    assert again.written.outcomes == ["done"]


def test_a_writer_that_died_is_started_again(
    writer: ProcessWriter, session_factory: sessionmaker[Session], redis_client: redis.Redis
) -> None:
    writer.start()
    os.kill(writer._process.pid, signal.SIGKILL)
    writer._process.join(10)
    job_id, root = running_job(session_factory)
    RedisFrontier(redis_client).load(job_id, [root])
    # The dead process is noticed before sending (or, at worst, while waiting): either way one error
    # that is not a lost connection (so it counts as an attempt), and the next write works.
    try:
        result = writer.submit(step_for(job_id, root, [5])).result()
    except WriterDied as died:
        assert not is_connection_loss(died)
        result = writer.submit(step_for(job_id, root, [5])).result()
    assert result.written.outcomes == ["applied"]
