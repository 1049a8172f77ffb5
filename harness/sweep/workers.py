"""`sweep.coordination=storage`: `sweep.n_workers` local worker processes sharing one storage.

Workers are started with the "spawn" method: a fresh interpreter each, so no TensorFlow state
is inherited through fork. Each gets the split pickled once at start. They coordinate only
through the storage (the same way workers on other machines would), and the parent just shows
progress and reports exit codes. (The default, pool coordination, is `runner.run_coordinator`.)

This module does not import the runner: the runner passes the worker function in.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import optuna
from optuna.trial import TrialState
from tqdm.auto import tqdm

log = logging.getLogger("harness.sweep")
POLL_SECONDS = 2.0
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def run_workers(
    plans: Sequence[Any],
    study: optuna.Study,
    target: Callable[[Any], Any],
    *,
    quiet: bool,
    threads: int = 0,
) -> None:
    """Run `target(plan)` in one spawned process per plan until all have stopped.

    Args:
        plans: One `runner.WorkerPlan` per worker (each with its worker_id).
        study: The study, to show progress.
        target: A module-level function (`runner.run_worker`).
        quiet: No progress bar.
        threads: TensorFlow intra/inter-op threads per worker (0 = TensorFlow's default).

    Raises:
        RuntimeError: A worker exited abnormally (its own traceback is printed above); the
            other workers are still waited for, so their trials finish cleanly.
    """
    context = multiprocessing.get_context("spawn")
    processes = [
        context.Process(
            target=_worker_main,
            args=(plan, target, threads),
            name=f"sweep-worker-{plan.settings.worker_id}",
        )
        for plan in plans
    ]
    log.info("starting %d worker processes on %s", len(processes), study.study_name)
    for process in processes:
        process.start()
    # disable=None: no bar when stderr is not a terminal
    bar = tqdm(
        total=plans[0].settings.n_trials,
        desc=study.study_name,
        unit="trial",
        disable=True if quiet else None,
    )
    try:
        with bar:
            while any(p.is_alive() for p in processes):
                bar.n = len(study.get_trials(deepcopy=False, states=FINISHED))
                bar.refresh()
                time.sleep(POLL_SECONDS)
    finally:
        # On Ctrl-C the workers got the SIGINT too and are failing their trials; give them a
        # moment to write that down before forcing them to stop.
        for process in processes:
            process.join(timeout=30)
            if process.is_alive():
                process.terminate()
                process.join()
    bad = [(p.name, p.exitcode) for p in processes if p.exitcode != 0]
    if bad:
        raise RuntimeError(
            "worker(s) exited abnormally: "
            + ", ".join(f"{name} (exit code {code})" for name, code in bad)
            + "; see their output above. Rerun the same command to resume the study."
        )


def _worker_main(plan: Any, target: Callable[[Any], Any], threads: int) -> None:
    from harness.pool import THREAD_ENV, set_tensorflow_threads

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if threads:
        os.environ.update({name: str(threads) for name in THREAD_ENV})
        set_tensorflow_threads(threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.basicConfig(level=logging.INFO, format="%(message)s", force=True)
    target(plan)
