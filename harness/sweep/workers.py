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
import signal
import time
from collections.abc import Callable, Sequence
from typing import Any

import optuna
from optuna.trial import TrialState
from tqdm.auto import tqdm

from harness.errors import UserError
from harness.sweep.recovery import reap_dead_workers

log = logging.getLogger("harness.sweep")
POLL_SECONDS = 2.0
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


class WorkersExitedError(UserError):
    """Storage workers exited abnormally; the message names them and says to rerun."""


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

    A worker killed by a signal (kill -9, the OOM killer) has its trial failed and enqueued
    again at once and is replaced by a new worker (at most `len(plans)` times per run).

    Raises:
        WorkersExitedError: A worker exited with an error (its own traceback is printed
            above), or killed workers left the budget unspent; the other workers are still
            waited for, so their trials finish cleanly.
    """
    context = multiprocessing.get_context("spawn")

    def start(plan: Any) -> Any:
        name = f"sweep-worker-{plan.settings.worker_id}"
        process = context.Process(target=_worker_main, args=(plan, target, threads), name=name)
        process.start()
        return process

    log.info("starting %d worker processes on %s", len(plans), study.study_name)
    processes = [start(plan) for plan in plans]
    settings = plans[0].settings
    replacements = len(plans)  # a worker that keeps getting killed is not replaced forever
    # disable=None: no bar when stderr is not a terminal
    bar = tqdm(
        total=settings.n_trials,
        desc=study.study_name,
        unit="trial",
        disable=True if quiet else None,
    )
    try:
        with bar:
            while any(p.is_alive() for p in processes):
                finished = len(study.get_trials(deepcopy=False, states=FINISHED))
                bar.n = finished
                bar.refresh()
                for i, process in enumerate(processes):
                    if process.is_alive() or process.exitcode is None or process.exitcode >= 0:
                        continue
                    # Killed by a signal (kill -9, the OOM killer): its trial is failed and
                    # enqueued again at once, and a new worker takes its place.
                    reap_dead_workers(study, settings.max_retry)
                    spent = settings.n_trials is not None and finished >= settings.n_trials
                    if replacements and not spent:
                        replacements -= 1
                        log.warning(
                            "%s was killed (%s); its trial is re-run, a new worker takes its place",
                            process.name,
                            _signal_name(process.exitcode),
                        )
                        processes[i] = start(plans[i])
                time.sleep(POLL_SECONDS)
    finally:
        # On Ctrl-C the workers got the SIGINT too and are failing their trials; give them a
        # moment to write that down before forcing them to stop.
        for process in processes:
            process.join(timeout=30)
            if process.is_alive():
                process.terminate()
                process.join()
    reap_dead_workers(study, settings.max_retry)  # a worker killed after the last poll
    killed = [p for p in processes if p.exitcode is not None and p.exitcode < 0]
    for process in killed:
        log.warning(
            "%s was killed (%s); its trial was failed", process.name, _signal_name(process.exitcode)
        )
    bad = [p for p in processes if p.exitcode != 0 and p not in killed]
    spent = (
        settings.n_trials is None
        or len(study.get_trials(deepcopy=False, states=FINISHED)) >= settings.n_trials
    )
    if bad or (killed and not spent):
        raise WorkersExitedError(
            "worker(s) exited abnormally: "
            + ", ".join(f"{p.name} (exit code {p.exitcode})" for p in [*bad, *killed])
            + "; see their output above. Rerun the same command to resume the study."
        )


def _signal_name(exitcode: int) -> str:
    try:
        return signal.Signals(-exitcode).name
    except ValueError:
        return f"signal {-exitcode}"


def _worker_main(plan: Any, target: Callable[[Any], Any], threads: int) -> None:
    from harness.pool import THREAD_ENV, set_tensorflow_threads

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if threads:
        os.environ.update({name: str(threads) for name in THREAD_ENV})
        set_tensorflow_threads(threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.basicConfig(level=logging.INFO, format="%(message)s", force=True)
    target(plan)
