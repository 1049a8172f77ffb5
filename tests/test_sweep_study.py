"""Settings, storages, study loading, journal heartbeats and the composed Hydra config."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import optuna
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from optuna.trial import TrialState

from harness.configs import conf_dir
from harness.sweep import (
    StudyNotFoundError,
    SweepConfigError,
    SweepSettings,
    default_storage,
    load_study,
    open_storage,
    parse_search_space,
)
from harness.sweep.app import quote_search_space_args
from harness.sweep.config import model_config
from harness.sweep.heartbeat import JournalHeartbeat
from harness.sweep.storage import journal_path, resolve_storage_url
from harness.sweep.study import make_pruner, make_sampler


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"sampler": "bayes"}, r"sweep.sampler='bayes' is unknown; use one of tpe, random"),
        ({"pruner": "asha"}, r"sweep.pruner='asha' is unknown; use one of median"),
        ({"n_trials": None, "timeout": None}, "would never end; set sweep.n_trials"),
        ({"n_workers": 0}, r"sweep.n_workers=0 must be >= 1"),
        ({"n_workers": -2}, r"sweep.n_workers=-2 must be >= 1"),
        ({"n_workers": "many"}, r"sweep.n_workers='many' must be 'auto'"),
        ({"batch_size": 0}, r"sweep.batch_size=0 must be >= 1"),
        ({"coordination": "redis"}, r"sweep.coordination='redis' is unknown; use one of pool"),
        ({"grace_period": 5, "heartbeat_interval": 10}, "must exceed sweep.heartbeat_interval"),
    ],
)
def test_bad_settings_name_the_key(changes: dict, message: str) -> None:
    with pytest.raises(SweepConfigError, match=message):
        SweepSettings(**changes)


def test_settings_from_mapping_rejects_typos() -> None:
    with pytest.raises(SweepConfigError, match="unknown sweep setting.*sweep.n_trails") as info:
        SweepSettings.from_mapping({"n_trails": 3, "zzz": 1})
    assert "sweep.n_trails (did you mean sweep.n_trials?)" in str(info.value)
    assert "sweep.zzz;" in str(info.value)  # nothing close: no guess
    settings = SweepSettings.from_mapping({"models": ["ease", "popularity"], "n_trials": 3})
    assert settings.models == ("ease", "popularity") and settings.effective_grace_period == 15


def test_every_sampler_and_pruner_builds() -> None:
    space = parse_search_space({"lam": "choice(1.0, 10.0)"}, model_name="ease")
    for sampler in ("tpe", "random", "qmc", "grid"):
        assert make_sampler(SweepSettings(sampler=sampler), space) is not None
    for pruner in ("median", "hyperband", "successive_halving", "none"):
        assert make_pruner(SweepSettings(pruner=pruner)) is not None


def test_sqlite_with_storage_coordinated_workers_is_refused_with_the_fix(tmp_path: Path) -> None:
    storage_mode = SweepSettings(n_workers=2, coordination="storage")
    with pytest.raises(
        SweepConfigError, match=r"sweep.n_workers=2 .*refused with SQLite.*journal://.*postgresql"
    ):
        resolve_storage_url(storage_mode, tmp_path)
    url = resolve_storage_url(storage_mode.replace(storage="x.log"), tmp_path)
    assert url == "x.log"
    # The default pool coordination has one writer: SQLite is fine with any number of workers.
    assert resolve_storage_url(SweepSettings(n_workers=2), tmp_path).startswith("sqlite")
    assert resolve_storage_url(storage_mode.replace(n_workers=1), tmp_path).startswith("sqlite")
    assert default_storage(tmp_path) == f"sqlite:///{tmp_path.resolve()}/optuna.db"


def test_journal_urls() -> None:
    assert journal_path("journal:///tmp/a/b.log") == Path("/tmp/a/b.log")
    assert journal_path("rel.log") == Path("rel.log").resolve()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://nobody:secret@127.0.0.1:{port}/nodb",
        "nosuchdb://host/db",
        "sqlite:////proc/forbidden/optuna.db",
    ],
)
def test_unreachable_storage_is_a_clear_error_before_any_trial(url: str) -> None:
    url = url.format(port=_free_port())
    with pytest.raises(SweepConfigError, match="sweep.storage=.*cannot") as info:
        open_storage(url, SweepSettings())
    assert "secret" not in str(info.value)


_OPEN_ON_GO = """
import sys, time
from pathlib import Path
from harness.sweep.storage import open_storage
go = Path(sys.argv[2])
Path(sys.argv[3]).touch()  # imported: ready
while not go.exists() or not go.read_text():
    time.sleep(0.001)
start = float(go.read_text())
while time.time() < start:  # spin: released within microseconds of each other
    pass
