"""Names on the broker that the API and the workers must agree on, in one place."""

RUN_JOB_TASK = "tokentree.run_job"


def model_queue(model: str) -> str:
    """The Celery queue of the workers that serve `model` (an allow-list name)."""
    return f"tokentree.model.{model}"


def worker_queue(worker: str) -> str:
    """The Celery queue of one worker (by name): work handed to it as an idle peer."""
    return f"tokentree.worker.{worker}"
