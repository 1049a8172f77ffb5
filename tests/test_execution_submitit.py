"""`executor=submitit_local`: the same coordination as the local pool (window of asked trials,
tells in trial-number order, pruning against shipped history), so a sweep gives the pool's
trials and values; jobs read the split from the checksummed cache by fingerprint (nothing
pickled but the job); a benchmark on it equals the serial one; a job killed mid-run is
lost and retried. Each job is a fresh process (TensorFlow imported per job): kept small."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import numpy as np
import optuna
import pytest

from harness.benchmark import BenchmarkSettings, run_benchmark
from harness.data import load_interactions, make_split
from harness.execution import ExecutorSettings, WorkerLost, make_executor
from harness.execution.submitit_backend import split_cache_path
from harness.sweep import SweepSettings, run_sweep

pytestmark = pytest.mark.slow
MODEL = {"name": "mult_vae", "intermediate_dim": 16, "latent_dim": 6, "n_epochs": 3,
         "batch_size": 50, "k": 20}  # fmt: skip
SPACE = {"learning_rate": "tag(log, interval(1e-4, 1e-2))", "anneal_cap": "interval(0.1, 1.0)"}
DEADLINE = 600.0


@pytest.fixture(scope="module")
def split():
    frame = load_interactions("synthetic", n_users=240, n_items=100, density=0.06, seed=5)
    return make_split(frame, n_val_users=40, n_test_users=40)


def _sweep(split, results: Path, executor) -> optuna.Study:
    # 4 trials, 3 in flight: trial 3 is asked once trial 0 is told, TPE-sampled and pruned
    # against the history shipped to its job
    settings = SweepSettings(n_trials=4, quiet=True, n_startup_trials=2, n_warmup_epochs=1,
                             pruner="successive_halving", batch_size=3, n_workers=2)  # fmt: skip
    return run_sweep(split=split, dataset_name="synthetic", model_name="mult_vae",
                     model_params=MODEL, search_space=SPACE, settings=settings,
                     results_dir=results, executor=executor)  # fmt: skip


def _record(study: optuna.Study) -> list[tuple]:
    return [(t.number, t.state, t.value, t.params, t.intermediate_values) for t in study.trials]


def test_a_sweep_on_submitit_local_equals_the_local_pool(split, tmp_path) -> None:
    folder = tmp_path / "jobs"
    with make_executor(ExecutorSettings(backend="submitit_local", n_workers=2,
                                        folder=str(folder)), split) as executor:  # fmt: skip
        remote = _record(_sweep(split, tmp_path / "remote", executor))
        cache = split_cache_path(folder, split.fingerprint)
        assert cache.is_file()  # the jobs' data: the split cache, by fingerprint
        pickles = list((folder / "jobs").rglob("*_submitted.pkl"))
        assert pickles and max(p.stat().st_size for p in pickles) < cache.stat().st_size
    with make_executor(ExecutorSettings(n_workers=2), split) as executor:
        local = _record(_sweep(split, tmp_path / "local", executor))
    assert remote == local


def test_a_killed_job_is_lost_not_failed(split, tmp_path) -> None:
    with make_executor(ExecutorSettings(backend="submitit_local", n_workers=1,
                                        folder=str(tmp_path / "jobs")), split) as executor:  # fmt: skip
        future = executor.submit(time.sleep, 3600)
        (pid,) = executor.job_ids().values()  # a local job's id is its process id
        os.kill(int(pid), signal.SIGKILL)
        with pytest.raises(WorkerLost, match="ended without a result"):
            future.result(timeout=DEADLINE)


def test_a_benchmark_on_submitit_local_equals_the_serial_one(tmp_path) -> None:
    frame = load_interactions("synthetic", n_users=300, n_items=200, density=0.05, seed=5)
    split = make_split(frame, n_val_users=40, n_test_users=40)  # coverage@100 needs 100 items
    study = run_sweep(split=split, dataset_name="synthetic", model_name="mult_vae",
                      model_params=MODEL, search_space=SPACE,
                      settings=SweepSettings(n_trials=2, quiet=True, pruner="none"),
                      results_dir=tmp_path)  # fmt: skip
    settings = BenchmarkSettings(name="b", models=("mult_vae", "popularity"), n_seeds=2,
                                 n_candidates=1, liang=False, ks=(10, 20), n_resamples=200,
                                 test_metric="ndcg@20",
                                 baseline="popularity")  # fmt: skip
    common = {"split": split, "dataset_name": "synthetic", "settings": settings,
              "studies": {"mult_vae": study, "popularity": None},
              "model_params": {"mult_vae": MODEL, "popularity": {}}}  # fmt: skip
    with make_executor(ExecutorSettings(backend="submitit_local", n_workers=2,
                                        folder=str(tmp_path / "jobs")), split) as executor:  # fmt: skip
        remote = run_benchmark(**common, results_dir=tmp_path / "remote", executor=executor)
    serial = run_benchmark(**common, results_dir=tmp_path / "serial")
    info = [json.loads((out / "benchmark.json").read_text()) for out in (remote, serial)]
    assert info[0]["models"] == info[1]["models"]
    assert (remote / "metrics.csv").read_bytes() == (serial / "metrics.csv").read_bytes()
    for name in ("mult_vae.npz",):
        a, b = np.load(next(remote.rglob(name))), np.load(next(serial.rglob(name)))
        for key in a.files:
            np.testing.assert_array_equal(a[key], b[key])
