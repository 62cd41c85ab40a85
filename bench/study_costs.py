"""What a study's questions cost as the study grows: its fork points (each ranking) and its node export,
on studies of 20 jobs with 1,000, 4,000 and 16,000 nodes each (20,000 to 320,000 nodes) in Postgres.

The fork query groups the study's nodes by parent, so it reads each of the study's nodes once: its time
should grow with the study's nodes and no faster, and not with the rest of the table (a second, larger
study sits beside the measured one). The export reads the nodes in batches; its time and the largest
batch held are shown.

    python bench/study_costs.py [--postgres postgresql+psycopg://postgres@127.0.0.1:5432]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import text

from bench.factories import insert_tree, synthetic_tree
from bench.postgres import PG_SERVER, fresh_database
from tokentree.models.db import make_engine, make_session_factory
from tokentree.models.studies import FORK_RANKINGS, StudyJob, create_study, forks, node_batches, study_jobs

JOBS_PER_STUDY = 20
SIZES = (1_000, 4_000, 16_000)  # nodes per job
REPEATS = 5


def make_study(sessions, name: str, nodes_per_job: int) -> object:  # type: ignore[no-untyped-def]
    with sessions() as session:
        combinations = [StudyJob(prompt=f"Prompt {i}", model="demo", parameters={})
                        for i in range(JOBS_PER_STUDY)]
        study, made = create_study(session, name=name, request={}, kind="tree", combinations=combinations)
        for index, job in enumerate(made):
            insert_tree(session, job.id, synthetic_tree(nodes_per_job, seed=index, prompt=job.prompt))
        return study.id


def median_seconds(action) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def measure(session, study_id):  # type: ignore[no-untyped-def]
    """Each ranking's fork query, and one export of every node, in median seconds; the largest batch."""
    timings = {by: median_seconds(lambda by=by: forks(session, study_id, by, limit=50))
               for by in FORK_RANKINGS}
    job_ids = [job.id for job in study_jobs(session, study_id)]
    largest = 0

    def export() -> None:
        nonlocal largest
        for _, rows in node_batches(session, job_ids):
            largest = max(largest, len(rows))

    return timings, median_seconds(export), largest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgres", default=PG_SERVER)
    args = parser.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, Python {platform.python_version()}, "
          f"median of {REPEATS}\n")
    print("| study nodes | " + " | ".join(f"forks by {by} ms" for by in FORK_RANKINGS)
          + " | ms per 1k nodes (entropy) | export s | largest batch rows |")
    print("|---|" + "---|" * len(FORK_RANKINGS) + "---|---|---|")
    with fresh_database("tokentree_bench_studies", args.postgres) as url:
        engine = make_engine(url)
        sessions = make_session_factory(engine)
        make_study(sessions, "bystander", SIZES[-1])  # the rest of the table: never read by the queries
        for size in SIZES:
            study_id = make_study(sessions, f"study {size}", size)
            with sessions() as session:
                session.execute(text("ANALYZE nodes"))
                session.commit()
                timings, exported, largest = measure(session, study_id)
            total = size * JOBS_PER_STUDY
            print(f"| {total:,} | " + " | ".join(f"{timings[by] * 1000:.0f}" for by in FORK_RANKINGS)
                  + f" | {timings['entropy'] * 1000 / (total / 1000):.2f} | {exported:.2f} | {largest:,} |")
        engine.dispose()


if __name__ == "__main__":
    main()
