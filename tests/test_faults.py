"""Fault injection, in process (seconds): every case of issue 10 that needs no CLI run.

Each test injects the fault (a bad name, a kill at a rename, a torn journal, a dead worker, a
damaged cache, a racing worker) and asserts that nothing was lost and the next run completes.
The CLI cases (SIGTERM, kill -9, Hydra files, exit codes) are in test_faults_cli.py.
"""

from __future__ import annotations

import datetime
import json
import logging
import multiprocessing
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.distributions import IntDistribution
from optuna.trial import TrialState

from harness import outputs
from harness.data import split_from_config
from harness.data.split import load_cached, save_cached
from harness.outputs import MARKER, UnsafeOutputError, replace_folder
from harness.secrets import mask, mask_text, with_env_password
from harness.sweep import recovery
from harness.sweep.storage import open_storage

BAD_NAMES = ["", " ", ".", "..", "...", "../x", "/abs", "a/b", "a\\b", ".hidden", "x\0y"]
DATASET = {
    "name": "synthetic",
    "options": {"n_users": 300, "n_items": 120, "density": 0.05, "seed": 0},
    "n_heldout_users": 40,
}
PROTOCOL = {"kind": "strong", "threshold": 3.5, "seed": 0}


# --- 1. writers that can't destroy ---------------------------------------------------------


def _results_folder(tmp_path: Path) -> Path:
    results = tmp_path / "results"
    (results / "study-a").mkdir(parents=True)
    (results / "optuna.db").write_bytes(b"precious")
    (results / "study-a" / "trials.csv").write_text("number\n0\n")
    return results


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize("name", BAD_NAMES)
def test_a_bad_output_name_is_refused_before_anything_is_touched(tmp_path, name):
    results = _results_folder(tmp_path)
    before = _snapshot(tmp_path)
    with pytest.raises(UnsafeOutputError, match="benchmark.name"):
        replace_folder(results, name, lambda d: (d / "x").write_text("x"), key="benchmark.name")
    with pytest.raises(UnsafeOutputError):
        outputs.output_dir(results, name, "report.name")
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize("name", ["../x", "/etc", "a/b", "..", "", "x y", "ü"])
def test_unsafe_study_names_are_refused(name):
    with pytest.raises(UnsafeOutputError, match="sweep.study_name"):
        outputs.check_study_name(name)


def test_a_folder_the_harness_did_not_write_is_never_replaced(tmp_path):
    results = _results_folder(tmp_path)
    before = _snapshot(tmp_path)
    with pytest.raises(UnsafeOutputError, match=f"no {MARKER} file"):
        replace_folder(tmp_path, "results", lambda d: (d / "x").write_text("x"))
    assert _snapshot(tmp_path) == before
    (tmp_path / "file").write_text("mine")
    with pytest.raises(UnsafeOutputError):
        replace_folder(tmp_path, "file", lambda d: None)
    assert (tmp_path / "file").read_text() == "mine"
    # its own output (with the marker) and an empty folder are replaced
    replace_folder(results, "bench", lambda d: (d / "v").write_text("1"))
    replace_folder(results, "bench", lambda d: (d / "v").write_text("2"))
    assert (results / "bench" / "v").read_text() == "2" and (results / "bench" / MARKER).exists()
    (results / "empty").mkdir()
    replace_folder(results, "empty", lambda d: (d / "v").write_text("3"))
    assert (results / "empty" / "v").read_text() == "3"
    assert sorted(p.name for p in results.iterdir()) == ["bench", "empty", "optuna.db", "study-a"]


def _write(version: str) -> None:
    def fill(folder: Path) -> None:
        (folder / "a.txt").write_text(version)
        (folder / "sub").mkdir()
        (folder / "sub" / "b.txt").write_text(version * 1000)

    return fill


