"""`sweep.n_workers` local worker processes sharing one storage.

Workers are started with the "spawn" method: a fresh interpreter each, so no TensorFlow state
is inherited through fork. Each gets the split pickled once at start. They coordinate only
through the storage (the same way workers on other machines would), and the parent just shows
progress and reports exit codes.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import time

import optuna
from tqdm.auto import tqdm

from harness.sweep.runner import FINISHED, WorkerPlan, run_worker, with_worker_id

log = logging.getLogger("harness.sweep")
POLL_SECONDS = 2.0


def run_workers(plan: WorkerPlan, study: optuna.Study) -> None:
    """Run `plan.settings.n_workers` worker processes until all have stopped.

    Raises:
        RuntimeError: A worker exited abnormally (its own traceback is printed above); the
            other workers are still waited for, so their trials finish cleanly.
    """
    settings = plan.settings
    context = multiprocessing.get_context("spawn")
    processes = [
        context.Process(
            target=_worker_main,
            args=(with_worker_id(plan, worker_id),),
            name=f"sweep-worker-{worker_id}",
        )
        for worker_id in range(settings.n_workers)
    ]
    log.info("starting %d worker processes on %s", len(processes), plan.study_name)
    for process in processes:
        process.start()
    # disable=None: no bar when stderr is not a terminal
    bar = tqdm(
        total=settings.n_trials,
        desc=plan.study_name,
        unit="trial",
        disable=True if settings.quiet else None,
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


def _worker_main(plan: WorkerPlan) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.basicConfig(level=logging.INFO, format="%(message)s", force=True)
    run_worker(plan)
