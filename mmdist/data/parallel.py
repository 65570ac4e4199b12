"""Run one function over a list of argument tuples, in this process or as Ray tasks.

The data jobs (synthetic world, ingest) write one shard per call; each call is a pure function
of its arguments, so the result does not depend on `workers`.
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence, TypeVar

T = TypeVar("T")


def map_tasks(
    function: Callable[..., T],
    jobs: Sequence[tuple],
    workers: int,
    tasks_cfg: Mapping,
    on_done: Callable[[int], None] | None = None,
) -> list[T]:
    """`[function(*job) for job in jobs]`, with `workers` > 0 running at most that many Ray tasks at once,
    each with the job config's `tasks.num_cpus` and `tasks.max_retries`. `on_done(index)` is called as
    each job finishes (a progress bar).

    Ray is started with `mmdist.ray_setup.connect_ray` when no Ray instance is connected yet, which joins
    the cluster named by RAY_ADDRESS or starts a local one.
    """
    if workers < 0:
        raise ValueError(f"workers must be >= 0, got {workers}")
    on_done = on_done or (lambda index: None)
    if workers == 0:
        results = []
        for index, job in enumerate(jobs):
            results.append(function(*job))
            on_done(index)
        return results
    import ray

    from mmdist.ray_setup import connect_ray

    connect_ray()
    remote = ray.remote(num_cpus=tasks_cfg["num_cpus"], max_retries=tasks_cfg["max_retries"])(function)
    results: dict[int, T] = {}
    pending: dict = {}
    for index, job in enumerate(jobs):
        if len(pending) >= workers:
            collect(pending, results, ray.wait(list(pending), num_returns=1)[0], on_done)
        pending[remote.remote(*job)] = index
    while pending:
        collect(pending, results, ray.wait(list(pending), num_returns=1)[0], on_done)
    return [results[i] for i in range(len(jobs))]


def collect(pending: dict, results: dict, done: list, on_done: Callable[[int], None]) -> None:
    """Move finished task results from `pending` into `results` (raises the task's error)."""
    import ray

    for ref, value in zip(done, ray.get(done)):
        index = pending.pop(ref)
        results[index] = value
        on_done(index)