def _killed_write(parent: Path, version: str, step: str, exchange: bool) -> int:
    """Fork; the child writes `version` and dies (os._exit, no cleanup) at `step`."""
    pid = os.fork()
    if pid == 0:  # child
        outputs.EXCHANGE = exchange

        def hook(name: str) -> None:
            if name == step:
                os._exit(9)

        def fill(folder: Path) -> None:
            _write(version)(folder)
            if step == "filling":
                os._exit(9)

        outputs.step_hook = hook
        try:
            replace_folder(parent, "bench", fill)
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def _version(folder: Path) -> str | None:
    if not folder.exists():
        return None
    a = (folder / "a.txt").read_text()
    assert (folder / "sub" / "b.txt").read_text() == a * 1000, "a half-written folder"
    return a


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2-exchange", "two-renames"])
@pytest.mark.parametrize("step", ["filling", "filled", "moved-old", "swapped"])
def test_a_kill_at_every_step_of_a_replacement_loses_nothing(tmp_path, step, exchange):
    if exchange and not outputs.EXCHANGE:
        pytest.skip("renameat2 is not available here")
    if exchange and step == "moved-old":
        pytest.skip("the atomic exchange has no such step")
    parent = tmp_path / "results"
    replace_folder(parent, "bench", _write("old"))
    assert _killed_write(parent, "new", step, exchange) == 9
    visible = _version(parent / "bench")
    if exchange:  # no gap at all: old or new is there without any recovery
        assert visible in ("old", "new")
    outputs.recover(parent, "bench")  # what every later write and read does first
    assert _version(parent / "bench") == ("new" if step == "swapped" else "old")
    assert [p.name for p in parent.iterdir()] == ["bench"], "leftovers were not cleaned"
    replace_folder(parent, "bench", _write("next"))  # the next run completes
    assert _version(parent / "bench") == "next"
    assert [p.name for p in parent.iterdir()] == ["bench"]


def test_a_kill_between_the_renames_is_repaired_by_the_next_reader(tmp_path):
    from harness.benchmark.layout import load_results, write_results

    parent = tmp_path / "results"
    tables = {t: __import__("pandas").DataFrame({"x": [1]}) for t in ("metrics", "tests", "seeds")}
    tables["budget"] = tables["metrics"]
    write_results(parent / "bench", {"name": "old"}, tables, {})
    pid = os.fork()
    if pid == 0:
        outputs.EXCHANGE = False
        outputs.step_hook = lambda name: os._exit(9) if name == "moved-old" else None
        try:
            write_results(parent / "bench", {"name": "new"}, tables, {})
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    assert not (parent / "bench").exists()  # the gap the kill fell into
    assert load_results(parent / "bench").info["name"] == "old"


def test_a_file_write_killed_midway_leaves_the_old_file_and_no_leftover(tmp_path):
    target = tmp_path / "trials.csv"
    outputs.write_text(target, "old")
    pid = os.fork()
    if pid == 0:
        real = os.replace
        os.replace = lambda *a: os._exit(9)  # killed between writing the temp file and rename
        try:
            outputs.write_text(target, "new")
        finally:
            os.replace = real
            os._exit(0)
    os.waitpid(pid, 0)
    assert target.read_text() == "old" and len(list(tmp_path.iterdir())) == 2
    outputs.write_text(target, "next")
    assert target.read_text() == "next" and [p.name for p in tmp_path.iterdir()] == ["trials.csv"]


def test_files_and_folders_get_the_users_umask(tmp_path):
    previous = os.umask(0o002)
    try:
        outputs.write_text(tmp_path / "f.csv", "x")
        replace_folder(tmp_path, "out", lambda d: (d / "g").write_text("y"))
        split = split_from_config(DATASET, PROTOCOL, None)
        save_cached(split, tmp_path / "split.npz")
    finally:
        os.umask(previous)
    assert (tmp_path / "f.csv").stat().st_mode & 0o777 == 0o664
    assert (tmp_path / "out").stat().st_mode & 0o777 == 0o775
    assert (tmp_path / "split.npz").stat().st_mode & 0o777 == 0o664


# --- 2. secrets ------------------------------------------------------------------------------


def test_passwords_are_masked_in_text_and_nested_configs():
    url = "postgresql://alice:s3cr%40t@db.example:5432/sweep"
    assert mask_text(url) == "postgresql://alice:***@db.example:5432/sweep"
    assert mask_text(f"harness-run sweep.storage={url} x=1").count("s3cr") == 0
    for unchanged in ("postgresql://alice@db/sweep", "sqlite:////tmp/a.db", "host:5432/db"):
        assert mask_text(unchanged) == unchanged
    cfg = {"sweep": {"storage": url, "n": 3}, "list": [url, 1], "none": None}
    masked = mask(cfg)
    assert "s3cr" not in json.dumps(masked) and masked["sweep"]["n"] == 3
    assert cfg["sweep"]["storage"] == url  # the caller's config is not changed


