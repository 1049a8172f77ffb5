"""The worker pool: layouts (auto, too many, bad counts), ordered results, worker errors,
process recycling and live messages, with real spawned processes."""

from __future__ import annotations

import os

import pytest

from harness import pool as worker_pool
from harness.pool import WorkerError, plan_workers
from harness.worker_pool import WorkerPool


def test_auto_uses_the_cpus_this_process_may_use() -> None:
    cpus = len(os.sched_getaffinity(0))
    layout = plan_workers("auto")
    assert (layout.n_workers, layout.cpus) == (cpus, cpus)
    assert layout.n_workers * layout.threads <= cpus
    env = layout.worker_env(0)
    assert env["TF_NUM_INTRAOP_THREADS"] == env["TF_NUM_INTEROP_THREADS"] == str(layout.threads)
    one = plan_workers(1)
    assert (one.n_workers, one.threads) == (1, cpus)


def test_more_workers_than_cpus_warns_and_gives_one_thread_each() -> None:
    cpus = len(os.sched_getaffinity(0))
    with pytest.warns(UserWarning, match=f"exceeds the {cpus} CPUs.*1 TensorFlow thread"):
        layout = plan_workers(cpus + 1)
    assert (layout.n_workers, layout.threads) == (cpus + 1, 1)


@pytest.mark.parametrize("value", [0, -1, "all", 1.5, True])
def test_bad_worker_counts_are_clear_errors(value) -> None:
    with pytest.raises(ValueError, match=r"sweep.n_workers=.* must be"):
        plan_workers(value)


def test_one_worker_per_gpu_when_gpus_are_given() -> None:
    layout = plan_workers("auto", gpus=[0, 3])
    assert layout.n_workers == 2
    assert [layout.worker_env(i)["CUDA_VISIBLE_DEVICES"] for i in range(2)] == ["0", "3"]


def _square_with_pid(x: int) -> tuple[int, int, str]:
    worker_pool.emit(("got", x))
    return x * x + worker_pool.shared(), os.getpid(), os.environ["TF_NUM_INTRAOP_THREADS"]


def _fail_on_three(x: int) -> int:
    if x == 3:
        raise ValueError("three is bad")
    return x


def test_pool_returns_results_in_job_order_recycles_and_reports_errors() -> None:
    messages = []
    with WorkerPool(
        plan_workers(2), data=100, key="k", recycle_after=2, preload_tensorflow=False
    ) as pool:
        results = pool.map(
            _square_with_pid,
            [(x,) for x in range(6)],
            on_message=lambda job, message: messages.append((job, message)),
        )
        assert [r[0] for r in results] == [x * x + 100 for x in range(6)]
        assert {r[2] for r in results} == {str(pool.layout.threads)}
        # 6 tasks, at most 2 per process: at least 3 distinct processes ran them.
        assert len({r[1] for r in results}) >= 3
        assert sorted(messages) == [(x, ("got", x)) for x in range(6)]
        assert len(pool.memory) == 6 and all(m.task <= 2 for m in pool.memory)
        with pytest.raises(WorkerError, match="(?s)job 3 of _fail_on_three.*three is bad"):
            pool.map(_fail_on_three, [(x,) for x in range(5)])
        assert pool.map(_fail_on_three, [(1,), (2,)]) == [1, 2]  # the pool still works


def test_sweep_gpus_give_one_pinned_worker_per_gpu() -> None:
    """`sweep.gpus` reaches the pool's layout: auto = one worker per GPU, each pinned to its own
    (device selection is pure logic: no GPU needed)."""
    from harness.sweep.settings import SweepSettings

    layout = SweepSettings(n_trials=1, gpus=(0, 1)).worker_layout()
    assert layout.n_workers == 2
    assert [layout.worker_env(slot)["CUDA_VISIBLE_DEVICES"] for slot in (0, 1)] == ["0", "1"]
    assert "CUDA_VISIBLE_DEVICES" not in SweepSettings(n_trials=1).worker_layout().worker_env(0)
