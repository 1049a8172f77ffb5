"""Fault injection through the real commands: bad input exits, SIGTERM, Ctrl-C, kill -9,
password leaks and racing workers on PostgreSQL. Each asserts that nothing was lost and that
the next run completes. Bad-input cases take seconds; runs that train are marked slow."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState
from pg_server import postgres_server
from small_data import SMALL_SYNTHETIC
from waiting import tables_ready

from harness.sweep import default_storage, open_storage

BIN = Path(sys.executable).parent
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
TINY = list(SMALL_SYNTHETIC)


def command(script: str, tmp: Path, *extra: str) -> list[str]:
    return [
        str(BIN / script),
        *extra,
        f"results_dir={tmp / 'results'}",
        f"data_dir={tmp / 'cache'}",
    ]


def sweep_args(tmp: Path, *extra: str) -> list[str]:
    return command(
        "harness-sweep",
        tmp,
        *TINY,
        "model.n_epochs=2",
        "search_space.intermediate_dim=choice(16,32)",
        "search_space.latent_dim=choice(4,8)",
        "sweep.quiet=true",
        *extra,
    )


def run(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **kwargs.pop("env", {})}
    return subprocess.run(args, capture_output=True, text=True, timeout=900, env=env, **kwargs)


def assert_one_line_error(done: subprocess.CompletedProcess, script: str, *needles: str) -> str:
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    lines = [line for line in done.stderr.splitlines() if line.startswith(f"{script}: error:")]
    assert len(lines) == 1, done.stderr[-3000:]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def only_study(url: str) -> optuna.Study:
    storage = open_storage(url)
    (name,) = optuna.study.get_all_study_names(storage)
    return optuna.load_study(study_name=name, storage=storage)


# --- one style of error (seconds each) -------------------------------------------------------


def test_data_mistakes_are_one_line_and_exit_2(tmp_path):
    split = str(BIN / "harness-split")
    done = run([split, "dataset=file", f"cache_dir={tmp_path}"])
    assert_one_line_error(done, "harness-split", "dataset.options.path is not set")
    (tmp_path / "empty.csv").write_text("")
    done = run([split, "dataset=file", f"dataset.options.path={tmp_path / 'empty.csv'}"])
    assert_one_line_error(done, "harness-split", "empty.csv is empty")
    (tmp_path / "header.csv").write_text("user,item,rating\n")
    done = run([split, "dataset=file", f"dataset.options.path={tmp_path / 'header.csv'}"])
    assert_one_line_error(done, "harness-split", "no rows")
    # ml-1m without network: an address where nothing listens
    done = run(
        [
            split,
            "dataset=ml-1m",
            "dataset.options.base_url=http://127.0.0.1:9/",
            f"cache_dir={tmp_path}",
        ]
    )
    assert_one_line_error(done, "harness-split", "Could not download", "Fix:")


def test_sweep_config_mistakes_are_one_line_and_exit_2_before_any_data_work(tmp_path):
    cases = {
        "sweep.n_trials=abc": "sweep.n_trials='abc' must be a whole number",
        "sweep.sampler=gp": "sweep.sampler='gp' is unknown",
        "sweep.study_name=../outside": "sweep.study_name='../outside'",
    }
    for override, needle in cases.items():
        done = run(sweep_args(tmp_path, override))
        assert_one_line_error(done, "harness-sweep", needle)
    done = run(command("harness-sweep", tmp_path, "dataset=file"))
    assert_one_line_error(done, "harness-sweep", "dataset.options.path is not set")
    assert not (tmp_path / "outside").exists() and not (tmp_path / "cache").exists()


def test_unsafe_output_names_destroy_nothing(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    (results / "optuna.db").write_bytes(b"precious")
    (tmp_path / "victim").mkdir()
    (tmp_path / "victim" / "keep.txt").write_text("mine")
    cases = [
        ("harness-benchmark", "benchmark.name=", "benchmark.name=''"),
        ("harness-benchmark", "benchmark.name=.", "benchmark.name='.'"),
        ("harness-report", "report.name=../victim", "report.name='../victim'"),
        ("harness-report", f"report.name={tmp_path / 'victim'}", "report.name="),
        ("harness-run", "report.name=..", "report.name='..'"),
    ]
    for script, override, needle in cases:
        done = run(command(script, tmp_path, *TINY, override, f"reports_dir={tmp_path / 'rep'}"))
        assert_one_line_error(done, script, needle)
    assert (results / "optuna.db").read_bytes() == b"precious"
    assert (tmp_path / "victim" / "keep.txt").read_text() == "mine"


# --- interrupted sweeps (minutes) ------------------------------------------------------------


def wait_until(url: str, proc: subprocess.Popen, ready, what: str) -> list:
    """Poll the study (one storage, opened once the harness made the tables) until
    ``ready(trials)``; the command's stderr is shown if it ends first."""
    deadline = time.monotonic() + 300
    storage = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            _, err = proc.communicate()
            tail = err[-3000:] if isinstance(err, str) else ""
            raise AssertionError(f"the command ended ({proc.returncode}) before {what}: {tail}")
        trials = []
        try:
            if storage is None and tables_ready(url):
                storage = open_storage(url)
            if storage is not None:
                (name,) = optuna.study.get_all_study_names(storage)
                trials = optuna.load_study(study_name=name, storage=storage).get_trials()
        except Exception:  # no study yet, or the database is busy
            pass
        if ready(trials):
            return trials
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting until {what}")


