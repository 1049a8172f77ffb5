"""`executor=slurm` on a real Slurm started on localhost (`tests/slurm_cluster.py`; skipped
with the reason where Slurm's binaries are missing): a 6-trial sweep equals the local pool's
trials and values; `scancel` of a running job fails that trial with Slurm's state and retries
it; a preempted job is requeued and its trial completes once; kill -9 of the coordinator,
then a rerun, waits for the jobs in flight (or reads their results from submitit's folder)
and loses and duplicates nothing; `harness-run budget=smoke dataset=synthetic executor=slurm`
(small data, two models) writes the local run's metrics.csv and a manifest naming each job's
node and device; Slurm's refusal of a partition is one line with its message. Event-driven
with generous deadlines."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import waiting
from optuna.trial import TrialState
from slurm_cluster import missing, slurm_cluster
from small_data import SMALL_SYNTHETIC

from harness.data import load_interactions, make_split
from harness.execution import ExecutorConfigError, ExecutorSettings, make_executor
from harness.execution.jobs import MESSAGES
from harness.sweep import SweepSettings, run_sweep

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(missing() is not None, reason=str(missing())),
]
ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DEADLINE = 900.0
until = functools.partial(waiting.until, deadline=DEADLINE, every=0.2)
MODEL = {"name": "mult_vae", "intermediate_dim": 16, "latent_dim": 6, "n_epochs": 3,
         "batch_size": 50, "k": 20}  # fmt: skip
SPACE = {"learning_rate": "tag(log, interval(1e-4, 1e-2))", "anneal_cap": "interval(0.1, 1.0)"}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with slurm_cluster(tmp_path_factory.mktemp("slurm")) as cluster:
        old = os.environ.get("SLURM_CONF")
        os.environ["SLURM_CONF"] = cluster.env["SLURM_CONF"]
        try:
            yield cluster
        finally:
            if old is None:
                os.environ.pop("SLURM_CONF", None)
            else:
                os.environ["SLURM_CONF"] = old


@pytest.fixture(scope="module")
def split():
    frame = load_interactions("synthetic", n_users=240, n_items=100, density=0.06, seed=5)
    return make_split(frame, n_val_users=40, n_test_users=40)


def _slurm(tmp: Path, **changes) -> ExecutorSettings:
    return ExecutorSettings(backend="slurm", n_workers=2, folder=str(tmp / "executor"),
                            cpus_per_task=1, timeout_min=30, **changes)  # fmt: skip


def _sweep(split, results: Path, executor, n_trials: int = 6) -> optuna.Study:
    settings = SweepSettings(n_trials=n_trials, quiet=True, n_startup_trials=2, batch_size=3,
                             n_warmup_epochs=1, pruner="successive_halving", n_workers=2)  # fmt: skip
    return run_sweep(split=split, dataset_name="synthetic", model_name="mult_vae",
                     model_params=MODEL, search_space=SPACE, settings=settings,
                     results_dir=results, executor=executor)  # fmt: skip


def _record(study: optuna.Study) -> list[tuple]:
    return [(t.number, t.state, t.value, t.params, t.intermediate_values) for t in study.trials]


def test_a_six_trial_sweep_on_slurm_equals_the_local_pool(cluster, split, tmp_path) -> None:
    with make_executor(_slurm(tmp_path), split) as executor:
        on_slurm = _record(_sweep(split, tmp_path / "slurm", executor))
    with make_executor(ExecutorSettings(n_workers=2), split) as executor:
        local = _record(_sweep(split, tmp_path / "local", executor))
    assert on_slurm == local
    assert len([r for r in on_slurm if r[1] in (TrialState.COMPLETE, TrialState.PRUNED)]) == 6


def _first_job_training(executor):
    """The executor's first job once it has reported an epoch (it is training), else None."""
    if not executor._jobs:
        return None
    job = min(executor._jobs.values(), key=lambda job: int(job.job_id))
    messages = job.paths.folder / f"{job.job_id}{MESSAGES}"  # where the job reports epochs
    return job if messages.exists() and messages.stat().st_size else None


