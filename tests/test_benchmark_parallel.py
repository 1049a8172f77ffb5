"""The benchmark's retraining on the worker pool gives exactly the serial results: the same
selection, facts, per-user test metrics and Liang betas, and the same test-scoring record."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from harness.benchmark import BenchmarkSettings, run_benchmark
from harness.benchmark.layout import load_studies
from harness.data.protocol import make_split
from harness.data.synthetic import generate_synthetic
from harness.pool import close_shared_pool, current_pool, plan_workers, shared_pool
from harness.sweep import SweepSettings, run_sweep, study_name_for

pytestmark = pytest.mark.slow
MODEL = {
    "n_epochs": 3,
    "intermediate_dim": 32,
    "latent_dim": 8,
    "batch_size": 50,
    "annealing": True,
    "anneal_cap": 0.2,
    "k": 100,
}


def _benchmark(split, studies, results: Path, name: str) -> Path:
    settings = BenchmarkSettings(
        name=name,
        models=("mult_vae", "popularity"),
        n_seeds=2,
        n_candidates=2,
        ks=(10, 100),
    )
    return run_benchmark(
        split=split,
        dataset_name="synthetic",
        studies=studies,
        model_params={"mult_vae": MODEL, "popularity": {}},
        settings=settings,
        results_dir=results,
    )


def test_benchmark_on_the_pool_equals_the_serial_benchmark(tmp_path: Path) -> None:
    split = make_split(
        generate_synthetic(n_users=400, n_items=150, density=0.06, seed=0),
        n_val_users=50,
        n_test_users=50,
    )
    try:
        run_sweep(
            split=split,
            dataset_name="synthetic",
            model_name="mult_vae",
            model_params=MODEL,
            search_space={"learning_rate": "tag(log, interval(1e-4, 1e-2))"},
            settings=SweepSettings(n_trials=3, quiet=True, pruner="none", n_workers=2),
            results_dir=tmp_path,
        )
        names = {
            m: study_name_for("synthetic", split.fingerprint, m) for m in ("mult_vae", "popularity")
        }
        studies = load_studies(
            f"sqlite:///{tmp_path / 'optuna.db'}", names, fixed=("popularity",), sweep_hint="x"
        )
        pool = shared_pool(plan_workers(2), split, split.fingerprint)
        assert current_pool(split.fingerprint) is pool
        parallel = _benchmark(split, studies, tmp_path, "parallel")
        assert len(pool.memory) >= 2 * 2 + 2 * 2  # candidates x seeds, Liang probes + retrains
    finally:
        close_shared_pool()
    # a results folder of its own: its test ledger must not hand it the pool run's scores
    serial = _benchmark(split, studies, tmp_path / "serial-results", "serial")

    info = [json.loads((out / "benchmark.json").read_text()) for out in (parallel, serial)]
    for key in ("test_scorings", "test_scored_once"):
        assert info[0][key] == info[1][key]
    runs = [i["models"]["mult_vae"] for i in info]
    assert runs[0]["chosen_trial"] == runs[1]["chosen_trial"]
    assert runs[0]["candidates"] == runs[1]["candidates"]
    assert runs[0]["beta"] == runs[1]["beta"]  # Liang's betas and test means included
    assert runs[0]["beta"]["liang"]["optimal_beta"]
    files = sorted(p.relative_to(parallel) for p in parallel.rglob("*.npz"))
    assert files, "per-user arrays expected"
    for rel in files:
        a, b = np.load(parallel / rel), np.load(serial / rel)
        assert sorted(a.files) == sorted(b.files)
        for key in a.files:
            np.testing.assert_array_equal(a[key], b[key])
