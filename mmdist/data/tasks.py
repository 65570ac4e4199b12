"""Run one function over a list of argument tuples, in this process or as Ray tasks.

The data jobs (synthetic world, ingest) write one shard per call; each call is a pure function
of its arguments, so the result does not depend on `workers`.
"""

from __future__ import annotations

from typing import Callable, Sequence, TypeVar

T = TypeVar("T")


def map_tasks(function: Callable[..., T], jobs: Sequence[tuple], workers: int) -> list[T]:
    """`[function(*job) for job in jobs]`, with `workers` > 0 running at most that many Ray tasks at once.

    Ray is started with `ray.init()` when no Ray instance is connected yet, which joins the
    cluster named by RAY_ADDRESS or starts a local one.
    """
    if workers < 0:
        raise ValueError(f"workers must be >= 0, got {workers}")
    if workers == 0:
        return [function(*job) for job in jobs]
    import ray

    if not ray.is_initialized():
        ray.init()
    remote = ray.remote(num_cpus=1, max_retries=2)(function)
    results: dict[int, T] = {}
    pending: dict = {}
    for index, job in enumerate(jobs):
        if len(pending) >= workers:
            collect(pending, results, ray.wait(list(pending), num_returns=1)[0])
        pending[remote.remote(*job)] = index
    collect(pending, results, list(pending))
    return [results[i] for i in range(len(jobs))]


def collect(pending: dict, results: dict, done: list) -> None:
    """Move finished task results from `pending` into `results` (raises the task's error)."""
    import ray

    for ref, value in zip(done, ray.get(done)):
        results[pending.pop(ref)] = value
