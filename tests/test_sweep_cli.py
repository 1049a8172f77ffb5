"""End-to-end runs of the real `harness-sweep` command: kill -9 and resume (default pool
coordination, so the killed batch may hold several trials), storage-coordinated workers on a
journal file, and two commands sharing a throwaway PostgreSQL server."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from pg_server import postgres_server
from waiting import tables_ready

from harness.sweep import default_storage, open_storage

pytestmark = pytest.mark.slow
COMMAND = str(Path(sys.executable).with_name("harness-sweep"))
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
RECORDS = {"ndcg_per_epoch", "loss_per_epoch", "beta_per_epoch", "epochs_run", "wall_seconds"}


def tiny_args(tmp_path: Path, *extra: str) -> list[str]:
    """A sweep that trains in about a second per trial (300 users x 150 items)."""
    return [
        COMMAND,
        "dataset=synthetic",
        "dataset.options.n_users=300",
        "dataset.options.n_items=150",
        "dataset.options.density=0.05",
        "dataset.n_heldout_users=50",
        "model.n_epochs=2",
        # searched keys are set in the space only: a model.X= override of them is refused
        "search_space.intermediate_dim=choice(16,32)",  # unquoted: the command quotes it
        "search_space.latent_dim='choice(4,8)'",
        "sweep.quiet=true",
        f"results_dir={tmp_path / 'results'}",
        f"data_dir={tmp_path / 'cache'}",
        *extra,
    ]


def only_study(storage: optuna.storages.BaseStorage) -> optuna.Study:
    (name,) = optuna.study.get_all_study_names(storage)
    return optuna.load_study(study_name=name, storage=storage)


def check_finished_study(study: optuna.Study, *, n_trials: int, n_workers: int) -> None:
    trials = study.get_trials()
    finished = [t for t in trials if t.state in FINISHED]
    assert n_trials <= len(finished) <= n_trials + n_workers - 1
    assert len({t.number for t in trials}) == len(trials)
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    for trial in finished:
        assert RECORDS <= set(trial.user_attrs), trial.number


def wait_for_running_after_finished(url: str, proc: subprocess.Popen, n_finished: int) -> dict:
    """Poll the storage until `n_finished` trials finished and another one is RUNNING."""
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the sweep ended before it could be killed"
        if not tables_ready(url):  # opening it first would create an empty file
            time.sleep(0.05)
            continue
        try:
            study = only_study(optuna.storages.RDBStorage(url, skip_table_creation=True))
            trials = study.get_trials()
        except Exception:  # the database or study does not exist yet
            trials = []
        finished = {t.number: (t.state, t.value, t.params) for t in trials if t.state in FINISHED}
        running = [t for t in trials if t.state == TrialState.RUNNING]
        if len(finished) >= n_finished and running and running[0].intermediate_values:
            return finished
        time.sleep(0.05)
    raise AssertionError("no trial was running after the first ones finished")


def test_kill_9_mid_trial_then_the_same_command_completes_the_study(tmp_path: Path) -> None:
    args = tiny_args(
        tmp_path,
        "sweep.n_trials=5",
        "model.n_epochs=6",
        "sweep.heartbeat_interval=1",
        "sweep.grace_period=2",
    )
    url = default_storage(tmp_path / "results")
    with open(tmp_path / "first.log", "w") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
        try:
            before = wait_for_running_after_finished(url, proc, n_finished=2)
        except AssertionError as error:
            out.flush()
            log = (tmp_path / "first.log").read_text()[-3000:]
            raise AssertionError(f"{error}\n--- sweep output ---\n{log}") from None
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
    study = only_study(open_storage(url))
    killed = study.get_trials(states=(TrialState.RUNNING,))
    assert killed  # the batch that was running (one trial per worker)

    rerun = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    study = only_study(open_storage(url))
    check_finished_study(study, n_trials=5, n_workers=1)
    trials = study.get_trials()
    for number, record in before.items():
        assert (trials[number].state, trials[number].value, trials[number].params) == record
    for dead in killed:
        assert trials[dead.number].state == TrialState.FAIL
        retries = [t for t in trials if t.system_attrs.get("failed_trial") == dead.number]
        assert len(retries) == 1 and retries[0].params == trials[dead.number].params
    assert (tmp_path / "results" / study.study_name / "trials.csv").exists()


def test_two_storage_coordinated_local_workers_on_a_journal_file(tmp_path: Path) -> None:
    journal = tmp_path / "results" / "sweep-journal.log"
    args = tiny_args(
        tmp_path,
        "sweep.n_trials=4",
        "sweep.n_workers=2",
        "sweep.coordination=storage",
        f"sweep.storage={journal}",
    )
    run = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "[worker 0]" in run.stdout + run.stderr and "[worker 1]" in run.stdout + run.stderr
    study = only_study(open_storage(str(journal)))
    check_finished_study(study, n_trials=4, n_workers=2)
    assert not [p for p in journal.parent.rglob("*.heartbeats/*/*") if p.is_file()]


def test_storage_coordinated_workers_on_sqlite_are_refused_before_any_trial(
    tmp_path: Path,
) -> None:
    args = tiny_args(tmp_path, "sweep.n_workers=2", "sweep.coordination=storage")
    run = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert run.returncode == 2
    assert "sweep.n_workers=2 (2 workers) with sweep.coordination=storage is refused" in run.stderr
    assert "sweep.storage=journal://" in run.stderr and "postgresql://" in run.stderr


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A throwaway PostgreSQL cluster on a free port (initdb + pg_ctl), torn down after."""
    with postgres_server() as server:
        yield server["url"]


@pytest.mark.postgres
def test_two_workers_share_one_postgresql_study(tmp_path: Path, postgres_url: str) -> None:
    args = tiny_args(tmp_path, "sweep.n_trials=4", f"sweep.storage={postgres_url}")
    # Separate commands, as on two machines (they share only the database).
    workers = [
        subprocess.Popen(
            [*args, f"sweep.worker_id={i}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    outputs = [w.communicate(timeout=600)[0] for w in workers]
    for worker, output in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, output[-3000:]
    study = only_study(open_storage(postgres_url))
    check_finished_study(study, n_trials=4, n_workers=2)
    assert all("trial" in output for output in outputs)