def test_scancel_of_a_running_job_fails_its_trial_and_retries_it(cluster, split, tmp_path):
    """The first job is cancelled once it has reported an epoch, with ~1000 left to train.
    Slurm sends SIGTERM, which submitit's job ignores, then SIGKILL after KillWait (2 s in
    the test cluster, 30 s by default): a job that ends within KillWait has its result, and
    then its trial is rightly complete."""
    long_model = {**MODEL, "n_epochs": 1000}
    executor = make_executor(_slurm(tmp_path), split)
    cancelled: dict[str, str] = {}

    def cancel_first_running() -> None:  # called by the coordinator's waits (its own thread)
        job = None if cancelled else _first_job_training(executor)
        if job is not None:
            subprocess.run(["scancel", str(job.job_id)], env=cluster.env, check=True)
            cancelled["job"] = str(job.job_id)

    wait = executor.wait

    def waiting(futures, timeout=None):
        cancel_first_running()
        return wait(futures, timeout if timeout is None else min(timeout, 0.3))

    executor.wait = waiting
    settings = SweepSettings(n_trials=2, quiet=True, pruner="none", batch_size=2, n_workers=2)
    with executor:
        study = run_sweep(split=split, dataset_name="synthetic", model_name="mult_vae",
                          model_params=long_model, search_space=SPACE, settings=settings,
                          results_dir=tmp_path, executor=executor)  # fmt: skip
    assert cancelled, "no job was seen running"
    trials = study.get_trials(deepcopy=False)
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert len(failed) == 1
    reason = failed[0].user_attrs["failure_reason"]
    assert reason.startswith("worker lost: job") and "CANCELLED" in reason, reason
    retry = [t for t in trials if t.system_attrs.get("failed_trial") == failed[0].number]
    assert len(retry) == 1 and retry[0].state == TrialState.COMPLETE
    assert retry[0].params == failed[0].params
    assert len([t for t in trials if t.state == TrialState.COMPLETE]) == 2


def test_a_preempted_trial_restarts_and_completes_once(cluster, split, tmp_path) -> None:
    """SIGUSR2 (what Slurm sends a job it preempts) to trial 0's job after its first epoch:
    submitit requeues it under the same id and the trial restarts from scratch. Every trial
    completes once, none fails, and the values equal the local pool's; each trial records
    the node and device its job ran on."""
    executor = make_executor(_slurm(tmp_path), split)
    preempted: dict[str, str] = {}

    def preempt_after_first_epoch() -> None:  # called by the coordinator's waits
        job = None if preempted else _first_job_training(executor)
        if job is not None:
            subprocess.run(["scancel", "--signal=USR2", str(job.job_id)], env=cluster.env,
                           check=True)  # fmt: skip
            preempted["job"] = str(job.job_id)

    wait = executor.wait

    def waiting(futures, timeout=None):
        preempt_after_first_epoch()
        return wait(futures, timeout if timeout is None else min(timeout, 0.5))

    executor.wait = waiting
    settings = SweepSettings(n_trials=2, quiet=True, pruner="none", batch_size=2, n_workers=2)
    model = {**MODEL, "n_epochs": 100}
    common = {"split": split, "dataset_name": "synthetic", "model_name": "mult_vae",
              "model_params": model, "search_space": SPACE, "settings": settings}  # fmt: skip
    with executor:
        study = run_sweep(**common, results_dir=tmp_path / "slurm", executor=executor)
    assert preempted, "no job was seen training"
    trials = study.get_trials(deepcopy=False)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2  # once each, none failed
    jobs = [t.system_attrs["harness:job"] for t in trials]
    assert jobs[0]["job_id"] == preempted["job"] and jobs[0]["restarts"] == 1
    assert "restarts" not in jobs[1]
    for job in jobs:
        assert job["node"] and job["host"] and job["device"].startswith("CPU")
    with make_executor(ExecutorSettings(n_workers=2), split) as local:
        pool = run_sweep(**common, results_dir=tmp_path / "local", executor=local)
    assert _record(study) == _record(pool)


def _cli_env(cluster, tmp: Path) -> dict[str, str]:
    return {**cluster.env, "PYTHONPATH": str(ROOT), "VAE_SWEEP_DATA_DIR": str(tmp / "data"),
            "TF_CPP_MIN_LOG_LEVEL": "2", "MPLBACKEND": "Agg"}  # fmt: skip