def running_after(n_finished: int):
    def ready(trials) -> bool:
        finished = [t for t in trials if t.state in FINISHED]
        running = [t for t in trials if t.state == TrialState.RUNNING]
        return (
            len(finished) >= n_finished and bool(running) and bool(running[0].intermediate_values)
        )

    return ready


def check_exports_have_no_running_rows(tmp: Path, study: optuna.Study) -> pd.DataFrame:
    frame = pd.read_csv(tmp / "results" / study.study_name / "trials.csv")
    assert "RUNNING" not in set(frame["state"])
    return frame


def default_trials(study: optuna.Study) -> list:
    """Enqueued seed-default trials (not retries of a dead trial)."""
    return [
        t
        for t in study.get_trials()
        if "fixed_params" in t.system_attrs and "failed_trial" not in t.system_attrs
    ]


@pytest.mark.slow
def test_sigterm_fails_the_trial_writes_exports_and_the_rerun_completes(tmp_path):
    # 60 epochs: long enough trials (seconds) to be caught running between two polls
    args = sweep_args(tmp_path, "sweep.n_trials=4", "model.n_epochs=60")
    url = default_storage(tmp_path / "results")
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        before = wait_until(url, proc, running_after(1), "a trial runs after one finished")
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 143, stderr[-3000:]
    assert "Traceback" not in stderr
    assert "harness-sweep: terminated (SIGTERM); rerun the same command to resume." in stderr
    study = only_study(url)
    assert not study.get_trials(states=(TrialState.RUNNING,))
    killed = study.get_trials(states=(TrialState.FAIL,))  # every trial in flight (a window)
    assert killed and all(t.user_attrs["failure_reason"].startswith("interrupted") for t in killed)
    frame = check_exports_have_no_running_rows(tmp_path, study)
    assert "FAIL" in set(frame["state"])

    rerun = run(args)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    study = only_study(url)
    trials = study.get_trials()
    assert len([t for t in trials if t.state in FINISHED]) == 4
    for old in before:
        if old.state in FINISHED:  # nothing finished was lost or changed
            assert (trials[old.number].state, trials[old.number].value) == (old.state, old.value)
    check_exports_have_no_running_rows(tmp_path, study)


@pytest.mark.slow
def test_kill_9_of_the_default_trial_is_retried_at_once_with_default_heartbeat(tmp_path):
    # Default heartbeat settings (grace period 15 s) and an immediate rerun shorter than that:
    # main's code left the trial RUNNING and never evaluated the seed default.
    # 60 epochs: the default trial runs for seconds, long enough to be caught running (with
    # 8 epochs the whole sweep sometimes ended between two polls)
    args = sweep_args(tmp_path, "sweep.n_trials=2", "model.n_epochs=60")
    url = default_storage(tmp_path / "results")
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(url, proc, running_after(0), "the default trial runs")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    (default,) = default_trials(only_study(url))
    assert default.state == TrialState.RUNNING and default.number == 0

    rerun = run(args)  # the same command: another n_epochs would be another study
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    study = only_study(url)
    trials = study.get_trials()
    assert trials[0].state == TrialState.FAIL
    # failed by the reaper of dead local workers ("process ... is gone"), which acts at once,
    # not by the heartbeat's grace period (15 s): no clock needed to tell them apart
    assert "worker died: process" in trials[0].user_attrs["failure_reason"]
    (retry,) = [t for t in trials if t.system_attrs.get("failed_trial") == 0]
    assert retry.state in FINISHED and retry.params == trials[0].params  # the default, evaluated
    assert len(default_trials(study)) == 1
    check_exports_have_no_running_rows(tmp_path, study)


@pytest.mark.slow
def test_ctrl_c_on_harness_run_is_one_line_with_a_resume_hint(tmp_path):
    args = command(
        "harness-run", tmp_path, *TINY, "budget=smoke", "budget.n_epochs=30", "sweep.n_trials=3"
    )
    args.append(f"reports_dir={tmp_path / 'reports'}")
    url = default_storage(tmp_path / "results")
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(url, proc, running_after(0), "a sweep trial runs")
    finally:
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 130, stderr[-3000:]
    assert "Traceback" not in stderr
    assert "harness-run: interrupted; rerun the same command to resume" in stderr


