"""Fault injection, second round: secrets in every URL form, torn ledgers and study files,
full disks, concurrent benchmarks, database outages and outputs refused before any compute.

Each test corrupts, fills or kills as described and asserts that nothing finished is lost and
that the next run completes. Event-driven: conditions are polled with a generous deadline,
never timed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from pg_server import postgres_server

from harness.secrets import hide_argv_secrets, mask, mask_text, reveal
from harness.sweep import open_storage

BIN = Path(sys.executable).parent
SECRET = "Zq9-s3cret-pw"
TINY = [
    "dataset=synthetic",
    "dataset.options.n_users=300",
    "dataset.options.n_items=150",
    "dataset.options.density=0.05",
    "dataset.n_heldout_users=50",
]


def command(script: str, tmp: Path, *extra: str) -> list[str]:
    return [
        str(BIN / script),
        *extra,
        f"results_dir={tmp / 'results'}",
        f"data_dir={tmp / 'cache'}",
    ]


def run(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **kwargs.pop("env", {})}
    env.pop("VAE_SWEEP_SECRET_URLS", None)
    return subprocess.run(args, capture_output=True, text=True, timeout=900, env=env, **kwargs)


def assert_one_line_error(done: subprocess.CompletedProcess, script: str, *needles: str) -> str:
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    lines = [line for line in done.stderr.splitlines() if line.startswith(f"{script}: error:")]
    assert len(lines) == 1, done.stderr[-3000:]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


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
    args = command(
        "harness-sweep", tmp_path / "mlflow", *TINY, f"tracking.mlflow.uri='{mlflow}'"
    )
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


def ledger_lines(results: Path) -> list[dict]:
    return [json.loads(line) for line in (results / "test_ledger.jsonl").read_text().splitlines()]


def test_torn_ledger_lines_are_cut_and_damaged_arrays_rescored(tmp_path):
    results = tmp_path / "results"
    previous = os.umask(0o022)
    try:
        first = closed_form_run(tmp_path)
    finally:
        os.umask(previous)
    assert first.returncode == 0, first.stderr[-3000:]
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
