"""The benchmark's retraining on the worker pool gives exactly the serial results: the same
selection, facts, per-user test metrics, Liang betas, tables, test-scoring record and test
ledger, with two seeded models whose trainings and scorings share the pool without barriers.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from harness.benchmark import BenchmarkSettings, run_benchmark
from harness.benchmark import parallel as bench_parallel
from harness.benchmark.layout import load_studies
from harness.benchmark.ledger import TestLedger
from harness.data.protocol import make_split
from harness.data.synthetic import generate_synthetic
from harness.execution import ExecutorSettings, make_executor
from harness.sweep import SweepSettings, run_sweep, study_name_for

pytestmark = pytest.mark.slow
SEEDED = ("standard_vae", "mult_vae")
MODELS = (*SEEDED, "popularity")
PARAMS = {
    "mult_vae": {
        "n_epochs": 3,
        "intermediate_dim": 32,
        "latent_dim": 8,
        "batch_size": 50,
        "annealing": True,
        "anneal_cap": 0.2,
        "k": 100,
    },
    "standard_vae": {
        "n_epochs": 3,
        "intermediate_dim": 24,
        "latent_dim": 6,
        "batch_size": 50,
        "k": 100,
    },
    "popularity": {},
}
N_SEEDS, N_CANDIDATES = 2, 2


def _benchmark(split, studies, results: Path, name: str, executor=None) -> Path:
    settings = BenchmarkSettings(
        name=name,
        models=MODELS,
        n_seeds=N_SEEDS,
        n_candidates=N_CANDIDATES,
        ks=(10, 100),
    )
    return run_benchmark(
        split=split,
        dataset_name="synthetic",
        studies=studies,
        model_params=PARAMS,
        settings=settings,
        results_dir=results,
        executor=executor,
    )


def _ledger_lines(results: Path) -> list[tuple]:
    """The ledger's content without its times and file names."""
    keys = ("split_fingerprint", "config_hash", "model", "variant", "seed", "coverage")
    return [tuple(e[k] for k in keys) for e in TestLedger(results).entries()]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same benchmark on a 2-worker pool (every submission recorded) and serially."""
    tmp = tmp_path_factory.mktemp("bench")
    split = make_split(
        generate_synthetic(n_users=400, n_items=150, density=0.06, seed=0),
        n_val_users=50,
        n_test_users=50,
    )
    submitted: list[tuple[str, str]] = []  # (job function, model) in submission order
    maps: list[str] = []
    try:
        for model in SEEDED:
            run_sweep(
                split=split,
                dataset_name="synthetic",
                model_name=model,
                model_params=PARAMS[model],
                search_space={"learning_rate": "tag(log, interval(1e-4, 1e-2))"},
                # two trials: the N_CANDIDATES=2 candidates; in this process (the pool under
                # test is the benchmark's)
                settings=SweepSettings(n_trials=2, quiet=True, pruner="none", n_workers=1),
                results_dir=tmp,
            )
        names = {m: study_name_for("synthetic", split.fingerprint, m) for m in MODELS}
        studies = load_studies(
            f"sqlite:///{tmp / 'optuna.db'}", names, fixed=("popularity",), sweep_hint="x"
        )
        with (
            make_executor(ExecutorSettings(n_workers=2), split) as executor,
            pytest.MonkeyPatch.context() as patch,
        ):
            submit, run_all = executor.submit, bench_parallel.run_all

            def record_submit(func, *job):  # the real executor's submit, its calls recorded
                model = job[0] if func.__name__ == "_fit_in_worker" else Path(job[0]).name
                submitted.append((func.__name__, model.split("-")[0]))
                return submit(func, *job)

            def record_map(executor, func, jobs):
                maps.append(func.__name__)
                return run_all(executor, func, jobs)

            executor.submit = record_submit
            patch.setattr(bench_parallel, "run_all", record_map)
            before = len(executor.pool.memory)
            parallel = _benchmark(split, studies, tmp, "parallel", executor)
            jobs_run = len(executor.pool.memory) - before
    finally:
        pass
    # a results folder of its own: its test ledger must not hand it the pool run's scores
    serial = _benchmark(split, studies, tmp / "serial-results", "serial")
    return {
        "parallel": parallel,
        "serial": serial,
        "submitted": submitted,
        "maps": maps,
        "jobs_run": jobs_run,
    }


def test_benchmark_on_the_pool_equals_the_serial_benchmark(runs) -> None:
    parallel, serial = runs["parallel"], runs["serial"]
    info = [json.loads((out / "benchmark.json").read_text()) for out in (parallel, serial)]
    for key in ("test_scorings", "test_scored_once", "models"):
        assert info[0][key] == info[1][key], key
    # the scorer was told in model order: finals, then Liang's retrainings, model by model
    assert list(info[0]["test_scorings"]) == list(MODELS)
    for model in SEEDED:
        run = info[0]["models"][model]
        assert run["chosen_trial"] is not None
        assert len(run["beta"]["liang"]["optimal_beta"]) == N_SEEDS
    for table in ("metrics.csv", "tests.csv", "budget.csv"):
        assert (parallel / table).read_bytes() == (serial / table).read_bytes(), table
    files = sorted(p.relative_to(parallel) for p in parallel.rglob("*.npz"))
    assert {f.name for f in files} >= {f"{m}.npz" for m in MODELS}, "per-user arrays expected"
    for rel in files:
        a, b = np.load(parallel / rel), np.load(serial / rel)
        assert sorted(a.files) == sorted(b.files)
        for key in a.files:
            np.testing.assert_array_equal(a[key], b[key])
    lines = _ledger_lines(parallel.parent), _ledger_lines(serial.parent)
    assert lines[0] == lines[1]
    assert [(m, v) for _, _, m, v, _, _ in lines[0]] == [
        *[(m, v) for m in SEEDED for v in ["final"] * N_SEEDS + ["liang"] * N_SEEDS],
        ("popularity", "final"),
    ]


def test_pool_benchmark_runs_every_model_and_step_as_one_job_graph(runs) -> None:
    """Fails if the models or steps run one after another again (or scorings as 1-job maps)."""
    submitted = runs["submitted"]
    fits = [model for func, model in submitted if func == "_fit_in_worker"]
    scorings = [model for func, model in submitted if func == "_evaluate_in_worker"]
    # selection fits, test runs on fresh seeds, Liang probes and retrainings
    per_model = N_CANDIDATES * N_SEEDS + N_SEEDS + 2 * N_SEEDS
    assert sorted(fits) == sorted([*SEEDED] * per_model)
    # mult_vae's selection fits all went out before standard_vae's last (Liang) fit: the
    # second model did not wait for the first one's selection, probes and retrainings
    last_standard = max(i for i, model in enumerate(fits) if model == "standard_vae")
    first_mult = [i for i, model in enumerate(fits) if model == "mult_vae"][
        : N_CANDIDATES * N_SEEDS
    ]
    assert max(first_mult) < last_standard
    assert sorted(scorings) == sorted([*SEEDED] * 2 * N_SEEDS)  # finals + Liang, in workers
    assert runs["maps"] == []  # no batch waited for another: every job went to a free worker
    assert runs["jobs_run"] == len(submitted)  # every job ran once, none is left