def test_manifest_and_study_config_hold_no_password(tmp_path, monkeypatch):
    from harness.report.manifest import collect_manifest

    url = "postgresql://alice:hunter2@db.example/sweep"
    monkeypatch.setattr(sys, "argv", ["harness-run", f"sweep.storage={url}"])
    manifest = collect_manifest(
        config={"sweep": {"storage": url}}, split_fingerprint="f", stage_seconds={}
    )
    assert "hunter2" not in json.dumps(manifest)
    assert "alice:***@db.example" in manifest["command"]


def test_the_password_can_come_from_the_environment(monkeypatch):
    monkeypatch.delenv("VAE_SWEEP_DB_PASSWORD", raising=False)
    assert with_env_password("postgresql://alice@db/x") == "postgresql://alice@db/x"
    monkeypatch.setenv("VAE_SWEEP_DB_PASSWORD", "p@ss")
    assert with_env_password("postgresql://alice@db/x") == "postgresql://alice:p%40ss@db/x"
    assert with_env_password("postgresql://alice:given@db/x") == "postgresql://alice:given@db/x"
    assert with_env_password("sqlite:////tmp/x.db") == "sqlite:////tmp/x.db"


# --- 3. interrupted sweeps -------------------------------------------------------------------


def _study(tmp_path: Path, name: str = "s") -> optuna.Study:
    storage = open_storage(f"sqlite:///{tmp_path / 'optuna.db'}")
    return optuna.create_study(storage=storage, study_name=name, load_if_exists=True)


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _running_trial(study: optuna.Study, owner: dict | None, x: int) -> int:
    trial = study.ask({"x": IntDistribution(0, 100)})
    if owner is not None:
        study._storage.set_trial_system_attr(trial._trial_id, recovery.OWNER, owner)
    return trial.number


def test_trials_of_dead_local_workers_are_failed_and_retried_at_once(tmp_path):
    study = _study(tmp_path)
    done = study.ask({"x": IntDistribution(0, 100)})
    study.tell(done, 0.5)
    me = recovery.this_worker()
    dead = _running_trial(study, {**me, "pid": _dead_pid()}, 1)
    alive = _running_trial(study, {**me, "pid": os.getppid(), "start": None}, 2)
    remote = _running_trial(study, {**me, "host": "elsewhere", "pid": _dead_pid()}, 3)
    reused = _running_trial(study, {**me, "pid": os.getppid(), "start": -1}, 4)
    unowned = _running_trial(study, None, 5)
    # grace period plays no role: the trial started a moment ago
    assert sorted(recovery.reap_dead_workers(study, max_retry=2)) == [dead, reused]
    trials = study.get_trials()
    assert trials[dead].state == TrialState.FAIL
    assert "worker died" in trials[dead].user_attrs["failure_reason"]
    for number in (alive, remote, unowned):
        assert trials[number].state == TrialState.RUNNING
    retries = [t for t in trials if t.state == TrialState.WAITING]
    assert {t.system_attrs["failed_trial"] for t in retries} == {dead, reused}
    assert {t.number: t.params for t in retries}[retries[0].number] == trials[
        retries[0].system_attrs["failed_trial"]
    ].params
    assert trials[0].state == TrialState.COMPLETE and trials[0].value == 0.5  # nothing lost
    assert recovery.reap_dead_workers(study, max_retry=2) == []  # idempotent


def _age_heartbeat(storage, trial_id: int, seconds: float) -> None:
    """Move a trial's last heartbeat ``seconds`` into the past (the database's clock decides
    staleness, so the test ages the beat instead of waiting for it to age)."""
    from harness.compat.optuna import rdb_models

    models = rdb_models()
    session = storage.scoped_session()
    try:
        row = session.query(models.TrialHeartbeatModel).filter_by(trial_id=trial_id).one()
        row.heartbeat = row.heartbeat - datetime.timedelta(seconds=seconds)
        session.commit()
    finally:
        session.close()


