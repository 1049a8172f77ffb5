"""The benchmark on a tiny synthetic split with real (tiny) sweeps, and its bad inputs."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
from omegaconf import OmegaConf

from harness.benchmark import BenchmarkSettings, run_benchmark
from harness.benchmark.layout import MissingInputError, load_results, load_studies
from harness.benchmark.training import HeldOutTestScorer
from harness.data.protocol import make_split
from harness.data.synthetic import generate_synthetic
from harness.sweep import SweepSettings, run_sweep, study_name_for

CONF = Path(__file__).resolve().parents[1] / "conf"
SPACES = {
    "mult_vae": {
        "anneal_cap": "interval(0.05, 1.0)",
        "learning_rate": "tag(log, interval(1e-4, 1e-2))",
    },
    "ease": {"lam": "tag(log, interval(1.0, 1000.0))"},
}


@pytest.fixture(scope="module")
def split():
    data = generate_synthetic(n_users=400, n_items=150, density=0.06, seed=0)
    return make_split(data, n_val_users=50, n_test_users=50)


def _params(model: str) -> dict:
    # resolved: n_epochs and patience read a budget (none here: the model's own values)
    params = OmegaConf.to_container(OmegaConf.load(CONF / "model" / f"{model}.yaml"), resolve=True)
    params.pop("name")
    if model == "mult_vae":
        params.update(n_epochs=3, intermediate_dim=32, latent_dim=8, batch_size=50)
    return params


@pytest.fixture(scope="module")
def swept(split, tmp_path_factory):
    """A storage with 2-trial studies of mult_vae and ease (popularity has none)."""
    results = tmp_path_factory.mktemp("results")
    settings = SweepSettings(n_trials=2, quiet=True, n_startup_trials=1, pruner="none")
    for model, space in SPACES.items():
        run_sweep(
            split=split,
            dataset_name="synthetic",
            model_name=model,
            model_params=_params(model),
            search_space=space,
            settings=settings,
            results_dir=results,
        )
    storage = f"sqlite:///{results / 'optuna.db'}"
    names = {
        m: study_name_for("synthetic", split.fingerprint, m)
        for m in ("mult_vae", "ease", "popularity")
    }
    return results, storage, names


def test_benchmark_writes_every_file_with_cis_tests_budget_and_betas(split, swept):
    results_dir, storage, names = swept
    studies = load_studies(storage, names, fixed=("popularity",))
    assert studies["popularity"] is None
    settings = BenchmarkSettings(
        name="tiny",
        models=("mult_vae", "ease", "popularity"),
        n_seeds=2,
        n_candidates=2,
        liang_seeds=1,
    )
    out = run_benchmark(
        split=split,
        dataset_name="synthetic",
        studies=studies,
        model_params={m: _params(m) for m in names},
        settings=settings,
        results_dir=results_dir,
    )
    res = load_results(out)
    metrics = res.metrics
    assert set(metrics["model"]) == {"mult_vae", "ease", "popularity"}
    assert {
        "ndcg@10",
        "ndcg@20",
        "ndcg@100",
        "recall@20",
        "recall@50",
        "recall_std@50",
        "coverage@100",
    } <= set(metrics["metric"])
    finite = metrics.dropna(subset=["ci_low"])
    assert (finite["ci_low"] <= finite["mean"] + 1e-12).all()
    assert (finite["mean"] <= finite["ci_high"] + 1e-12).all()
    assert set(res.tests["model"]) == {"ease", "popularity"}
    assert (res.tests["p_holm"] >= res.tests["p_value"] - 1e-12).all()
    info = json.loads((out / "benchmark.json").read_text())
    assert info["test_scorings"] == {
        "mult_vae": {"final": 2, "liang": 1},
        "ease": {"final": 1},
        "popularity": {"final": 1},
    }
    assert info["test_scored_once"] is True
    # the runs that met the test users used fresh seeds, disjoint from selection's
    record = info["models"]["mult_vae"]
    assert record["selection_seeds"] == [0, 1] and record["test_seeds"] == [2, 3]
    assert res.seeds[res.seeds["model"] == "mult_vae"]["seed"].tolist() == [2, 3]
    assert info["test_seeds"] == [2, 3]
    budget = res.budget.set_index("model")
    assert budget.loc["mult_vae", "finished"] == budget.loc["ease", "finished"] == 2
    assert budget.loc["mult_vae", "epochs_trained"] > 0
    assert budget.loc["popularity", "n_trials_budget"] == 0
    assert "fixed configuration" in budget.loc["popularity", "note"]
    beta = info["models"]["mult_vae"]["beta"]
    assert beta["search"]["param"] == "anneal_cap"
    assert len(beta["liang"]["optimal_beta"]) == 1 and beta["liang"]["history"]["beta"]
    assert len(info["models"]["mult_vae"]["candidates"]) == 2
    per_user = res.per_user("mult_vae")
    assert per_user["ndcg@100"].shape == (2, 50)
    assert np.array_equal(per_user["test_users"], split.test_users)
    # a deterministic model is trained once; its interval still covers test-user sampling
    assert res.per_user("ease")["ndcg@100"].shape == (1, 50)
    ease = metrics[(metrics["model"] == "ease") & (metrics["metric"] == "ndcg@100")].iloc[0]
    assert ease["ci_high"] - ease["ci_low"] > 0.01
    assert ease["interval"] == "components" and ease["n_users"] == 50
    assert set(res.tests["verdict"]) <= {"better", "worse", "equivalent within ±0.01"} | {
        v for v in res.tests["verdict"] if v.startswith("not distinguishable with 50 users")
    }
    ledger = info["test_ledger"]
    assert ledger["mult_vae"]["final"]["scored"] == 2 and ledger["mult_vae"]["final"]["reused"] == 0
    assert ledger["ease"]["final"]["met_test_users"] == 1
    lines = (results_dir / "test_ledger.jsonl").read_text().splitlines()
    assert len(lines) == 2 + 1 + 1 + 1  # mult_vae final x2, liang x1, ease, popularity

    # the final models are kept, one per seed (closed-form: one), and score as in the run
    from harness.evaluation import ndcg_at_k
    from harness.models import load_model

    saved = {m: info["models"][m]["saved_models"] for m in ("mult_vae", "ease", "popularity")}
    assert saved == {
        # the test runs' seeds: fresh, after the selection seeds 0 and 1
        "mult_vae": ["models/mult_vae-seed2.keras", "models/mult_vae-seed3.keras"],
        "ease": ["models/ease.npz"],
        "popularity": ["models/popularity.npz"],
    }
    assert sorted(p.name for p in (out / "models").iterdir()) == sorted(
        Path(f).name for files in saved.values() for f in files
    )
    # no staging folder or sweep space reserve is left behind (the benchmark lock file stays:
    # it is reused)
    hidden = [p.name for p in results_dir.iterdir() if p.name.startswith(".")]
    assert hidden in ([], [".benchmark.lock"])
    for seed, rel in enumerate(saved["mult_vae"]):
        model = load_model(out / rel, expected="mult_vae", n_items=split.n_items)
        ndcg = ndcg_at_k(model.score(split.test_tr), split.test_te, split.test_tr, 100)
        assert np.nanmean(ndcg) == pytest.approx(np.nanmean(per_user["ndcg@100"][seed]), abs=1e-6)
    assert info["models"]["mult_vae"]["candidates"][0]["lr_schedule"] == "constant"

    # the same benchmark again: every scoring comes from the ledger, identical tables
    again = run_benchmark(
        split=split,
        dataset_name="synthetic",
        studies=studies,
        model_params={m: _params(m) for m in names},
        settings=settings,
        results_dir=results_dir,
    )
    res2 = load_results(again)
    info2 = json.loads((again / "benchmark.json").read_text())
    assert info2["test_scorings"] == {}
    assert info2["test_ledger"]["mult_vae"]["final"] == {
        **ledger["mult_vae"]["final"],
        "scored": 0,
        "reused": 2,
    }
    assert len((results_dir / "test_ledger.jsonl").read_text().splitlines()) == 5
    pd.testing.assert_frame_equal(res2.metrics, res.metrics)
    pd.testing.assert_frame_equal(res2.tests, res.tests)


def test_missing_storage_names_the_sweep_command_and_creates_nothing(tmp_path):
    db = tmp_path / "none" / "optuna.db"
    with pytest.raises(MissingInputError, match="harness-sweep model=mult_vae"):
        load_studies(f"sqlite:///{db}", {"mult_vae": "x-mult_vae"})
    assert not db.exists()


def test_missing_or_unfinished_study_is_a_clear_error(swept, tmp_path):
    _, storage, names = swept
    with pytest.raises(
        MissingInputError, match="has no study 'nope'.*harness-sweep model=standard_vae"
    ):
        load_studies(storage, {"standard_vae": "nope"})
    failed = optuna.create_study(storage=storage, study_name="all-failed")
    trial = failed.ask()
    failed.tell(trial, state=optuna.trial.TrialState.FAIL)
    with pytest.raises(MissingInputError, match="no COMPLETE trial.*1 failed"):
        load_studies(storage, {"ease": "all-failed"})
    with pytest.raises(MissingInputError, match="no COMPLETE or PRUNED trial"):
        load_studies(storage, {"ease": "all-failed"}, usable=("COMPLETE", "PRUNED"))
    pruned = optuna.create_study(storage=storage, study_name="pruned-only")
    pruned.tell(pruned.ask(), state=optuna.trial.TrialState.PRUNED)
    assert load_studies(storage, {"ease": "pruned-only"}, usable=("COMPLETE", "PRUNED"))["ease"]


def test_benchmark_refuses_studies_of_another_split(split, swept):
    results_dir, storage, names = swept
    studies = load_studies(storage, {"ease": names["ease"]})
    studies["ease"].set_user_attr("split_fingerprint", "0" * 64)
    try:
        with pytest.raises(ValueError, match="swept on split 000000000000"):
            run_benchmark(
                split=split,
                dataset_name="synthetic",
                studies=studies,
                model_params={"ease": _params("ease")},
                settings=BenchmarkSettings(name="x", models=("ease",), baseline="ease"),
                results_dir=results_dir,
            )
    finally:
        studies["ease"].set_user_attr("split_fingerprint", split.fingerprint)


def test_test_users_are_scored_once_per_configuration_and_seed(split):
    from harness.models import build_model

    model = build_model("popularity", split.n_train_users, split.n_items)
    model.fit(split.train)
    scorer = HeldOutTestScorer(split, ks=(10, 100))
    per_user, coverage = scorer.score(model, "popularity", "final", 0)
    assert per_user["ndcg@100"].shape == (split.test_te.shape[0],) and 0 < coverage <= 1
    with pytest.raises(RuntimeError, match="already scored"):
        scorer.score(model, "popularity", "final", 0)
    assert scorer.record() == {"popularity": {"final": 1}}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"interval": "wilson"}, "benchmark.interval='wilson' is unknown"),
        ({"test": "wilcoxon"}, "benchmark.test='wilcoxon' is unknown"),
        ({"margin": -0.01}, "benchmark.margin=-0.01 is negative"),
        ({"n_resamples": 10}, "n_resamples=10 is too few"),
        ({"n_seeds": 1}, "n_seeds=1: mult_vae train with random seeds"),
        ({"test_metric": "ndcg@30"}, "ndcg@30.*benchmark.ks"),
        ({"baseline": "standard_vae"}, "baseline='standard_vae' is not among"),
        ({"liang_seeds": 5}, "liang_seeds=5 must lie in"),
        ({"protocol_seeds": (1, 2)}, "replaced by protocol.folds"),
    ],
)
def test_bad_statistics_options_are_refused_before_anything_runs(changes, message):
    from harness.benchmark.stats import StatsConfigError

    base = {"name": "x", "models": ("mult_vae", "ease"), "n_seeds": 2}
    with pytest.raises(StatsConfigError, match=message):
        BenchmarkSettings(**{**base, **changes})
    # one seed is fine when no interval is asked
    BenchmarkSettings(**{**base, "n_seeds": 1, "interval": "none", "liang_seeds": 1})


def test_folds_are_benchmarked_on_their_own_splits_and_pooled(tmp_path):
    """protocol.folds: each fold's benchmark scores its own test users; the pooled benchmark
    holds every user once, with each user's fold, and per-fold rows in folds.csv."""
    from harness.benchmark.folds import fold_name, pool_folds

    data = generate_synthetic(n_users=400, n_items=150, density=0.06, seed=0)
    settings = BenchmarkSettings(
        name="cv",
        models=("ease", "popularity"),
        baseline="ease",
        fixed_models=("ease", "popularity"),
    )
    splits = [make_split(data, n_val_users=40, folds=2, fold=k) for k in range(2)]
    for k, fold_split in enumerate(splits):
        run_benchmark(
            split=fold_split,
            dataset_name="synthetic",
            studies={"ease": None, "popularity": None},
            model_params={m: _params(m) for m in ("ease", "popularity")},
            settings=dataclasses.replace(settings, name=fold_name("cv", k)),
            results_dir=tmp_path,
            fold=k,
        )
    out = pool_folds(
        tmp_path, "cv", 2, stats=settings.stats, baseline="ease", test_metric="ndcg@100"
    )
    res = load_results(out)
    users = [np.asarray(s.test_users) for s in splits]
    pooled = res.per_user("popularity")
    assert np.array_equal(pooled["test_users"], np.concatenate(users))
    assert np.array_equal(pooled["folds"], np.repeat([0, 1], [u.size for u in users]))
    assert res.info["n_test_users"] == sum(u.size for u in users)
    assert res.info["fold_fingerprints"] == [s.fingerprint for s in splits]
    for k in range(2):
        fold_res = load_results(tmp_path / fold_name("cv", k))
        part = pooled["ndcg@100"][:, pooled["folds"] == k]
        assert np.array_equal(part, fold_res.per_user("popularity")["ndcg@100"], equal_nan=True)
        row = res.folds[(res.folds["fold"] == k) & (res.folds["model"] == "ease")].iloc[0]
        own = fold_res.metrics.set_index(["model", "metric"]).loc[("ease", "ndcg@100")]
        assert row["mean"] == pytest.approx(own["mean"])
    total = res.metrics.set_index(["model", "metric"]).loc[("ease", "ndcg@100"), "mean"]
    assert total == pytest.approx(np.nanmean(res.per_user("ease")["ndcg@100"]))
    assert set(res.tests["model"]) == {"popularity"}
