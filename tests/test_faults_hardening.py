"""Fault injection, second round: secrets in every URL form, torn ledgers and study files,
full disks, concurrent benchmarks, database outages and outputs refused before any compute.

Each test corrupts, fills or kills as described and asserts that nothing finished is lost and
that the next run completes. Event-driven: conditions are polled with a generous deadline,
never timed.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from pg_server import postgres_server
from test_faults_cli import (  # shared CLI helpers
    FINISHED,
    TINY,
    assert_one_line_error,
    check_exports_have_no_running_rows,
    command,
    only_study,
    running_after,
    sweep_args,
    wait_until,
)

from harness.secrets import hide_argv_secrets, mask, mask_text, reveal
from harness.sweep import default_storage, open_storage

BIN = Path(sys.executable).parent
SECRET = "Zq9-s3cret-pw"


def run(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **kwargs.pop("env", {})}
    env.pop("VAE_SWEEP_SECRET_URLS", None)
    return subprocess.run(args, capture_output=True, text=True, timeout=900, env=env, **kwargs)


def leaks(folder: Path, secret: str = SECRET) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]


# --- secrets in every form -------------------------------------------------------------------


def url_forms(port: int, password: str = SECRET) -> dict[str, str]:
    host = f"127.0.0.1:{port}"
    return {
        "userinfo": f"postgresql://postgres:{password}@{host}/sweep",
        "query": f"postgresql://postgres@{host}/sweep?password={password}",
        "query-middle": (
            f"postgresql://postgres@{host}/sweep?sslmode=disable&password={password}"
            "&application_name=vae"
        ),
        "query-last": f"postgresql://postgres@{host}/sweep?sslmode=disable&password={password}",
    }


@pytest.mark.parametrize("form", sorted(url_forms(1)))
def test_every_password_form_is_masked_and_revealed_only_to_connect(form, monkeypatch):
    monkeypatch.delenv("VAE_SWEEP_SECRET_URLS", raising=False)
    url = url_forms(5432)[form]
    assert SECRET not in mask_text(f"x sweep.storage={url} y")
    assert SECRET not in json.dumps(mask({"a": [url], "b": {"c": f"'{url}'"}}))
    assert mask_text(mask_text(url)) == mask_text(url)
    argv = hide_argv_secrets([f"sweep.storage='{url}'", f"tracking.mlflow.uri={url}", "x=1"])
    assert SECRET not in " ".join(argv) and argv[2] == "x=1"
    masked = argv[1].split("=", 1)[1]
    assert reveal(masked) == url
    assert reveal(argv[0].split("=", 1)[1].strip("'")) == url


def _failing_runs(tmp_path: Path) -> list[tuple[str, subprocess.CompletedProcess]]:
    """harness-sweep with an unreachable storage / MLflow store in each password form, as a
    one-line error and as a crash (HYDRA_FULL_ERROR=1: Hydra's own "Error executing job with
    overrides" line and traceback)."""
    done = []
    for form, url in url_forms(1).items():
        for full in ("0", "1") if form == "query-middle" else ("1",):
            args = command("harness-sweep", tmp_path / form, *TINY, f"sweep.storage='{url}'")
            done.append((f"{form} full={full}", run(args, env={"HYDRA_FULL_ERROR": full})))
    mlflow = url_forms(1)["userinfo"]
    args = command("harness-sweep", tmp_path / "mlflow", *TINY, f"tracking.mlflow.uri='{mlflow}'")
    done.append(("mlflow", run(args, env={"HYDRA_FULL_ERROR": "1"})))
    return done


def test_no_password_form_leaks_from_a_failing_run(tmp_path):
    for what, done in _failing_runs(tmp_path):
        assert done.returncode != 0, what
        assert SECRET not in done.stdout + done.stderr, (what, done.stderr[-3000:])
        if "full=1" in what:
            assert "Error executing job with overrides" in done.stderr, done.stderr[-2000:]
        elif what != "mlflow":
            assert_one_line_error(done, "harness-sweep", "password", "***")
    assert (tmp_path / "query" / "results" / "hydra").is_dir()  # Hydra's own records exist
    assert not leaks(tmp_path)


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.parametrize("form", ["query", "query-middle"])
def test_no_password_form_leaks_from_a_passing_run(tmp_path, form):
    with postgres_server(password=SECRET) as pg:
        url = url_forms(pg["port"])[form]
        done = run(
            command(
                "harness-run",
                tmp_path,
                *TINY,
                "budget=smoke",
                "models=[ease,popularity]",
                "benchmark.baseline=ease",
                f"sweep.storage='{url}'",
                f"reports_dir={tmp_path / 'reports'}",
            )
        )
        assert done.returncode == 0, done.stderr[-3000:]
        assert SECRET not in done.stdout + done.stderr
        report = run(
            command(
                "harness-report",
                tmp_path,
                *TINY,
                "budget=smoke",
                "models=[ease,popularity]",
                "benchmark.baseline=ease",
                f"sweep.storage='{url}'",
                f"reports_dir={tmp_path / 'reports'}",
            )
        )
        assert report.returncode == 0, report.stderr[-3000:]
        assert SECRET not in report.stdout + report.stderr
        storage = open_storage(url)
        names = optuna.study.get_all_study_names(storage)
        assert names
        for name in names:
            study = optuna.load_study(study_name=name, storage=storage)
            attrs = json.dumps(study.user_attrs, default=str)
            assert SECRET not in attrs and "password=***" in attrs
            for trial in study.trials:
                assert SECRET not in json.dumps(trial.user_attrs, default=str)
    written = {p.name for p in tmp_path.rglob("*") if p.is_file()}
    assert {"benchmark.json", "manifest.json", "report.md", "report.html"} <= written
    assert {"config.yaml", "overrides.yaml", "hydra.yaml"} <= written
    assert any(name.endswith(".log") for name in written)
    assert not leaks(tmp_path)


# --- torn ledger lines, damaged ledger arrays, umask ----------------------------------------

CLOSED_FORM = ["budget=smoke", "models=[ease,popularity]", "benchmark.baseline=ease"]


def closed_form_run(tmp: Path, script: str = "harness-run", *extra: str, **kw):
    return run(
        command(script, tmp, *TINY, *CLOSED_FORM, f"reports_dir={tmp / 'reports'}", *extra),
        **kw,
    )


@pytest.fixture(scope="module")
def closed_form_done(tmp_path_factory) -> Path:
    """One finished closed-form `harness-run` (EASE and popularity, made under umask 022),
    shared by the tests below: each works on its own copy (`closed_form`)."""
    tmp = tmp_path_factory.mktemp("closed-form")
    previous = os.umask(0o022)
    try:
        done = closed_form_run(tmp)
    finally:
        os.umask(previous)
    assert done.returncode == 0, done.stderr[-3000:]
    return tmp


@pytest.fixture
def closed_form(closed_form_done, tmp_path) -> Path:
    """`tmp_path` holding a copy (modes and times kept) of the finished closed-form run."""
    for name in ("results", "cache", "reports"):
        if (closed_form_done / name).exists():
            subprocess.run(["cp", "-a", str(closed_form_done / name), str(tmp_path)], check=True)
    return tmp_path


def ledger_lines(results: Path) -> list[dict]:
    return [json.loads(line) for line in (results / "test_ledger.jsonl").read_text().splitlines()]


def test_torn_ledger_lines_are_cut_and_damaged_arrays_rescored(closed_form):
    tmp_path = closed_form  # a finished run, made under umask 022
    results = tmp_path / "results"
    entries = ledger_lines(results)
    assert len(entries) == 2  # ease and popularity, one scoring each
    for npz in [*(results / "test_ledger").glob("*.npz"), *results.rglob("models/*.npz")]:
        assert npz.stat().st_mode & 0o777 == 0o644, npz  # the umask's mode, not 0600
    # a garbage line in the middle, a torn (half-written) last line, a truncated arrays file
    ledger = results / "test_ledger.jsonl"
    good = ledger.read_text().splitlines(keepends=True)
    ledger.write_text(good[0] + "\x00\x00garbage{\n" + good[1] + good[1][: len(good[1]) // 2])
    damaged = results / entries[0]["arrays"]
    damaged.write_bytes(damaged.read_bytes()[:40])

    again = closed_form_run(tmp_path, "harness-benchmark")
    assert again.returncode == 0, again.stderr[-3000:]
    said = again.stdout + again.stderr
    assert "Traceback" not in said
    assert "torn or unreadable line(s) cut and kept aside" in said
    assert "cannot read the stored test scores" in said
    torn = (results / "test_ledger.jsonl.torn").read_text()
    assert "garbage" in torn and torn.count("\n") == 2
    assert (damaged.parent / (damaged.name + ".torn")).exists()
    after = ledger_lines(results)  # the two complete entries kept, the damaged one rescored
    assert after[:2] == entries and len(after) == 3
    assert after[2]["config_hash"] == entries[0]["config_hash"]
    report = closed_form_run(tmp_path, "harness-report")
    assert report.returncode == 0, report.stderr[-3000:]


# --- study file, data files: one short line, nothing lost -----------------------------------


def test_an_empty_optuna_db_is_an_error_naming_the_file_never_a_silent_restart(tmp_path):
    db = tmp_path / "results" / "optuna.db"
    db.parent.mkdir()
    db.write_bytes(b"")
    os.utime(db, (1, 1))  # written long ago: a cut-off write, not a file being created
    for script in ("harness-sweep", "harness-benchmark"):
        done = run(command(script, tmp_path, *TINY))
        assert_one_line_error(done, script, str(db), "0 bytes", "rm ")
        assert db.stat().st_size == 0  # left as it was, for the user to restore or delete
    db.unlink()  # the fix the message names: the next run completes
    args = command("harness-sweep", tmp_path, *TINY, "model=ease", "sweep.n_trials=1")
    assert run(args).returncode == 0
    assert db.stat().st_size > 0


def test_a_results_dir_with_a_question_mark_keeps_optuna_db_inside(tmp_path):
    results = tmp_path / "res?x=1#y"
    args = [
        str(BIN / "harness-sweep"),
        *TINY,
        "model=ease",
        "sweep.n_trials=1",
        f"results_dir='{results}'",
        f"data_dir={tmp_path / 'cache'}",
    ]
    done = run(args, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (results / "optuna.db").stat().st_size > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", results.name]


def test_binary_and_huge_data_files_are_one_short_line(tmp_path):
    binary = tmp_path / "clicks.csv"
    binary.write_bytes(bytes(range(256)) * 800)
    huge = tmp_path / "huge.csv"
    huge.write_text("user,item,rating\n1,2," + "x" * 50_000_000 + "\n")
    implicit = tmp_path / "implicit.csv"
    clicks = [(u, i) for u in range(60) for i in range(150) if (u * 7 + i * 3) % 5 == 0]
    implicit.write_text("user,item\n" + "".join(f"{u},{i}\n" for u, i in clicks))
    cases = [
        (binary, [], ["not a text file", "parquet"]),
        (huge, [], ["not a number", "characters"]),
        (implicit, ["dataset.options.rating_col=null"], ["protocol.threshold=0.5"]),
    ]
    for path, extra, needles in cases:
        args = command("harness-sweep", tmp_path, "dataset=file", f"dataset.options.path={path}")
        done = run([*args, *extra])
        line = assert_one_line_error(done, "harness-sweep", *needles)
        assert len(done.stdout + done.stderr) < 5000, len(done.stderr)
        assert len(line) < 1000
    fixed = command(
        "harness-sweep",
        tmp_path,
        "dataset=file",
        f"dataset.options.path={implicit}",
        "dataset.options.rating_col=null",
        "dataset.n_heldout_users=5",
        "protocol.threshold=0.5",
        "model=popularity",
        "sweep.n_trials=1",
    )
    done = run(fixed)
    assert done.returncode == 0, done.stderr[-3000:]


# --- full disk, read-only folder, two benchmarks at once, outputs refused before compute ----


@pytest.fixture
def tmpfs(tmp_path):
    """Mount small tmpfs file systems under tmp_path (root only); unmounted afterwards."""
    mounted: list[Path] = []

    def mount(name: str, size: str, *options: str) -> Path:
        where = tmp_path / name
        where.mkdir()
        opts = ",".join([f"size={size}", *options])
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(where)])
        if done.returncode != 0:
            pytest.skip("cannot mount a tmpfs here (needs root)")
        mounted.append(where)
        return where

    yield mount
    for where in reversed(mounted):
        subprocess.run(["umount", "-l", str(where)])


def test_a_read_only_results_folder_is_one_line(tmp_path, tmpfs):
    read_only = tmpfs("ro", "1m", "ro")
    for script in ("harness-sweep", "harness-run"):
        done = run([str(BIN / script), *TINY, f"results_dir={read_only}"], cwd=tmp_path)
        assert_one_line_error(done, script, "not writable", "results_dir=DIR")


def test_outputs_that_would_be_refused_are_refused_before_any_compute(tmp_path):
    in_the_way = tmp_path / "reports-file"
    in_the_way.write_text("mine")
    cases = [
        ("harness-run", [f"reports_dir={in_the_way}"], "reports_dir"),
        ("harness-run", ["benchmark.name=hydra"], "reserved"),
        ("harness-benchmark", ["benchmark.name=test_ledger"], "reserved"),
        ("harness-report", [f"reports_dir={in_the_way}"], "is a file"),
    ]
    for script, extra, needle in cases:
        done = run(command(script, tmp_path, *TINY, *extra))
        assert_one_line_error(done, script, needle)
    assert not (tmp_path / "cache").exists()  # no data was even loaded
    assert in_the_way.read_text() == "mine"


def test_a_full_disk_in_the_benchmark_leaves_no_staging_and_the_rerun_completes(closed_form, tmpfs):
    tmp_path = closed_form  # a finished run
    disk = tmpfs("disk", "8m")
    results = disk / "results"
    subprocess.run(["cp", "-a", str(tmp_path / "results"), str(results)], check=True)
    before = sorted(p.relative_to(results) for p in results.rglob("*"))
    stats = os.statvfs(disk)
    filler = disk / "filler"
    filler.write_bytes(b"\0" * (stats.f_bavail * stats.f_frsize - 48 * 1024))
    bench = [
        str(BIN / "harness-benchmark"),
        *TINY,
        *CLOSED_FORM,
        "benchmark.name=again",
        f"results_dir={results}",
        f"data_dir={tmp_path / 'cache'}",
    ]
    before_hydra = run(bench)  # checked before Hydra writes its run records there
    assert_one_line_error(before_hydra, "harness-benchmark", "no space left", "rerun")
    bench.append(f"hydra.run.dir={tmp_path / 'runs'}")
    opened = run(bench)  # the study file can't even be opened: one line, not "disk I/O error"
    assert_one_line_error(opened, "harness-benchmark", "no space left", "rerun")
    storage = f"sweep.storage=sqlite:///{tmp_path / 'results' / 'optuna.db'}"
    bench.append(storage)  # the studies elsewhere: the models' files fill the disk
    full = run(bench)
    assert_one_line_error(full, "harness-benchmark", "no space left", "rerun")
    assert not list(results.glob(".*.models-tmp")), list(results.glob(".*"))
    assert not (results / "again").exists()
    kept = sorted(p.relative_to(results) for p in results.rglob("*"))
    assert set(before) <= set(kept)  # nothing finished was lost
    # a staging folder left by a kill is removed at the next start of any command
    (results / ".again.models-tmp" / "models").mkdir(parents=True)
    filler.unlink()
    again = run(bench)
    assert again.returncode == 0, again.stderr[-3000:]
    assert (results / "again" / "benchmark.json").exists()
    assert not list(results.glob(".*.models-tmp"))


def test_two_benchmarks_at_once_are_serialised_by_the_lock(closed_form):
    import fcntl
    import time

    tmp_path = closed_form  # a finished run
    results = tmp_path / "results"
    running = results / ".other.models-tmp" / "models"  # a running benchmark's staging
    running.mkdir(parents=True)
    lock = os.open(results / ".benchmark.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(lock, fcntl.LOCK_EX)  # "another benchmark" holds the results folder
    log = tmp_path / "second.err"
    args = command("harness-benchmark", tmp_path, *TINY, *CLOSED_FORM, "benchmark.name=b2")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    with log.open("w") as err:
        second = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=err, env=env)
    try:
        deadline = time.monotonic() + 600
        while "another benchmark" not in log.read_text():
            assert second.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "the second benchmark never waited"
            time.sleep(0.2)
        assert running.is_dir()  # a running benchmark's staging folder is never touched
        assert not (results / "b2").exists()
    finally:
        os.close(lock)  # the first one finishes
    assert second.wait(timeout=900) == 0, log.read_text()[-3000:]
    assert (results / "b2" / "benchmark.json").exists()
    assert not running.exists()  # stale once the lock is free: removed
    entries = ledger_lines(results)
    assert len(entries) == 2  # the second reused the first one's test scores


# --- a newcomer's path -----------------------------------------------------------------------


def test_unknown_keys_name_the_closest_valid_key(tmp_path):
    cases = [
        ("harness-sweep", "sweep.n_trial=3", "did you mean sweep.n_trials?"),
        ("harness-sweep", "model.latnet_dim=5", "did you mean model.latent_dim?"),
        ("harness-run", "benchmark.n_seed=3", "did you mean benchmark.n_seeds?"),
        ("harness-report", "report.nmae=x", "did you mean report.name?"),
    ]
    for script, override, needle in cases:
        done = run(command(script, tmp_path, override))
        line = assert_one_line_error(done, script, "unknown key", needle)
        assert "+" + override.split("=")[0] in line  # adding a key on purpose is still possible
    assert not (tmp_path / "results").exists()


def test_budget_works_on_the_sweep_and_logs_hold_no_carriage_returns(tmp_path):
    args = command(
        "harness-sweep",
        tmp_path,
        *TINY,
        "budget=smoke",
        "model=ease",
        "+dataset.options.progress=true",
    )
    done = run(args)
    assert done.returncode == 0, done.stderr[-3000:]
    storage = open_storage(default_storage(tmp_path / "results"))
    (name,) = optuna.study.get_all_study_names(storage)
    study = optuna.load_study(study_name=name, storage=storage)
    finished = [t for t in study.trials if t.state.is_finished()]
    assert len(finished) == 2  # budget=smoke: 2 trials per study
    logs = [p for p in (tmp_path / "results" / "hydra").rglob("*.log")]
    assert logs
    for text in [done.stdout, done.stderr, *(p.read_text() for p in logs)]:
        assert "\r" not in text


# --- the report shows what was benchmarked --------------------------------------------------


def _figure_study(tmp_path: Path, name: str, curves: list[list[float]]) -> optuna.Study:
    study = optuna.create_study(
        study_name=name, storage=f"sqlite:///{tmp_path / 'fig.db'}", direction="maximize"
    )
    for curve in curves:
        trial = study.ask()
        trial.set_user_attr("ndcg_per_epoch", curve)
        study.tell(trial, max(curve))
    return study


def test_figures_bold_the_benchmarked_trial_and_draw_closed_form_models_as_lines(tmp_path):
    from harness.report import figures as F

    vae = _figure_study(tmp_path, "vae", [[0.1, 0.3, 0.35], [0.1, 0.2, 0.5], [0.2, 0.3, 0.4]])
    ease = _figure_study(tmp_path, "ease", [[0.42], [0.44]])
    fig = F.ndcg_per_epoch_figure({"vae": vae, "ease": ease}, k=100, chosen={"vae": 2})
    vae_ax, ease_ax = fig.axes
    bold = max(vae_ax.get_lines(), key=lambda line: line.get_linewidth())
    assert list(bold.get_ydata()) == [0.2, 0.3, 0.4]  # the benchmarked trial, not the best
    assert "benchmarked: trial 2" in vae_ax.get_legend().get_texts()[0].get_text()
    for line in ease_ax.get_lines():  # a line across the epoch axis, not a dot at epoch 1
        assert list(line.get_xdata()) == [1, 3] and len(set(line.get_ydata())) == 1
    searched = F.ndcg_per_epoch_figure({"vae": vae}, k=100)  # no benchmark: the search's best
    assert max(ln.get_linewidth() for ln in searched.axes[0].get_lines()) == 2.4
    assert "best: trial 1" in searched.axes[0].get_legend().get_texts()[0].get_text()


def test_the_optimal_beta_figure_bands_over_seeds_and_warns_at_the_ramps_end():
    import numpy as np

    from harness.report import figures as F

    beta = np.array([0.2, 0.4, 0.6, 0.8, 1.0, 1.0])
    seeds = np.array([[0.1, 0.2, 0.3, 0.35, 0.4, 0.39], [0.1, 0.25, 0.3, 0.3, 0.42, 0.41]])
    at_end = F.AnnealRun(beta, seeds.mean(axis=0), "2 seeds", ndcg_seeds=seeds)
    inside = F.AnnealRun(beta, np.array([0.1, 0.4, 0.3, 0.2, 0.1, 0.1]), "1 seed")
    assert at_end.at_ramp_end and at_end.optimal_beta == 1.0 and at_end.n_seeds == 2
    assert not inside.at_ramp_end and inside.optimal_beta == 0.4
    fig = F.beta_figure({"standard_vae": at_end, "mult_vae": inside}, k=100)
    band = fig.axes[0].collections
    assert band and "2 seeds" in fig.axes[0].get_legend().get_texts()[0].get_text()
    assert fig.axes[0].get_xlabel().startswith("β")
    assert "ramp's end" in " ".join(t.get_text() for t in fig.axes[0].texts)
    assert "ramp's end" not in " ".join(t.get_text() for t in fig.axes[1].texts)


def test_a_standalone_report_keeps_the_runs_provenance_and_adds_its_line():
    from harness.report.manifest import keep_provenance

    run_manifest = {
        "created": "t0",
        "command": "harness-run dataset=x",
        "device": "GPU 0",
        "stage_seconds": {"sweep": 10.0, "benchmark": 5.0},
        "split_fingerprint": "f",
        "git": {"commit": "a"},
    }
    report = {
        "created": "t1",
        "command": "harness-report dataset=x",
        "device": "CPU",
        "stage_seconds": {"sweep (sum of trial times)": 9.0},
        "split_fingerprint": "f",
        "git": {"commit": "b"},
    }
    merged = keep_provenance(run_manifest, report)
    assert merged["command"] == "harness-run dataset=x" and merged["device"] == "GPU 0"
    assert merged["stage_seconds"] == {"sweep": 10.0, "benchmark": 5.0}
    assert merged["reports"] == [
        {
            "command": "harness-report dataset=x",
            "created": "t1",
            "git": {"commit": "b"},
            "device": "CPU",
        }
    ]
    again = keep_provenance(merged, {**report, "created": "t2"})
    assert len(again["reports"]) == 2 and again["command"] == "harness-run dataset=x"
    assert keep_provenance({**run_manifest, "split_fingerprint": "other"}, report) == report


def test_a_kill_between_the_two_renames_never_drops_the_test_table_from_the_report(closed_form):
    from harness import outputs

    tmp_path = closed_form  # a finished run
    results = tmp_path / "results"
    bench = results / "synthetic"
    before = (bench / "metrics.csv").read_text()
    pid = os.fork()
    if pid == 0:  # rewrite the benchmark folder on the two-rename path, killed in the gap
        outputs.EXCHANGE = False
        outputs.step_hook = lambda name: os._exit(9) if name == "moved-old" else None
        try:
            outputs.replace_folder(results, "synthetic", lambda folder: None, key="benchmark.name")
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    assert not bench.exists()  # the gap the kill fell into
    report = closed_form_run(tmp_path, "harness-report")
    assert report.returncode == 0, report.stderr[-3000:]
    assert "no benchmark" not in report.stdout + report.stderr
    assert (bench / "metrics.csv").read_text() == before
    text = (tmp_path / "reports" / "synthetic" / "report.md").read_text()
    assert "No benchmark results yet" not in text and "ndcg@100" in text.lower()


# --- PostgreSQL outages ----------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.postgres
def test_a_postgresql_outage_shorter_than_db_retry_seconds_is_ridden_out(tmp_path):
    import time

    from optuna.trial import TrialState

    with postgres_server() as pg:
        args = command(
            "harness-sweep",
            tmp_path,
            *TINY,
            "model=mult_vae",
            "model.n_epochs=30",
            "search_space.intermediate_dim=choice(16,32)",
            "search_space.latent_dim=choice(4,8)",
            "sweep.n_trials=3",
            "sweep.n_workers=1",
            "sweep.quiet=true",
            "sweep.db_retry_seconds=300",
            f"sweep.storage={pg['url']}",
        )
        log = tmp_path / "sweep.log"
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
        with log.open("w") as out:
            sweep = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            deadline = time.monotonic() + 600
            storage = None
            while True:  # event: a trial is running (epochs being recorded)
                assert sweep.poll() is None, log.read_text()[-3000:]
                assert time.monotonic() < deadline, "no trial ever ran"
                try:
                    storage = storage or open_storage(pg["url"])
                    names = optuna.study.get_all_study_names(storage)
                    trials = optuna.load_study(study_name=names[0], storage=storage).trials
                    if any(t.state == TrialState.RUNNING for t in trials):
                        break
                except (IndexError, Exception):
                    pass
                time.sleep(0.2)
            storage = None
            pg["stop"]()
            while "stopped answering" not in log.read_text():  # event: the sweep noticed
                assert sweep.poll() is None, log.read_text()[-3000:]
                assert time.monotonic() < deadline + 600, "the outage was never noticed"
                time.sleep(0.2)
            pg["start"]()
            assert sweep.wait(timeout=900) == 0, log.read_text()[-3000:]
        finally:
            if sweep.poll() is None:
                sweep.kill()
        said = log.read_text()
        assert "Traceback" not in said, said[-3000:]
        assert "answers again" in said
        storage = open_storage(pg["url"])
        (name,) = optuna.study.get_all_study_names(storage)
        study = optuna.load_study(study_name=name, storage=storage)
        finished = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
        assert len(finished) >= 3
        assert not [t for t in study.trials if t.state == TrialState.RUNNING]


# --- a sweep stopped by its environment: full disk, killed PostgreSQL worker, double Ctrl-C ---


def test_a_second_interrupt_is_held_until_the_cleanup_ends_and_a_third_stops_at_once():
    from harness.sweep.shield import InterruptOnce

    def interrupt() -> None:
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(1000):  # the handler runs between bytecodes
            pass

    steps = []
    try:  # (try/except, not pytest.raises: the order of the steps is the point)
        with InterruptOnce():
            try:
                interrupt()
            except KeyboardInterrupt:
                steps.append("first raised")
                interrupt()  # held: the cleanup goes on
                steps.append("cleanup done")
    except KeyboardInterrupt:
        steps.append("raised after the cleanup")
    assert steps == ["first raised", "cleanup done", "raised after the cleanup"]
    try:
        with InterruptOnce():
            try:
                interrupt()
            except KeyboardInterrupt:
                interrupt()
                interrupt()  # the third: at once
                steps.append("never")
    except KeyboardInterrupt:
        steps.append("forced")
    assert steps[-1] == "forced"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored


def test_a_full_disk_is_recognised_in_the_cause_of_a_storage_error(tmp_path):
    from harness.sweep.reserve import SpaceReserve, full_disk

    try:
        try:
            raise OSError(28, "No space left on device")
        except OSError as error:
            raise RuntimeError("An exception is raised during the commit") from error
    except RuntimeError as wrapped:
        assert "no space left" in str(full_disk(wrapped))
    assert full_disk(RuntimeError("database or disk is full")) is not None
    assert full_disk(PermissionError(13, "denied")) is None
    reserve = SpaceReserve([tmp_path, tmp_path / "."], size=1 << 20)
    reserve.make()
    (path,) = reserve.paths
    assert path.stat().st_blocks * 512 >= 1 << 20  # real blocks, not a sparse file
    assert reserve.release() == 1 << 20 and not path.exists()


def ended(proc: subprocess.Popen, timeout: float = 600) -> subprocess.CompletedProcess:
    stdout, stderr = proc.communicate(timeout=timeout)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout or "", stderr or "")


def fill(disk: Path) -> Path:
    """Write zeros until the file system of `disk` is full.

    Unbuffered: a buffered writer keeps the tail of a short write (under its
    8 KiB buffer) and raises ENOSPC again when the file is closed, whenever
    the free space happens to end just short of a MiB.
    """
    filler = disk / "filler"
    chunk = b"\0" * (1 << 20)
    with filler.open("wb", buffering=0) as out:
        try:
            while True:
                out.write(chunk)  # a short write returns; the next one raises
        except OSError as error:
            if error.errno != errno.ENOSPC:
                raise
    return filler


@pytest.mark.parametrize("used", [0, 4096, 12288])
def test_fill_leaves_no_free_block_whatever_space_was_used(tmpfs, used):
    # 4096: the free space ends one page short of a MiB, where a buffered
    # writer raised ENOSPC again on close
    disk = tmpfs("disk", "4m")
    if used:
        (disk / "used").write_bytes(b"x" * used)
    filler = fill(disk)
    assert os.statvfs(disk).f_bavail == 0
    assert filler.stat().st_size + used >= (4 << 20) - 4096


@pytest.mark.slow
def test_a_full_disk_mid_sweep_fails_the_running_trials_exports_and_the_rerun_completes(
    tmp_path, tmpfs
):
    disk = tmpfs("disk", "16m")
    tmp = disk / "run"  # results on the small disk (the data cache too: 20 kB)
    # 60 epochs: trials run for seconds, long enough to be caught running
    args = sweep_args(tmp, "sweep.n_trials=2", "model.n_epochs=60")
    url = f"sqlite:///{tmp / 'results' / 'optuna.db'}"
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        before = wait_until(url, proc, running_after(0), "a trial records epochs")
        filler = fill(disk)
        done = ended(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert_one_line_error(done, "harness-sweep", "no space left", "rerun")
    study = only_study(url)
    trials = study.get_trials()
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    stopped = [t for t in trials if t.state == TrialState.FAIL]
    assert stopped and all(
        t.user_attrs["failure_reason"].startswith("stopped: no space left") for t in stopped
    )
    retries = {t.system_attrs.get("failed_trial"): t for t in trials if t.state.name == "WAITING"}
    assert sorted(retries) == sorted(t.number for t in stopped)  # each enqueued again
    for old in before:  # nothing finished was lost
        if old.state in FINISHED:
            assert trials[old.number].state == old.state
    frame = check_exports_have_no_running_rows(tmp, study)
    assert set(frame["number"]) >= {t.number for t in stopped}

    filler.unlink()
    rerun = run(args)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    study = only_study(url)
    trials = study.get_trials()
    assert len([t for t in trials if t.state in FINISHED]) == 2
    assert not study.get_trials(states=(TrialState.RUNNING, TrialState.WAITING))
    for number, retry in retries.items():  # the stopped trials' parameters were evaluated
        assert trials[retry.number].params == trials[number].params
    check_exports_have_no_running_rows(tmp, study)


def owner_pid(trial) -> int:
    from harness.sweep.recovery import OWNER

    return int(trial.system_attrs[OWNER]["pid"])


@pytest.mark.slow
@pytest.mark.postgres
def test_a_killed_postgresql_storage_worker_is_retried_and_the_run_ends_cleanly(tmp_path):
    with postgres_server() as pg:
        args = sweep_args(
            tmp_path,
            "sweep.n_trials=4",
            "model.n_epochs=60",  # trials run for seconds: caught running
            "sweep.coordination=storage",
            "sweep.n_workers=2",
            f"sweep.storage={pg['url']}",
        )
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            trials = wait_until(pg["url"], proc, running_after(0), "a worker's trial runs")
            (victim,) = [t for t in trials if t.state == TrialState.RUNNING][:1]
            os.kill(owner_pid(victim), signal.SIGKILL)  # the spawned worker running it
            done = ended(proc)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert done.returncode == 0, done.stderr[-3000:]
        assert "Traceback" not in done.stderr, done.stderr[-3000:]
        assert "killed" in done.stdout + done.stderr
        study = only_study(pg["url"])
        trials = study.get_trials()
        dead = trials[victim.number]
        assert dead.state == TrialState.FAIL and "worker died" in dead.user_attrs["failure_reason"]
        (retry,) = [t for t in trials if t.system_attrs.get("failed_trial") == victim.number]
        assert retry.params == dead.params and retry.state in FINISHED  # re-run, same params
        assert len([t for t in trials if t.state in FINISHED]) >= 4
        assert not study.get_trials(states=(TrialState.RUNNING,))
        check_exports_have_no_running_rows(tmp_path, study)


@pytest.mark.slow
def test_a_double_ctrl_c_leaves_no_trial_running_and_the_rerun_completes(tmp_path):
    import time

    args = sweep_args(tmp_path, "sweep.n_trials=2", "model.n_epochs=60")
    url = default_storage(tmp_path / "results")
    out, err = tmp_path / "out.log", tmp_path / "err.log"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}
    # its own process group: a terminal's Ctrl-C reaches the command and its workers
    with out.open("w") as stdout, err.open("w") as stderr:
        proc = subprocess.Popen(args, stdout=stdout, stderr=stderr, env=env, start_new_session=True)
    try:
        before = wait_until(url, proc, running_after(0), "a trial records epochs")
        os.killpg(proc.pid, signal.SIGINT)
        deadline = time.monotonic() + 300
        while True:  # event: the first interrupt's cleanup has begun
            ended_before = proc.poll() is not None
            if "stopping (interrupted" in out.read_text() + err.read_text():
                break
            assert not ended_before, err.read_text()[-3000:]
            assert time.monotonic() < deadline, "the interrupt was never handled"
            time.sleep(0.01)
        with contextlib.suppress(ProcessLookupError):  # (unless it is already done)
            os.killpg(proc.pid, signal.SIGINT)  # the second, while the first one's cleanup runs
        proc.wait(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    said = err.read_text()
    assert proc.returncode == 130, said[-3000:]
    assert "Traceback" not in said, said[-3000:]
    assert "harness-sweep: interrupted; rerun the same command to resume." in said
    study = only_study(url)
    assert not study.get_trials(states=(TrialState.RUNNING,))
    trials = study.get_trials()
    for old in before:  # nothing finished was lost
        if old.state in FINISHED:
            assert trials[old.number].state == old.state
    check_exports_have_no_running_rows(tmp_path, study)

    rerun = run(args)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    study = only_study(url)
    assert len(study.get_trials(states=FINISHED)) == 2
    assert not study.get_trials(states=(TrialState.RUNNING,))
    check_exports_have_no_running_rows(tmp_path, study)
