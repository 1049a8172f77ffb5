"""Worker death and hang during a sweep on the local pool: kill -9 (or SIGSTOP) the worker
that trains the seed-default trial 0 after its first epoch is recorded. The trial fails with
the reason, its parameters are retried, and the sweep finishes its budget without a
traceback. Event-driven: a watcher thread waits for the recorded epoch, then signals the
worker the pool reports for that trial; nothing is timed."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from optuna.trial import TrialState

from harness.data import load_interactions, make_split
from harness.execution import ExecutorSettings, make_executor
from harness.sweep import SweepSettings, run_sweep

pytestmark = pytest.mark.slow
DEADLINE = 300.0
MODEL = {"name": "mult_vae", "intermediate_dim": 16, "latent_dim": 8, "n_epochs": 300,
         "batch_size": 50, "k": 20}  # fmt: skip
SPACE = {"learning_rate": "tag(log, interval(1e-4, 1e-2))"}


def _split():
    frame = load_interactions("synthetic", n_users=300, n_items=120, density=0.05, seed=3)
    return make_split(frame, n_val_users=40, n_test_users=40)


def _watch_and_signal(db: Path, executor, sig: int, done: dict, ticket: int | None = None) -> None:
    """When trial 0 has a recorded epoch, send `sig` to the worker running it (the database is
    read-only here: the sweep creates it)."""
    end = time.monotonic() + DEADLINE
    query = (
        "SELECT t.state, COUNT(v.trial_intermediate_value_id) FROM trials t "
        "JOIN trial_intermediate_values v ON v.trial_id = t.trial_id WHERE t.number = 0 "
        "GROUP BY t.trial_id"
    )
    while time.monotonic() < end and "pid" not in done:
        try:
            with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as con:
                rows = con.execute(query).fetchall()
        except sqlite3.Error:  # not created yet, or being written: look again
            rows = []
        for state, epochs in rows:
            if state != "RUNNING":
                done["pid"] = None  # finished before it was caught: the test fails
                return
            running = executor.pool.running()
            pids = [running[ticket]] if ticket in running else list(running.values())
            if epochs and len(pids) == 1:
                os.kill(pids[0], sig)
                done["pid"] = pids[0]
                return
        time.sleep(0.05)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGSTOP], ids=["kill-9", "sigstop"])
def test_a_lost_worker_costs_a_retry_never_the_trial_or_the_run(tmp_path, sig) -> None:
    split = _split()
    settings = SweepSettings(n_trials=2, quiet=True, pruner="none", n_workers=1,
                             batch_size=1, worker_timeout=6)  # fmt: skip
    # one worker and a window of one: trial 0 (the seed default) runs alone
    executor = make_executor(
        ExecutorSettings(n_workers=1, worker_timeout=settings.worker_timeout), split
    )
    done: dict = {}
    watcher = threading.Thread(
        target=_watch_and_signal, args=(tmp_path / "optuna.db", executor, sig, done)
    )
    watcher.start()
    try:
        with executor:
            study = run_sweep(split=split, dataset_name="synthetic", model_name="mult_vae",
                              model_params=MODEL, search_space=SPACE, settings=settings,
                              results_dir=tmp_path, executor=executor)  # fmt: skip
    finally:
        done.setdefault("pid", None)
        watcher.join()
    assert done["pid"] is not None, "the watcher never saw trial 0's first epoch"
    trials = study.get_trials(deepcopy=False)
    lost = trials[0]
    assert lost.state == TrialState.FAIL
    reason = lost.user_attrs["failure_reason"]
    assert reason.startswith("worker lost: worker process")
    assert ("killed by signal 9" if sig == signal.SIGKILL else "sent nothing") in reason
    finished = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(finished) == 2  # the budget, in spite of the loss
    retried = [t for t in trials if t.system_attrs.get("failed_trial") == 0]
    assert len(retried) == 1 and retried[0].state == TrialState.COMPLETE
    assert retried[0].params == lost.params == {"learning_rate": 1e-3}  # the seed default
    assert sum(t.params == lost.params for t in trials) == 2  # retried once, not more


def test_an_interrupt_keeps_trials_that_finished_behind_a_stuck_one(tmp_path) -> None:
    """Trial 0's worker is stopped; trial 1 finishes (its outcome waits for trial 0 in tell
    order); Ctrl-C then records trial 1 COMPLETE with every epoch and fails only trial 0."""
    split = _split()
    settings = SweepSettings(n_trials=4, quiet=True, pruner="none", n_workers=2, batch_size=2,
                             worker_timeout=3600)  # fmt: skip
    executor = make_executor(ExecutorSettings(n_workers=2, worker_timeout=3600), split)
    done: dict = {}

    def stop_then_interrupt() -> None:
        _watch_and_signal(tmp_path / "optuna.db", executor, signal.SIGSTOP, done, ticket=0)
        end = time.monotonic() + DEADLINE
        while time.monotonic() < end:  # trial 1's outcome has reached the coordinator
            if done.get("pid") and len(executor._futures) == 1 and executor.pool.memory:
                os.kill(os.getpid(), signal.SIGINT)
                return
            time.sleep(0.05)

    watcher = threading.Thread(target=stop_then_interrupt)
    watcher.start()
    try:
        with executor, pytest.raises(KeyboardInterrupt):
            run_sweep(split=split, dataset_name="synthetic", model_name="mult_vae",
                      model_params={**MODEL, "n_epochs": 40}, search_space=SPACE,
                      settings=settings, results_dir=tmp_path, executor=executor)  # fmt: skip
    finally:
        done.setdefault("pid", None)
        watcher.join()
    import optuna

    study = optuna.load_study(study_name=None, storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    trials = study.get_trials(deepcopy=False)
    assert trials[0].state == TrialState.FAIL
    assert trials[0].user_attrs["failure_reason"].startswith("interrupted")
    assert trials[1].state == TrialState.COMPLETE
    assert len(trials[1].intermediate_values) == trials[1].user_attrs["epochs_run"] == 40