def test_a_worker_waits_for_a_silent_remote_trial_to_be_declared_dead(tmp_path):
    from harness.sweep.retry import retry_callback

    storage = optuna.storages.RDBStorage(
        f"sqlite:///{tmp_path / 'hb.db'}",
        heartbeat_interval=1,
        grace_period=2,
        heartbeat_stale_trial_callback=retry_callback(2),
    )
    study = optuna.create_study(storage=storage, study_name="hb")
    dead = _running_trial(study, {"host": "elsewhere", "pid": 1}, 1)
    storage.record_heartbeat(study.get_trials()[dead]._trial_id)  # one beat, then silence
    _age_heartbeat(storage, study.get_trials()[dead]._trial_id, seconds=10)  # no sleeping
    assert recovery.heartbeat_ages(study)[dead] >= 10  # silent past the grace period
    assert recovery.settle_stale_trials(study, poll=0.2) == [dead]
    trials = study.get_trials()
    assert trials[dead].state == TrialState.FAIL
    assert [t.system_attrs.get("failed_trial") for t in trials[1:]] == [dead]
    live = _running_trial(study, {"host": "elsewhere", "pid": 1}, 2)
    storage.record_heartbeat(study.get_trials()[live]._trial_id)
    assert recovery.settle_stale_trials(study, poll=0.2) == []  # a fresh beat: no waiting
    assert study.get_trials()[live].state == TrialState.RUNNING


def _journal_study(path: Path) -> optuna.Study:
    study = optuna.create_study(
        storage=open_storage(str(path)), study_name="j", load_if_exists=True
    )
    for value in (0.1, 0.2, 0.3):
        trial = study.ask({"x": IntDistribution(0, 10)})
        study.tell(trial, value)
    return study


def test_a_torn_last_journal_line_is_cut_and_the_study_reopens(tmp_path, caplog):
    path = tmp_path / "journal.log"
    _journal_study(path)
    whole = path.read_bytes()
    with open(path, "ab") as handle:  # a writer killed in the middle of a line
        handle.write(b'{"op_code":5,"worker_id":"abc","trial_id":3,"sta')
    with caplog.at_level(logging.WARNING, logger="harness.sweep"):
        study = optuna.load_study(study_name="j", storage=open_storage(str(path)))
    assert "torn line" in caplog.text
    assert [t.value for t in study.get_trials()] == [0.1, 0.2, 0.3]
    assert path.read_bytes() == whole
    assert b'"sta' in path.with_name("journal.log.torn").read_bytes()
    trial = study.ask()  # the next run appends and reads back fine
    study.tell(trial, 0.4)
    study = optuna.load_study(study_name="j", storage=open_storage(str(path)))
    assert [t.value for t in study.get_trials()] == [0.1, 0.2, 0.3, 0.4]


def test_a_torn_line_with_a_later_record_appended_is_salvaged(tmp_path):
    path = tmp_path / "journal.log"
    _journal_study(path)
    lines = path.read_bytes().splitlines(keepends=True)
    # what main's code produced: a torn line, then the next worker's record on the same line
    torn = lines[:-1] + [b'{"op_code":5,"worker_id":"x","tri' + lines[-1]]
    path.write_bytes(b"".join(torn))
    study = optuna.load_study(study_name="j", storage=open_storage(str(path)))
    assert [t.value for t in study.get_trials()] == [0.1, 0.2, 0.3]


def _race_enqueue(url: str, study_name: str, barrier, results) -> None:
    storage = open_storage(url)
    study = optuna.load_study(study_name=study_name, storage=storage)
    barrier.wait()
    results.put(recovery.enqueue_once(study, {"x": 7}, claim="seed_default:0"))


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_three_workers_racing_enqueue_the_default_once(tmp_path, kind):
    url = f"sqlite:///{tmp_path / 'o.db'}" if kind == "sqlite" else str(tmp_path / "j.log")
    context = multiprocessing.get_context("fork")
    for round_ in range(3):
        name = f"race-{round_}"
        optuna.create_study(storage=open_storage(url), study_name=name)
        barrier, results = context.Barrier(3), context.Queue()
        workers = [
            context.Process(target=_race_enqueue, args=(url, name, barrier, results))
            for _ in range(3)
        ]
        for w in workers:
            w.start()
        # each answer ends its wait at once; the deadline only bounds a hang (a loaded machine
        # may take long to fork and import)
        answers = sorted(results.get(timeout=600) for _ in workers)
        for w in workers:
            w.join(600)
        assert answers == [False, False, True]
        study = optuna.load_study(study_name=name, storage=open_storage(url))
        waiting = study.get_trials(states=(TrialState.WAITING,))
        assert len(waiting) == 1 and waiting[0].system_attrs["fixed_params"] == {"x": 7}