open_storage(sys.argv[1])
"""


def test_processes_opening_a_fresh_sqlite_study_at_once_all_succeed(tmp_path: Path) -> None:
    """A sweep and a report (or a poller) opening a new study file together race to create
    Optuna's tables; the loser ("table ... already exists") tries again instead of failing
    with "cannot connect". Four processes released at once, on four fresh files (before the
    retry, most rounds had a loser)."""
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    for round_ in range(4):
        url = f"sqlite:///{tmp_path / f'fresh{round_}.db'}"
        go, ready = tmp_path / f"go{round_}", [tmp_path / f"ready{round_}-{i}" for i in range(4)]
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", _OPEN_ON_GO, url, str(go), str(r)],
                env=env,
                stderr=subprocess.PIPE,
                text=True,
            )  # fmt: skip
            for r in ready
        ]
        deadline = time.monotonic() + 120
        while not all(r.exists() for r in ready) and time.monotonic() < deadline:
            time.sleep(0.01)
        tmp = go.with_suffix(".tmp")
        tmp.write_text(str(time.time() + 0.5))
        tmp.rename(go)
        errors = [p.communicate(timeout=120)[1] for p in procs]
        assert [p.returncode for p in procs] == [0] * 4, [e[-600:] for e in errors if e]


def test_load_study_lists_what_the_storage_holds(tmp_path: Path) -> None:
    url = default_storage(tmp_path)
    optuna.create_study(storage=url, study_name="present")
    assert load_study(url, "present").study_name == "present"
    with pytest.raises(StudyNotFoundError, match="no study 'absent'.*it holds: present"):
        load_study(url, "absent")


def test_journal_heartbeat_fails_dead_trials_once_and_retries_them(tmp_path: Path) -> None:
    log_file = tmp_path / "journal.log"
    study = optuna.create_study(storage=open_storage(str(log_file)), study_name="s")
    now = time.time()  # the reaper's clock, held still: no waiting, no race
    beat = JournalHeartbeat(
        log_file, "s", interval=3600, grace_period=60, max_retry=1, clock=lambda: now + 30
    )
    dead = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    alive = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    old = now - 31  # 61 s silent by the clock: past the grace period; `alive` beat just now
    with beat.beating(alive._trial_id):
        (beat.directory / str(dead._trial_id)).touch()
        os.utime(beat.directory / str(dead._trial_id), (old, old))
        assert beat.fail_stale_trials(study) == [dead.number]
        # A second reaper (another worker) finds nothing left to do.
        assert beat.fail_stale_trials(study) == []
    trials = study.get_trials()
    assert trials[dead.number].state == TrialState.FAIL
    assert "no heartbeat" in trials[dead.number].user_attrs["failure_reason"]
    assert trials[alive.number].state == TrialState.RUNNING
    (retry,) = [t for t in trials if t.state == TrialState.WAITING]
    assert retry.params == trials[dead.number].params
    assert "failure_reason" not in retry.user_attrs
    assert not (beat.directory / str(alive._trial_id)).exists()


def test_journal_heartbeat_refreshes_the_side_file_while_the_trial_runs(tmp_path: Path) -> None:
    log_file = tmp_path / "journal.log"
    beat = JournalHeartbeat(log_file, "s", interval=0.01, grace_period=60, max_retry=1)
    path = beat.directory / "7"
    with beat.beating(7):
        os.utime(path, (0, 0))  # as if silent since 1970: the next beat must refresh it
        deadline = time.monotonic() + 60  # generous; ends at the first beat
        while path.stat().st_mtime == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert path.stat().st_mtime > 0, "no heartbeat within 60 s"
    assert not path.exists()  # removed when the trial ends


def test_cli_search_space_values_are_quoted_for_hydra() -> None:
    args = [
        "search_space.beta=interval(0.05,0.5)",
        "search_space.lr='tag(log, interval(1e-4,1e-2))'",
        "+search_space.x=choice('a','b')",
        "model=mult_vae",
        "search_space.k=3",
    ]
    assert quote_search_space_args(args) == [
        "search_space.beta='interval(0.05,0.5)'",
        "search_space.lr='tag(log, interval(1e-4,1e-2))'",
        "+search_space.x=\"choice('a','b')\"",
        "model=mult_vae",
        "search_space.k=3",
    ]


def _compose(*overrides: str) -> dict:
    with initialize_config_dir(str(conf_dir()), version_base=None):
        cfg = compose(config_name="sweep", overrides=list(overrides))
    return OmegaConf.to_container(cfg, resolve=True)


@pytest.mark.parametrize("model", ["standard_vae", "mult_vae", "ease", "popularity"])
def test_search_space_follows_the_model_and_parses(model: str) -> None:
    cfg = _compose(f"model={model}")
    assert cfg["model"]["name"] == model
    parsed = parse_search_space(cfg["search_space"], model_name=model)
    if model != "popularity":
        assert parsed.distributions
    SweepSettings.from_mapping(cfg["sweep"])


def test_cli_override_of_a_search_space_entry() -> None:
    cfg = _compose("model=mult_vae", "search_space.anneal_cap='interval(0.05,0.5)'")
    assert cfg["search_space"]["anneal_cap"] == "interval(0.05,0.5)"
    assert "beta" not in cfg["search_space"]


def test_model_config_reads_each_composed_model() -> None:
    cfg = _compose("models=[mult_vae,ease]", "models.mult_vae.batch_size=64", "budget=smoke")
    mult, space = model_config(cfg, "mult_vae")
    assert mult["name"] == "mult_vae" and mult["n_epochs"] == 3 and mult["batch_size"] == 64
    assert "anneal_cap" in space
    ease, _ = model_config(cfg, "ease")
    assert "n_epochs" not in ease
    assert model_config(cfg, "standard_vae")[0]["name"] == "standard_vae"  # the `model=` one
    with pytest.raises(SweepConfigError, match="unknown model 'vae9'"):
        model_config(cfg, "vae9")


def test_defaults_are_enqueued_once_but_again_after_an_interrupted_first_run() -> None:
    from harness.sweep.objective import INTERRUPTED
    from harness.sweep.runner import _enqueue_defaults

    space = parse_search_space({"lam": "tag(log, interval(1, 1e4))"}, model_name="ease")
    study = optuna.create_study(direction="maximize")
    _enqueue_defaults(study, space, "ease")
    _enqueue_defaults(study, space, "ease")  # already waiting: not twice
    (waiting,) = study.get_trials(states=(TrialState.WAITING,))
    trial = study.ask()
    assert trial.suggest_float("lam", 1, 1e4, log=True) == 500.0
    trial.set_user_attr("failure_reason", INTERRUPTED)
    study.tell(trial, state=TrialState.FAIL)
    _enqueue_defaults(study, space, "ease")
    assert len(study.get_trials(states=(TrialState.WAITING,))) == 1
    trial = study.ask()
    trial.suggest_float("lam", 1, 1e4, log=True)
    trial.set_user_attr("failure_reason", "TrainingDivergedError: ...")
    study.tell(trial, state=TrialState.FAIL)
    _enqueue_defaults(study, space, "ease")  # a diverged default is not retried
    assert not study.get_trials(states=(TrialState.WAITING,))


def test_the_default_trial_is_the_composed_model_config_not_the_shipped_file() -> None:
    """A user's own model/ease.yaml (lam 50) gives the default trial, not conf/model/ease.yaml's
    500; keys the composed config lacks still come from the shipped file."""
    from harness.sweep.runner import _enqueue_defaults

    space = parse_search_space({"lam": "tag(log, interval(1, 1e4))"}, model_name="ease")
    study = optuna.create_study(direction="maximize")
    _enqueue_defaults(study, space, "ease", {"name": "ease", "lam": 50.0})
    assert study.ask().suggest_float("lam", 1, 1e4, log=True) == 50.0
    study = optuna.create_study(direction="maximize")
    _enqueue_defaults(study, space, "ease", {"name": "ease"})
    assert study.ask().suggest_float("lam", 1, 1e4, log=True) == 500.0


@pytest.mark.parametrize(
    ("override", "group"), [("model=vae9", "model"), ("dataset=ml-3m", "dataset")]
)
def test_unknown_model_or_dataset_lists_the_available_ones(override: str, group: str) -> None:
    from hydra.errors import ConfigCompositionException, MissingConfigException

    with pytest.raises((ConfigCompositionException, MissingConfigException)) as info:
        _compose(override)
    assert f"Could not find '{group}/" in str(info.value)
    assert "Available options" in str(info.value)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("search_space.beta='interval(1,'", "search_space.beta: cannot parse"),
        ("sweep.pruner=asha", "sweep.pruner='asha' is unknown"),
        ("sweep.storage=nosuchdb://x/y", "sweep.storage=nosuchdb://x/y: cannot connect"),
    ],
)
def test_bad_config_fails_before_the_data_is_loaded(
    tmp_path: Path, override: str, message: str
) -> None:
    from harness.sweep import sweep_from_config

    cfg = _compose(override, f"results_dir={tmp_path}")
    cfg["dataset"]["name"] = "no-such-dataset"  # loading it would fail with another error
    with pytest.raises(SweepConfigError, match=message.replace("(", r"\(")):
        sweep_from_config(cfg)
