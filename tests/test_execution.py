"""The executor interface on the local pool: futures, a worker killed (kill -9) or stopped
(SIGSTOP) mid-job fails only that job with `WorkerLost` and is replaced, lost jobs run again
in the benchmark's job graph, `n_workers` far above the cores is capped by memory, and the
settings/config group. Real spawned workers without TensorFlow; event-driven (the job writes
its pid file, the test waits for it), never timed."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from waiting import until

from harness.benchmark.parallel import PoolScheduler, run_all
from harness.execution import (
    ExecutorConfigError,
    ExecutorSettings,
    WorkerError,
    WorkerLost,
    make_executor,
)
from harness.execution.local import LocalExecutor
from harness.pool import plan_workers

DEADLINE = 120.0  # generous: a condition, not a timing


def _hold(folder: str, name: str) -> int:
    """Write `<folder>/<name>.pid`, then wait for `<folder>/<name>.go`; return the pid."""
    Path(folder, f"{name}.pid").write_text(str(os.getpid()))
    while not Path(folder, f"{name}.go").exists():
        time.sleep(0.02)
    return os.getpid()


def _square(x: int, *, plus: int = 0) -> int:
    return x * x + plus


def _die_once(folder: str, name: str) -> str:
    """SIGKILL its own worker the first time it runs; return the second time."""
    marker = Path(folder, f"{name}.died")
    if not marker.exists():
        marker.write_text(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGKILL)
    return f"{name} ran again"


def _raise(x: int) -> int:
    raise ValueError(f"bad {x}")


@pytest.fixture
def executor():
    with LocalExecutor(plan_workers(2), None, preload_tensorflow=False) as executor:
        yield executor


def test_futures_give_results_kwargs_and_job_errors(executor) -> None:
    futures = [executor.submit(_square, x, plus=1) for x in range(4)]
    assert [f.result() for f in futures] == [1, 2, 5, 10]
    failed = executor.submit(_raise, 3)
    with pytest.raises(WorkerError, match="(?s)_raise failed in a worker.*bad 3") as info:
        failed.result()
    assert not isinstance(info.value, WorkerLost)  # a job's own error is not a lost worker


def test_a_killed_worker_fails_its_job_only_and_is_replaced(executor, tmp_path) -> None:
    held = executor.submit(_hold, str(tmp_path), "a")
    other = executor.submit(_square, 7)
    pid = int(until(lambda: _read(tmp_path / "a.pid"), "the job's pid file"))
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(WorkerLost, match=r"died \(killed by signal 9\) while running _hold"):
        held.result(timeout=DEADLINE)
    assert other.result(timeout=DEADLINE) == 49
    assert pid not in executor.pool.pids() and len(executor.pool.pids()) == 2
    assert executor.submit(_square, 3).result(timeout=DEADLINE) == 9  # the replacement works


def test_a_stopped_worker_is_killed_after_the_silence_limit(tmp_path) -> None:
    with LocalExecutor(
        plan_workers(1), None, preload_tensorflow=False, worker_timeout=5
    ) as executor:
        held = executor.submit(_hold, str(tmp_path), "b")
        pid = int(until(lambda: _read(tmp_path / "b.pid"), "the job's pid file"))
        os.kill(pid, signal.SIGSTOP)
        with pytest.raises(WorkerLost, match=r"sent nothing for .* s .*hung or stopped"):
            held.result(timeout=DEADLINE)
        assert _gone(pid)
        assert executor.submit(_square, 4).result(timeout=DEADLINE) == 16


def test_a_busy_worker_that_beats_is_not_killed(tmp_path) -> None:
    """A job longer than the silence limit is fine: its worker beats while it works."""
    with LocalExecutor(
        plan_workers(1), None, preload_tensorflow=False, worker_timeout=3
    ) as executor:
        held = executor.submit(_hold, str(tmp_path), "c")
        pid = int(until(lambda: _read(tmp_path / "c.pid"), "the job's pid file"))
        # several beats pass: wait for the parent to have heard at least two of them
        start = executor.pool._slots[0].heard
        until(
            lambda: (executor.wait([held], 0.5), executor.pool._slots[0].heard > start + 3)[1],
            "beats from the busy worker",
        )
        (tmp_path / "c.go").write_text("")
        assert held.result(timeout=DEADLINE) == pid


def test_lost_jobs_run_again_in_the_job_graph_and_in_run_all(executor, tmp_path) -> None:
    scheduler = PoolScheduler(executor)
    results: dict[str, str] = {}
    for name in ("x", "y"):
        scheduler.add(
            _die_once,
            (str(tmp_path), name),
            lambda v, n=name: results.__setitem__(n, v),
            label=name,
        )
    scheduler.run()
    assert results == {"x": "x ran again", "y": "y ran again"}
    assert sorted(scheduler.lost) == ["x", "y"]
    assert run_all(executor, _die_once, [(str(tmp_path), "z")]) == ["z ran again"]


def test_many_workers_on_few_cores_are_capped_by_memory(monkeypatch) -> None:
    from harness import pool

    cpus = len(os.sched_getaffinity(0))
    monkeypatch.setattr(pool, "available_memory_mb", lambda: 4000.0)
    with pytest.warns(UserWarning, match=r"sweep.n_workers=64: .* using \d+ workers") as record:
        layout = plan_workers(64, worker_mb=700)
    assert len(record) == 1
    assert layout.n_workers == max(cpus, int(0.8 * 4000 // 700)) < 64
    monkeypatch.setattr(pool, "available_memory_mb", lambda: 1e9)  # plenty: only the warning
    with pytest.warns(UserWarning, match="exceeds the"):
        assert plan_workers(cpus + 1).n_workers == cpus + 1


def test_settings_from_config_and_bad_input(monkeypatch) -> None:
    cfg = {
        "sweep": {"n_workers": 2, "worker_timeout": 30, "recycle_after": 5},
        "executor": {"name": "slurm", "partition": "gpu", "setup": ["module load cuda"]},
        "results_dir": "/tmp/r",
    }
    settings = ExecutorSettings.from_config(cfg)
    assert (settings.backend, settings.partition, settings.setup) == (
        "slurm",
        "gpu",
        ("module load cuda",),
    )
    assert (settings.n_workers, settings.worker_timeout, settings.folder) == (
        2,
        30,
        "/tmp/r/executor",
    )
    with pytest.raises(
        ExecutorConfigError,
        match=r"executor.partiton \(did you mean executor.partition\?\).*valid keys",
    ):
        ExecutorSettings.from_config({"executor": {"name": "slurm", "partiton": "x"}})
    with pytest.raises(ExecutorConfigError, match="executor='pbs' is unknown"):
        ExecutorSettings(backend="pbs")
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(ExecutorConfigError) as info:
        make_executor(settings, None)
    message = str(info.value)
    assert "sbatch" in message and "executor=submitit_local" in message
    assert "\n" not in message


def test_the_config_group_composes(tmp_path) -> None:
    from hydra import compose, initialize_config_dir

    from harness.configs import conf_dir

    with initialize_config_dir(str(conf_dir()), version_base=None):
        for name in ("local", "submitit_local", "slurm"):
            cfg = compose("run", overrides=[f"executor={name}"])
            settings = ExecutorSettings.from_config(cfg)
            assert settings.backend == name


def _read(path: Path) -> str | None:
    try:
        return path.read_text() or None
    except FileNotFoundError:
        return None


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False