# --- PostgreSQL: passwords and racing workers ------------------------------------------------


@pytest.mark.postgres
def test_the_password_comes_from_env_or_pgpass_and_never_from_the_url(tmp_path, monkeypatch):
    with postgres_server(password="pw-4-tests") as pg:
        url = pg["url"]  # no password in it
        for name in ("VAE_SWEEP_DB_PASSWORD", "PGPASSWORD", "PGPASSFILE"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.pgpass of the machine
        from harness.sweep.settings import SweepConfigError

        with pytest.raises(SweepConfigError, match="VAE_SWEEP_DB_PASSWORD, PGPASSWORD") as error:
            open_storage(url)
        assert "\n" not in str(error.value)
        monkeypatch.setenv("VAE_SWEEP_DB_PASSWORD", "pw-4-tests")
        optuna.create_study(storage=open_storage(url), study_name="env")
        monkeypatch.delenv("VAE_SWEEP_DB_PASSWORD")
        monkeypatch.setenv("PGPASSWORD", "pw-4-tests")
        assert "env" in optuna.study.get_all_study_names(open_storage(url))
        monkeypatch.delenv("PGPASSWORD")
        pgpass = tmp_path / "pgpass"
        pgpass.write_text(f"127.0.0.1:{pg['port']}:sweep:postgres:pw-4-tests\n")
        pgpass.chmod(0o600)
        monkeypatch.setenv("PGPASSFILE", str(pgpass))
        assert "env" in optuna.study.get_all_study_names(open_storage(url))


def _race(url: str, name: str, barrier, results) -> None:
    from harness.sweep import recovery

    study = optuna.load_study(study_name=name, storage=open_storage(url))
    barrier.wait()
    results.put(recovery.enqueue_once(study, {"x": 1}, claim="seed_default:0"))


@pytest.mark.postgres
def test_three_processes_racing_on_postgresql_enqueue_the_default_once():
    import multiprocessing

    context = multiprocessing.get_context("fork")
    with postgres_server() as pg:
        for round_ in range(5):
            name = f"race-{round_}"
            optuna.create_study(storage=open_storage(pg["url"]), study_name=name)
            barrier, results = context.Barrier(3), context.Queue()
            procs = [
                context.Process(target=_race, args=(pg["url"], name, barrier, results))
                for _ in range(3)
            ]
            for p in procs:
                p.start()
            answers = sorted(results.get(timeout=600) for _ in procs)  # at once; 600 s: a hang
            for p in procs:
                p.join(600)
            assert answers == [False, False, True]
            study = optuna.load_study(study_name=name, storage=open_storage(pg["url"]))
            assert len(study.get_trials(states=(TrialState.WAITING,))) == 1


@pytest.mark.slow
@pytest.mark.postgres
def test_three_workers_on_postgresql_evaluate_the_default_once(tmp_path):
    with postgres_server() as pg:
        args = sweep_args(tmp_path, "sweep.n_trials=3", f"sweep.storage={pg['url']}")
        workers = [
            subprocess.Popen([*args, f"sweep.worker_id={i}"], stdout=subprocess.PIPE, text=True)
            for i in range(3)
        ]
        for worker in workers:
            worker.communicate(timeout=900)
            assert worker.returncode == 0
        study = only_study(pg["url"])
        assert len(default_trials(study)) == 1
        assert not study.get_trials(states=(TrialState.RUNNING, TrialState.WAITING))


@pytest.mark.slow
@pytest.mark.postgres
def test_no_password_reaches_any_file_the_harness_writes(tmp_path):
    secret = "s3cret-pw"
    with postgres_server(password=secret) as pg:
        url = f"postgresql://postgres:{secret}@127.0.0.1:{pg['port']}/sweep"
        done = run(
            command(
                "harness-run",
                tmp_path,
                *TINY,
                "budget=smoke",
                "models=[ease,popularity]",
                "benchmark.baseline=ease",
                f"sweep.storage={url}",
                f"reports_dir={tmp_path / 'reports'}",
            )
        )
        assert done.returncode == 0, done.stderr[-3000:]
        assert secret not in done.stdout + done.stderr
        storage = open_storage(url)
        for name in optuna.study.get_all_study_names(storage):
            study = optuna.load_study(study_name=name, storage=storage)
            config = json.dumps(study.user_attrs["config"])
            assert secret not in config and "postgres:***@" in config
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    names = {p.name for p in written}
    assert {"benchmark.json", "manifest.json", "report.md", "report.html"} <= names
    assert {"config.yaml", "overrides.yaml", "hydra.yaml", "trials.csv"} <= names
    leaks = [p for p in written if secret.encode() in p.read_bytes()]
    assert not leaks, leaks
