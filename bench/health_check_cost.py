"""What `/healthz`'s question "does a model nobody serves have open jobs?" costs as the open jobs grow:
1,000, 10,000 and 100,000 queued jobs of one model, asked for that model and for one with no job, in
the health check's transaction settings.

    python bench/health_check_cost.py [--postgres postgresql+psycopg://postgres@127.0.0.1:5432]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import text

from bench.postgres import PG_SERVER, fresh_database
from tokentree.models import jobs
from tokentree.models.db import make_engine, make_session_factory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgres", default=PG_SERVER)
    args = parser.parse_args()
    with fresh_database("tokentree_bench_health", args.postgres) as url:
        engine = make_engine(url)
        sessions = make_session_factory(engine)
        for count in (1_000, 10_000, 100_000):
            with engine.begin() as connection:
                connection.execute(text("TRUNCATE jobs CASCADE"))
                connection.execute(text(
                    "INSERT INTO jobs (id, kind, prompt, model, parameters, chat, status, created_at, "
                    "node_count, completed_paths) SELECT gen_random_uuid(), 'tree', 'p', 'demo', '{}', false,"
                    f" 'queued', now(), 0, 0 FROM generate_series(1, {count})"))
                connection.execute(text("ANALYZE jobs"))
            with sessions() as session:
                session.execute(text("SET LOCAL plan_cache_mode = force_custom_plan"))  # as /healthz does
                for _ in range(10):  # past psycopg's prepare threshold
                    jobs.models_with_open_jobs(session, ["demo", "nobody"])
                started = time.perf_counter()
                for _ in range(20):
                    found = jobs.models_with_open_jobs(session, ["demo", "nobody"])
                each = (time.perf_counter() - started) / 20
            print(f"{count:>7} open jobs: {each * 1000:6.2f} ms for both models ({found})", flush=True)
        engine.dispose()


if __name__ == "__main__":
    main()
