"""A study holds one configuration; bad spaces, protocols and overrides fail before the data
loads; a sweep of failing trials stops."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf
from optuna.trial import TrialState

from harness.data import load_interactions, make_split
from harness.sweep import SweepConfigError, SweepSettings, run_sweep, sweep_from_config
from harness.sweep.failures import TooManyFailedTrialsError
from harness.sweep.identity import study_identity
from harness.sweep.space import parse_search_space

CONF = Path(__file__).resolve().parents[1] / "conf"
EASE = {"name": "ease", "lam": 500.0, "k": 100, "lambdas": None}
EASE_SPACE = {"lam": "tag(log, interval(1.0, 1000.0))"}
SETTINGS = SweepSettings(n_trials=1, pruner="none", quiet=True, n_startup_trials=1)


@pytest.fixture(scope="module")
def split():
    frame = load_interactions("synthetic", n_users=300, n_items=150, density=0.05, seed=1)
    return make_split(frame, n_val_users=50, n_test_users=50)


def _ease(split, results, *, model=EASE, space=EASE_SPACE, settings=SETTINGS):
    return run_sweep(
        split=split,
        dataset_name="synthetic",
        model_name="ease",
        model_params=model,
        search_space=space,
        settings=settings,
        results_dir=results,
    )


def _identity(space: dict, **fixed) -> dict:
    parsed = parse_search_space(space, model_name="standard_vae")
    return study_identity(
        model_name="standard_vae",
        split_fingerprint="ab" * 32,
        fixed_params={"n_epochs": 3, "k": 100, "verbose": 0, **fixed},
        distributions=parsed.distributions,
    )


def test_identity_hashes_what_shapes_a_trial_and_nothing_else():
    base = _identity({"beta": "interval(0.1,0.5)"})
    assert _identity({"beta": "interval(0.1, 0.5)"})["hash"] == base["hash"]  # same space
    assert _identity({"beta": "interval(0.1,0.5)"}, verbose=2)["hash"] == base["hash"]
    assert _identity({"beta": "interval(0.1,0.5)"}, n_epochs=4)["hash"] != base["hash"]
    assert _identity({"beta": "interval(0.1,0.6)"})["hash"] != base["hash"]
    # a fixed value of a searched key does not shape the trials: the sampled one wins
    assert _identity({"beta": "interval(0.1,0.5)"}, beta=0.3)["hash"] == base["hash"]
    assert base["components"]["model.n_epochs"] == 3


def test_resuming_with_another_configuration_is_refused_naming_the_keys(split, tmp_path):
    study = _ease(split, tmp_path)
    assert study.user_attrs["identity"]["components"]["model.k"] == 100
    with pytest.raises(SweepConfigError) as error:
        _ease(split, tmp_path, model={**EASE, "k": 50}, space={"lam": "interval(1.0, 10.0)"})
    text = str(error.value)
    assert "model.k: 100 in the study, 50 now" in text
    assert "search_space.lam: FloatDistribution(" in text
    assert "sweep.study_name=" in text
    assert len(study.get_trials()) == 1  # nothing was added to the old study
    # the same command resumes; a named new study takes the other configuration
    assert len(_ease(split, tmp_path, settings=SETTINGS.replace(n_trials=2)).trials) == 2
    other = _ease(
        split, tmp_path, model={**EASE, "k": 50}, settings=SETTINGS.replace(study_name="k50")
    )
    assert other.study_name == "k50" and other.user_attrs["identity"]["components"]["model.k"] == 50


def test_a_sweep_of_failing_trials_stops_at_the_limit(split, tmp_path):
    model = {
        "name": "standard_vae",
        "intermediate_dim": 16,
        "latent_dim": 8,
        "n_epochs": 2,
        "batch_size": 50,
        "learning_rate": 1e6,  # diverges: NaN loss
    }
    # a window of one trial: exactly the limit fails (with a window of N trials in flight, the
    # default being max(4, 2 x workers), the trials already asked when the limit is reached
    # still finish, so up to limit + N - 1 fail)
    settings = SweepSettings(
        n_trials=10, pruner="none", quiet=True, max_failed_trials=2, n_workers=1, batch_size=1
    )
    with pytest.raises(TooManyFailedTrialsError, match="2 trials failed.*max_failed_trials=2"):
        run_sweep(
            split=split,
            dataset_name="synthetic",
            model_name="standard_vae",
            model_params=model,
            search_space={"beta": "interval(0.1, 1.0)"},
            settings=settings,
            results_dir=tmp_path,
        )
    from harness.sweep import load_study, study_name_for
    from harness.sweep.storage import default_storage

    study = load_study(
        default_storage(tmp_path), study_name_for("synthetic", split.fingerprint, "standard_vae")
    )
    states = [t.state for t in study.trials]
    assert states == [TrialState.FAIL, TrialState.FAIL]
    assert (tmp_path / study.study_name / "trials.csv").exists()  # exported before stopping
    assert SweepSettings(n_trials=40).failure_limit == 20
    assert SweepSettings(n_trials=4).failure_limit == 5


def _cfg(model: str, tmp_path: Path, **changes) -> dict:
    cfg = {
        "dataset": {"name": "no-such-dataset", "options": {}},  # loading it would fail
        "protocol": OmegaConf.to_container(OmegaConf.load(CONF / "protocol" / "strong.yaml")),
        "model": OmegaConf.to_container(  # its n_epochs reads a budget: resolved, none here
            OmegaConf.load(CONF / "model" / f"{model}.yaml"), resolve=True
        ),
        "search_space": OmegaConf.to_container(
            OmegaConf.load(CONF / "search_space" / f"{model}.yaml")
        ),
        "sweep": {"n_trials": 1, "quiet": True},
        "results_dir": str(tmp_path),
    }
    cfg["protocol"].update(n_val_users=10, n_test_users=10)
    for key, value in changes.items():
        section, name = key.split(".")
        cfg[section][name] = value
    return cfg


@pytest.mark.parametrize(
    ("model", "changes", "message"),
    [
        (
            "standard_vae",
            {"search_space.drop_encoder": "interval(0.9,1.5)"},
            r"search_space.drop_encoder='interval\(0.9,1.5\)' includes 1.5.*\[0, 1\)",
        ),
        (
            "mult_vae",
            {"search_space.batch_size": "choice(100, 0)"},
            r"search_space.batch_size='choice\(100, 0\)' has choice 0.*integer >= 1",
        ),
        (
            "mult_vae",
            {"search_space.learning_rate": "interval(0.0, 0.01)"},
            r"has lower bound 0.0.*learning_rate=0.0 must be > 0",
        ),
        ("ease", {"search_space.lam": "interval(-5.0, 10.0)"}, r"search_space.lam=.*-5.0"),
        (
            "mult_vae",
            {"search_space.lr_schedule": "choice(constant, cosine)"},
            r"has choice 'cosine'.*lr_schedule='cosine' is unknown",
        ),
        ("mult_vae", {"model.n_epochs": 0}, r"model.n_epochs is invalid.*integer >= 1"),
        ("mult_vae", {"protocol.n_val_users": 0}, r"protocol.n_val_users=0.*>= 1"),
        ("mult_vae", {"protocol.heldout_fraction": 1.5}, r"protocol: heldout_fraction=1.5"),
        (
            "standard_vae",
            {"model.latent_dim": 50},
            r"model.latent_dim=50 is set, but search_space.latent_dim=.*samples it",
        ),
    ],
)
def test_bad_spaces_protocols_and_overrides_fail_before_the_data_loads(
    model, changes, message, tmp_path
):
    # the model keys set "on the command line" (harness-sweep passes what Hydra parsed)
    overridden = {None: {k.split(".")[1] for k in changes if k.startswith("model.")}}
    with pytest.raises(SweepConfigError, match=message):
        sweep_from_config(_cfg(model, tmp_path, **changes), overridden=overridden)
    assert not list(tmp_path.glob("*/trials.csv"))