# --- 4. caches -------------------------------------------------------------------------------


def _cache_path(tmp_path: Path) -> tuple[object, Path]:
    split = split_from_config(DATASET, PROTOCOL, tmp_path)
    (path,) = (tmp_path / "splits").glob("*.npz")
    return split, path


def _damage_empty(path: Path) -> None:
    path.write_bytes(b"")


def _damage_garbage(path: Path) -> None:
    path.write_bytes(b"PK\x03\x04 not really a zip")


def _damage_half_rows(path: Path) -> None:
    # main's load accepted this: the arrays of half the train users, the meta kept
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    n = int(arrays["train_shape"][0]) // 2
    arrays["train_indptr"] = arrays["train_indptr"][: n + 1]
    arrays["train_indices"] = arrays["train_indices"][: arrays["train_indptr"][-1]]
    arrays["train_shape"] = np.array([n, arrays["train_shape"][1]])
    arrays["train_users"] = arrays["train_users"][:n]
    np.savez(path, **arrays)


def _damage_other_split(path: Path) -> None:
    other = split_from_config(DATASET, {**PROTOCOL, "seed": 1}, None)
    save_cached(other, path)


@pytest.mark.parametrize(
    "damage", [_damage_empty, _damage_garbage, _damage_half_rows, _damage_other_split]
)
def test_a_damaged_split_cache_is_rebuilt_with_a_warning(tmp_path, damage, caplog):
    split, path = _cache_path(tmp_path)
    damage(path)
    with caplog.at_level(logging.WARNING):
        again = split_from_config(DATASET, PROTOCOL, tmp_path)
    assert "rebuilding it" in caplog.text
    assert again == split and not again.from_cache
    assert again.n_train_users == split.n_train_users
    cached = load_cached(path, split.fingerprint)  # the rebuilt cache is valid again
    assert cached == split and cached.from_cache


# --- 5. errors, read-only storages ------------------------------------------------------------


def test_connection_hints_fit_the_url_scheme(tmp_path):
    from harness.sweep.settings import SweepConfigError

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(SweepConfigError, match="createdb sweep") as error:
        open_storage(f"postgresql://u:topsecret@127.0.0.1:{port}/sweep")
    assert "topsecret" not in str(error.value) and "u:***@" in str(error.value)
    (tmp_path / "ro").mkdir()
    (tmp_path / "ro" / "sub").write_text("a file, not a folder")
    with pytest.raises(SweepConfigError, match="folder exists and is writable") as error:
        open_storage(f"sqlite:///{tmp_path / 'ro' / 'sub' / 'x.db'}")
    assert "createdb" not in str(error.value)


def test_gp_is_not_offered_and_bad_types_are_one_line_errors():
    from harness.sweep.settings import SAMPLERS, SweepConfigError, SweepSettings

    assert "gp" not in SAMPLERS
    with pytest.raises(SweepConfigError, match="sweep.sampler='gp' is unknown"):
        SweepSettings(sampler="gp")
    with pytest.raises(SweepConfigError, match="sweep.n_trials='abc' must be a whole number"):
        SweepSettings.from_mapping({"n_trials": "abc"})
    with pytest.raises(SweepConfigError, match="sweep.timeout"):
        SweepSettings.from_mapping({"timeout": "soon"})


