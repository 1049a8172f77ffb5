"""`PoolScheduler`, the benchmark's barrier-free job graph on the worker pool: priority
order, follow-up jobs added by callbacks, and failures (in a worker or in a callback) raised
once the running jobs have finished. Real spawned workers (without TensorFlow)."""

from __future__ import annotations

import pytest

from harness.benchmark.parallel import PoolScheduler, fit_cost
from harness.execution.local import LocalExecutor
from harness.pool import WorkerError, plan_workers


def _double(x: int) -> int:
    return 2 * x


def _fail_on_three(x: int) -> int:
    if x == 3:
        raise ValueError("three is bad")
    return x


@pytest.fixture(scope="module")
def pool():
    with LocalExecutor(plan_workers(1), None, preload_tensorflow=False) as executor:
        yield executor


def test_jobs_go_out_highest_priority_first_and_callbacks_add_follow_ups(pool) -> None:
    scheduler = PoolScheduler(pool)
    results: dict[str, int] = {}

    def keep(name: str):
        def then(value: int) -> None:
            results[name] = value
            if name == "b":  # a follow-up outranking the queued jobs goes out next
                scheduler.add(_double, (value,), keep("b2"), priority=10, label="b2")

        return then

    for name, x, priority in [("a", 1, 1.0), ("b", 2, 3.0), ("c", 3, 2.0), ("d", 4, 2.0)]:
        scheduler.add(_double, (x,), keep(name), priority=priority, label=name)
    scheduler.run()
    # one worker: submission order is priority order (ties in the order added)
    assert scheduler.submitted == ["b", "b2", "c", "d", "a"]
    assert results == {"a": 2, "b": 4, "b2": 8, "c": 6, "d": 8}
    assert pool.pool.idle


def test_a_failing_job_is_raised_naming_it_and_queued_jobs_are_dropped(pool) -> None:
    scheduler = PoolScheduler(pool)
    done: list[int] = []
    for x in (1, 3, 5, 7):
        scheduler.add(_fail_on_three, (x,), done.append, priority=-x, label=f"job {x}")
    with pytest.raises(WorkerError, match=r"(?s)job 3 failed in a worker.*three is bad"):
        scheduler.run()
    assert done == [1]
    assert scheduler.submitted == ["job 1", "job 3"]
    assert pool.pool.idle  # nothing left running or queued for the next user of the pool


def test_a_failing_callback_is_raised_and_stops_the_graph(pool) -> None:
    scheduler = PoolScheduler(pool)
    done: list[int] = []

    def then(value: int) -> None:
        if value == 4:
            raise RuntimeError("every candidate diverged")
        done.append(value)

    for x in (1, 2, 3, 4):
        scheduler.add(_double, (x,), then, label=x)
    with pytest.raises(RuntimeError, match="every candidate diverged"):
        scheduler.run()
    assert (done, scheduler.submitted) == ([2], [1, 2])
    assert pool.pool.idle


def test_fit_cost_ranks_wider_epoch_longer_smaller_batch_fits_longer() -> None:
    base = {"n_epochs": 50, "intermediate_dim": 200, "latent_dim": 70, "batch_size": 100}
    cost = fit_cost(base, 700, 1600)
    assert fit_cost({**base, "intermediate_dim": 600}, 700, 1600) > cost
    assert fit_cost({**base, "n_epochs": 100}, 700, 1600) == pytest.approx(2 * cost)
    assert fit_cost({**base, "batch_size": 25}, 700, 1600) > cost
