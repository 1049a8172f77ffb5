"""`experiment=liang2018_ml20m`: it sets Liang et al.'s protocol and Mult-VAE exactly, and the
same configuration runs at ML-20M scale on ML-20M-shaped synthetic data."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from harness.sweep import parse_search_space

CONF = str(Path(__file__).resolve().parents[1] / "conf")
N_BATCHES = 4  # "one epoch of a few batches": enough to prove the shapes and memory


def _compose(*overrides: str) -> dict:
    with initialize_config_dir(config_dir=CONF, version_base=None):
        cfg = compose(config_name="run", overrides=["experiment=liang2018_ml20m", *overrides])
    return OmegaConf.to_container(cfg, resolve=True)


def test_experiment_sets_liang2018_protocol_and_model():
    cfg = _compose()
    assert cfg["dataset"]["name"] == "ml-20m"
    protocol = cfg["protocol"]
    assert (protocol["kind"], protocol["threshold"], protocol["min_user_positives"]) == (
        "strong",
        3.5,
        5,
    )
    assert protocol["n_val_users"] == protocol["n_test_users"] == 10_000
    assert protocol["heldout_fraction"] == 0.2
    model = cfg["models"]["mult_vae"]
    assert model["name"] == "mult_vae" and list(cfg["models"]) == ["mult_vae", "ease", "popularity"]
    assert (model["intermediate_dim"], model["latent_dim"], model["n_hidden_layers"]) == (
        600,
        200,
        1,
    )
    assert (model["batch_size"], model["n_epochs"]) == (500, 200)
    assert model["annealing"] and model["anneal_cap"] == 0.2
    assert model["total_anneal_steps"] == 200_000
    assert (model["drop_encoder"], model["drop_decoder"], model["learning_rate"]) == (
        0.5,
        0.0,
        1e-3,
    )
    # nothing searched: the single trial is the paper's configuration
    space = cfg["search_spaces"]["mult_vae"]
    assert not parse_search_space(space, model_name="mult_vae").distributions
    assert cfg["sweep"]["n_trials"] == 1 and "mult_vae" in cfg["models"]
    assert cfg["benchmark"]["baseline"] == "mult_vae"


def test_budget_and_command_line_overrides_still_apply():
    cfg = _compose("models.mult_vae.n_epochs=3", "sweep.n_trials=2")
    assert cfg["models"]["mult_vae"]["n_epochs"] == 3 and cfg["sweep"]["n_trials"] == 2
    assert _compose("budget.n_epochs=4")["models"]["mult_vae"]["n_epochs"] == 4


@pytest.mark.slow
def test_experiment_runs_at_ml20m_scale_on_synthetic_data(tmp_path):
    """One epoch over a few batches of the paper's Mult-VAE, validated and scored on 10,000
    users each over 20,108 items.

    The VAE has no "batches per epoch" option, so the epoch runs over the first
    N_BATCHES * batch_size training users instead; everything else is the experiment's.
    """
    from harness.benchmark.training import HeldOutTestScorer
    from harness.models import build_model
    from harness.sweep.config import load_split

    cfg = _compose(
        "dataset=synthetic-ml20m",
        "dataset.options.progress=false",
        "models.mult_vae.n_epochs=1",
        f"data_dir={tmp_path}",
    )
    split = load_split(cfg)
    assert split.n_items > 20_000 and split.n_train_users > 100_000
    assert split.val_te.shape[0] == split.test_te.shape[0] == 10_000
    params = {k: v for k, v in cfg["models"]["mult_vae"].items() if k != "name"}
    n_users = N_BATCHES * params["batch_size"]
    model = build_model("mult_vae", n_users, split.n_items, **{**params, "seed": 0})
    model.fit(split.train[:n_users], x_val_tr=split.val_tr, x_val_te=split.val_te)
    assert len(model.ndcg_per_epoch()) == 1 and math.isfinite(model.best_ndcg)
    # beta after 4 of 200,000 annealing steps: Liang's slow anneal, not the seed formula
    assert model.get_optimal_beta() == pytest.approx(N_BATCHES / 200_000, rel=1e-3)
    per_user, coverage = HeldOutTestScorer(split, (20, 50, 100)).score(
        model, "mult_vae", "final", 0
    )
    assert per_user["ndcg@100"].shape == (10_000,) and np.isfinite(per_user["ndcg@100"]).any()
    assert 0 < coverage <= 1


def _compose_run(*overrides: str) -> dict:
    with initialize_config_dir(config_dir=CONF, version_base=None):
        return OmegaConf.to_container(
            compose(config_name="run", overrides=list(overrides)), resolve=True
        )


@pytest.mark.parametrize(
    ("budget", "trials", "epochs", "patience"),
    [("smoke", 2, 3, None), ("default", 40, 100, 10), ("paper", 50, 200, 20)],
)
def test_budgets_set_trials_and_epochs_for_every_model(budget, trials, epochs, patience):
    """A budget sets the trials, the maximum epochs and the early-stopping patience of every
    iterative model (n_epochs is a maximum: patience ends runs before it)."""
    from harness.sweep import model_config

    cfg = _compose_run(f"budget={budget}", "dataset=synthetic")
    assert cfg["sweep"]["n_trials"] == trials
    for model in ("standard_vae", "mult_vae"):
        assert model_config(cfg, model)[0]["n_epochs"] == epochs, model
        assert model_config(cfg, model)[0]["patience"] == patience, model
    assert "n_epochs" not in model_config(cfg, "ease")[0]


def test_command_line_overrides_win_over_the_budget():
    from harness.sweep import model_config

    cfg = _compose_run(
        "budget=smoke", "sweep.n_trials=5", "budget.n_epochs=7", "benchmark.n_seeds=3"
    )
    assert cfg["sweep"]["n_trials"] == 5 and cfg["benchmark"]["n_seeds"] == 3
    assert {model_config(cfg, m)[0]["n_epochs"] for m in ("standard_vae", "mult_vae")} == {7}