_WRITE_SCRIPT = """
import sys, optuna
from harness.sweep.storage import open_storage
storage = open_storage(sys.argv[1])
study = optuna.create_study(storage=storage, study_name="s", direction="maximize")
for value in (0.1, 0.3):
    study.tell(study.ask({"x": optuna.distributions.IntDistribution(0, 10)}), value)
"""
_READ_SCRIPT = """
import sys
from harness.sweep.study import load_study
study = load_study(sys.argv[1], "s")
print(len(study.get_trials()), study.best_value)
"""


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_an_archived_study_is_read_from_a_read_only_folder(tmp_path, kind):
    archive = Path(os.environ.get("TMPDIR", "/tmp")) / f"vae-sweep-ro-{os.getpid()}"
    archive.mkdir(mode=0o755)
    try:
        db = archive / ("optuna.db" if kind == "sqlite" else "journal.log")
        url = f"sqlite:///{db}" if kind == "sqlite" else str(db)
        write = [sys.executable, "-c", _WRITE_SCRIPT, url]
        subprocess.run(write, check=True, capture_output=True, timeout=120)
        before = sorted(p.name for p in archive.iterdir())
        db.chmod(0o444)
        archive.chmod(0o555)
        command = [sys.executable, "-c", _READ_SCRIPT, url]
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
        if os.geteuid() == 0:  # root writes anywhere: mount the archive read-only instead
            mount = f"mount --bind {archive} {archive} && mount -o remount,bind,ro {archive}"
            probe = subprocess.run(["unshare", "-m", "sh", "-c", mount], capture_output=True)
            if probe.returncode != 0:
                pytest.skip("running as root without a way to make a read-only folder")
            shell = f'{mount} && exec "$@"'
            command = ["unshare", "-m", "sh", "-c", shell, "sh", *command]
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        assert done.stdout.split() == ["2", "0.3"]
        assert sorted(p.name for p in archive.iterdir()) == before
    finally:
        archive.chmod(0o755)
        __import__("shutil").rmtree(archive)


def test_sigterm_raises_inside_a_trial_and_waits_for_a_check_between_trials():
    import signal

    from harness.errors import (
        Terminated,
        interruptible,
        raise_if_terminated,
        signal_zone,
        sigterm_as_interrupt,
    )

    def train() -> None:
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(1000):  # the handler runs between bytecodes
            time.sleep(0.001)

    # (try/except, not pytest.raises: pytest lets KeyboardInterrupt subclasses through)
    caught = []
    try:
        with sigterm_as_interrupt():
            interruptible(train)()  # in a trial: at once
    except Terminated:
        caught.append("trial")
    try:
        with sigterm_as_interrupt(), signal_zone(raise_at_once=False):
            os.kill(os.getpid(), signal.SIGTERM)  # in Optuna's bookkeeping: deferred ...
            time.sleep(0.05)
            caught.append("deferred")
            raise_if_terminated()  # ... to the loop's next check
    except Terminated:
        caught.append("check")
    with sigterm_as_interrupt():  # nothing left over for a later sweep in this process
        raise_if_terminated()
    assert caught == ["trial", "deferred", "check"]


def test_a_sigterm_lost_in_a_finalizer_is_raised_again_as_the_first_interrupt():
    # The sweep's order: SIGTERM as an interrupt, with the second-interrupt shield inside.
    # A SIGTERM whose handler runs inside a finalizer raises where Python prints and drops the
    # exception; it is re-sent. Main's shield counted the re-sent one as a second interrupt and
    # held it until the block ended: a pool sweep trained its whole window before stopping.
    import signal

    from harness.errors import Terminated, sigterm_as_interrupt
    from harness.sweep.shield import InterruptOnce

    steps = []

    class Finalized:
        def __del__(self) -> None:
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(1000):  # the handler runs here: its exception is lost
                time.sleep(0.0001)
            steps.append("finalizer not interrupted")

    def sweep_loop() -> None:
        Finalized()  # collected at once
        deadline = time.monotonic() + 60  # the loop goes on until the signal stops it
        while time.monotonic() < deadline:
            time.sleep(0.01)
        steps.append("loop ended")

    try:  # (try/except, not pytest.raises: pytest lets KeyboardInterrupt subclasses through)
        with sigterm_as_interrupt(), InterruptOnce():
            sweep_loop()
    except Terminated:
        steps.append("terminated")
    assert steps == ["terminated"]  # main: ["loop ended", "terminated"], a minute later

    # ... and a real second SIGTERM during the cleanup after it is still held, not forced
    try:
        with sigterm_as_interrupt(), InterruptOnce():
            try:
                sweep_loop()
            except Terminated:
                steps.append("first")
                os.kill(os.getpid(), signal.SIGTERM)
                for _ in range(1000):
                    time.sleep(0.0001)
                steps.append("cleanup done")
    except Terminated:
        steps.append("raised after the cleanup")
    assert steps[1:] == ["first", "cleanup done", "raised after the cleanup"]