SWEEP_ARGS = ["dataset=synthetic", "dataset.options.n_users=300", "dataset.options.n_items=200",
              "dataset.options.density=0.05", "dataset.n_heldout_users=40",
              "model=mult_vae", "model.n_epochs=30", "sweep.n_trials=2", "sweep.quiet=true",
              "sweep.pruner=none", "sweep.n_workers=2", "sweep.batch_size=2", "executor=slurm",
              "executor.cpus_per_task=1"]  # fmt: skip


def test_kill_9_of_the_coordinator_then_a_rerun_loses_and_duplicates_nothing(cluster, tmp_path):
    """Both trials' jobs run (their epochs reach the study live); the coordinator is stopped, trial 1's job suspended and trial 0's
    job finishes (its result only in submitit's folder); kill -9. The rerun takes both trials
    over: trial 0 is told from the folder, trial 1's job (resumed once the rerun waits for it)
    is waited for. Nothing is resubmitted, failed or duplicated: the study equals an
    uninterrupted run's."""
    env = _cli_env(cluster, tmp_path)
    command = [str(BIN / "harness-sweep"), *SWEEP_ARGS, f"results_dir={tmp_path / 'results'}"]
    first_log = tmp_path / "first.log"
    with first_log.open("w") as log:
        first = subprocess.Popen(command, env=env, cwd=tmp_path, stdout=log, stderr=log)
    db = tmp_path / "results" / "optuna.db"

    def both_jobs_running() -> dict[int, str] | None:
        """Both jobs run, and trial 0's epochs reach the study live (RUNNING, values in)."""
        assert first.poll() is None, first_log.read_text()[-3000:]
        jobs = {n: ref["job_id"] for n, ref in _job_refs(db).items()}
        running = cluster.jobs()
        if len(jobs) == 2 and all(running.get(j) == "RUNNING" for j in jobs.values()):
            return jobs if _live_epochs(db, 0) else None
        return None

    jobs = until(both_jobs_running, "both trials' jobs running")
    first.send_signal(signal.SIGSTOP)  # tells nothing more
    subprocess.run(["scontrol", "suspend", jobs[1]], env=cluster.env, check=True)
    finished = _job_paths(db, 0).result_pickle
    until(finished.exists, "trial 0's job to finish")
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert _states(db) == ["RUNNING", "RUNNING"]  # trial 0's result is only in the folder

    rerun_log = tmp_path / "rerun.log"
    with rerun_log.open("w") as log:
        rerun = subprocess.Popen(command, env=env, cwd=tmp_path, stdout=log,
                                 stderr=subprocess.STDOUT)  # fmt: skip
    try:
        waiting = f"trial 1: waiting for its job {jobs[1]}"
        until(lambda: waiting in rerun_log.read_text() or rerun.poll() is not None, waiting)
        assert rerun.poll() is None, rerun_log.read_text()[-3000:]
        assert cluster.jobs()[jobs[1]] == "SUSPENDED"  # still running when taken over
        subprocess.run(["scontrol", "resume", jobs[1]], env=cluster.env, check=True)
        assert rerun.wait(timeout=DEADLINE) == 0, rerun_log.read_text()[-3000:]
    finally:
        if rerun.poll() is None:
            rerun.kill()
    assert _states(db) == ["COMPLETE", "COMPLETE"]  # none failed, none added
    assert {n: ref["job_id"] for n, ref in _job_refs(db).items()} == jobs  # not resubmitted
    submitted = (tmp_path / "results" / "executor" / "jobs").glob("[0-9]*")
    assert sorted(path.name for path in submitted) == sorted(jobs.values())

    straight = [*command[:-1], f"results_dir={tmp_path / 'straight'}"]
    done = subprocess.run(straight, env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=DEADLINE)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert _values(db) == _values(tmp_path / "straight" / "optuna.db")


def _job_refs(db: Path) -> dict[int, dict]:
    """Trial number -> its `harness:job` attr (the submitted job)."""
    query = ("SELECT t.number, a.value_json FROM trials t JOIN trial_system_attributes a "
             "ON a.trial_id = t.trial_id WHERE a.key = 'harness:job'")  # fmt: skip
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as con:
            return {number: json.loads(value) for number, value in con.execute(query)}
    except sqlite3.Error:
        return {}


def _live_epochs(db: Path, number: int) -> int:
    """Intermediate values in the study of trial `number` while it is RUNNING."""
    query = ("SELECT COUNT(*) FROM trials t JOIN trial_intermediate_values v ON "
             "v.trial_id = t.trial_id WHERE t.number = ? AND t.state = 'RUNNING'")  # fmt: skip
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as con:
            return con.execute(query, (number,)).fetchone()[0]
    except sqlite3.Error:
        return 0


def _job_paths(db: Path, number: int):
    import submitit

    ref = _job_refs(db)[number]
    return submitit.SlurmJob(folder=ref["folder"], job_id=ref["job_id"]).paths


def _values(db: Path) -> list[tuple]:
    storage = optuna.storages.RDBStorage(f"sqlite:///{db}")
    (summary,) = storage.get_all_studies()
    trials = storage.get_all_trials(summary._study_id)
    return [(t.number, t.state, t.value, t.params, t.intermediate_values) for t in trials]


def _states(db: Path) -> list[str]:
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as con:
            return [row[0] for row in con.execute("SELECT state FROM trials ORDER BY number")]
    except sqlite3.Error:
        return []


SMOKE_ARGS = ["budget=smoke", *SMALL_SYNTHETIC, "models=[mult_vae,ease]", "sweep.n_workers=2"]


def test_smoke_run_on_slurm_writes_the_local_metrics(cluster, tmp_path) -> None:
    """`harness-run budget=smoke dataset=synthetic` (sweeps, benchmark, report) on Slurm writes
    the bytes of the local run's metrics.csv, and its manifest names this host's node and the
    CPU device of its jobs. Small synthetic data and two models (Mult-VAE, seeded and
    iterative, and EASE); `benchmarks/bench_executor.py --part smoke` compares the default
    smoke run (2000 users, four models) and times it."""
    env = _cli_env(cluster, tmp_path)
    tables = {}
    for name, extra in (("slurm", ["executor=slurm", "executor.cpus_per_task=1"]),
                        ("local", [])):  # fmt: skip
        command = [str(BIN / "harness-run"), *SMOKE_ARGS, *extra,
                   f"results_dir={tmp_path / name / 'results'}",
                   f"reports_dir={tmp_path / name / 'reports'}"]  # fmt: skip
        done = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True,
                              timeout=DEADLINE)  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        (metrics,) = (tmp_path / name / "results").rglob("metrics.csv")
        tables[name] = metrics.read_bytes()
        (manifest,) = (tmp_path / name / "reports").rglob("manifest.json")
        tables[name + " jobs"] = json.loads(manifest.read_text())["jobs"]
    assert tables["slurm"] == tables["local"]
    jobs = tables["slurm jobs"]  # where each job ran: this host's slurmd, on the CPU
    assert jobs["backend"] == "slurm" and jobs["lost"] == 0
    assert list(jobs["by_node"]) == [socket.gethostname()]
    assert all(device.startswith("CPU") for device in jobs["by_device"])
    assert tables["local jobs"] is None


def test_a_partition_slurm_rejects_is_one_line_with_its_message(cluster, split, tmp_path):
    with make_executor(_slurm(tmp_path, partition="nope"), split) as executor:
        with pytest.raises(ExecutorConfigError) as info:
            executor.submit(divmod, 7, 2)
    message = str(info.value)
    assert "\n" not in message and "invalid partition" in message.lower()


def test_storage_coordination_on_slurm_refuses_sqlite(cluster, split, tmp_path) -> None:
    from harness.sweep import SweepConfigError

    settings = SweepSettings(n_trials=2, quiet=True, coordination="storage", n_workers=1)
    with make_executor(_slurm(tmp_path), split) as executor:
        with pytest.raises(SweepConfigError, match="(?s)refused with SQLite.*PostgreSQL.*journal"):
            run_sweep(split=split, dataset_name="synthetic", model_name="mult_vae",
                      model_params=MODEL, search_space=SPACE, settings=settings,
                      results_dir=tmp_path, executor=executor)  # fmt: skip
