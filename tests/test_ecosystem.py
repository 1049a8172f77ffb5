"""Packaging paths, device selection, tracking (real MLflow SQLite store, real TensorBoard event
files), and CLI polish: help text, search-space keys, warnings, figure titles."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from small_data import SMALL_SYNTHETIC

from harness.configs import (
    ConfigDirError,
    check_user_config_dirs,
    conf_dir,
    hydra_config_path,
    user_config_dirs,
)
from harness.devices import (
    DeviceConfigError,
    check_gpus,
    gpu_for_worker,
    n_workers_for,
    parse_gpus,
    worker_device_env,
)
from harness.sweep import SweepConfigError, SweepSettings, run_sweep
from harness.sweep.app import add_search_space_keys, quote_search_space_args
from harness.sweep.effects import ineffective_params
from harness.tracking import TrackingConfigError, TrackingSettings, check_tracking

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
GPUS = ["/physical_device:GPU:0", "/physical_device:GPU:1"]


# --- packaging paths ---------------------------------------------------------------------


def test_a_checkout_reads_the_repository_conf_folder():
    assert conf_dir() == ROOT / "conf"
    assert hydra_config_path() == str(ROOT / "conf")
    assert (ROOT / "harness" / "py.typed").is_file()


def test_user_config_folders_are_found_in_every_spelling(tmp_path):
    argv = [
        "--config-dir",
        "/a",
        "-cd",
        "/b",
        "--config-dir=/c",
        "hydra.searchpath=[file:///d,pkg://x.y,'file:///e']",
        "dataset=mine",
    ]
    assert [p for _, p in user_config_dirs(argv)] == ["/a", "/b", "/c", "/d", "/e"]
    check_user_config_dirs(["--config-dir", str(tmp_path)])  # exists: no error
    with pytest.raises(ConfigDirError, match=r"config folder '/no/such/dir' does not exist"):
        check_user_config_dirs(["hydra.searchpath=[file:///no/such/dir]"])


@pytest.mark.slow  # subprocesses or training: tens of seconds on 2 cores
def test_a_missing_config_dir_is_one_clear_error_from_the_command(tmp_path):
    missing = tmp_path / "my_conf"
    done = subprocess.run(
        [str(BIN / "harness-run"), "--config-dir", str(missing), "dataset=my_data"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert done.returncode == 2
    assert f"config folder '{missing}' does not exist" in done.stderr
    assert "Traceback" not in done.stderr


# --- devices -----------------------------------------------------------------------------


def test_gpu_settings_parse_and_bad_entries_are_refused():
    assert parse_gpus(None) is None and parse_gpus([]) is None
    assert parse_gpus([0, 1]) == (0, 1) and parse_gpus("1,0") == (1, 0) and parse_gpus(2) == (2,)
    for bad in (["a"], [-1], [0, 0], [True]):
        with pytest.raises(DeviceConfigError):
            parse_gpus(bad)
    assert SweepSettings(gpus=[0, 1]).gpus == (0, 1)
    with pytest.raises(SweepConfigError, match="sweep.gpus"):
        SweepSettings(gpus=["x"])


def test_a_gpu_that_is_not_visible_is_named_with_the_visible_list():
    check_gpus([0, 1], GPUS)
    check_gpus(None, [])
    with pytest.raises(DeviceConfigError) as error:
        check_gpus([0, 2], GPUS)
    assert "GPU 2 is not visible" in str(error.value)
    assert "0: /physical_device:GPU:0, 1: /physical_device:GPU:1" in str(error.value)
    with pytest.raises(DeviceConfigError, match="visible GPUs: none.*CPU"):
        check_gpus([0], [])


def test_workers_are_pinned_round_robin(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert [gpu_for_worker(i, (0, 1)) for i in range(4)] == [0, 1, 0, 1]
    assert gpu_for_worker(None, (3, 1)) == 3 and gpu_for_worker(2, None) is None
    assert worker_device_env(1, (2, 3)) == {"CUDA_VISIBLE_DEVICES": "3"}
    assert worker_device_env(0, None) == {}
    # indices are the parent's visible devices: with CUDA_VISIBLE_DEVICES=4,6 index 1 is GPU 6
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,6")
    assert worker_device_env(3, (0, 1)) == {"CUDA_VISIBLE_DEVICES": "6"}
    assert n_workers_for(GPUS) == 2 and n_workers_for([]) == 1 and n_workers_for(GPUS, (1,)) == 1


def test_the_manifest_records_the_training_device():
    from harness.devices import configure_tensorflow
    from harness.report import collect_manifest

    described = configure_tensorflow()  # CI has no GPU: the CPU
    manifest = collect_manifest(config={}, split_fingerprint="x", stage_seconds={})
    assert manifest["device"] == described
    assert described.startswith(("CPU", "GPU"))


@pytest.mark.slow  # subprocesses or training: tens of seconds on 2 cores
def test_tensorflow_start_up_lines_are_silenced_unless_asked(tmp_path):
    code = "from harness.devices import import_tensorflow; import_tensorflow(); print('ready')"
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL",)}
    env["PYTHONPATH"] = str(ROOT)
    quiet = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert quiet.returncode == 0 and quiet.stdout.strip() == "ready"
    assert quiet.stderr.strip() == "", quiet.stderr
    loud = subprocess.run(
        [sys.executable, "-c", code],
        env={**env, "VAE_SWEEP_TF_LOGS": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert loud.returncode == 0
    # oneDNN's notice or the absl pre-init line: TensorFlow does print something when asked
    assert loud.stderr.strip() != ""


# --- CLI polish --------------------------------------------------------------------------


@pytest.mark.slow  # five commands started
@pytest.mark.parametrize(
    ("command", "first"),
    [
        ("harness-run", "harness-run: sweep every model"),
        ("harness-sweep", "harness-sweep: run (or resume) an Optuna study"),
        ("harness-benchmark", "harness-benchmark: retrain the best configurations"),
        ("harness-report", "harness-report: draw reports/"),
        ("harness-split", "harness-split: build (or load from the cache)"),
    ],
)
def test_help_starts_with_what_the_command_does(command, first):
    done = subprocess.run(
        [str(BIN / command), "--help"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(first)
    assert "Most used overrides" in done.stdout and "-sc install=bash" in done.stdout


def test_search_space_overrides_may_add_keys():
    argv = quote_search_space_args(["model=mult_vae", "search_space.beta=interval(0.05,0.5)"])
    assert add_search_space_keys(argv) == [
        "model=mult_vae",
        "++search_space.beta='interval(0.05,0.5)'",
    ]
    assert add_search_space_keys(["+search_space.x=1", "~search_space.y"]) == [
        "+search_space.x=1",
        "~search_space.y",
    ]


def test_parameters_the_configuration_ignores_are_found():
    assert ineffective_params({"annealing": True}, ["beta", "lr"]) == [
        "search_space.beta has no effect with model.annealing=true (the model ignores beta); "
        "search anneal_cap instead, or set model.annealing=false to train with a constant beta."
    ]
    assert "anneal_cap" in ineffective_params({"annealing": False}, ["anneal_cap"])[0]
    assert ineffective_params({"annealing": True}, ["anneal_cap", "annealing", "beta"]) == []
    assert ineffective_params({}, ["beta"]) == []


def test_importance_figure_has_one_title():
    from harness.report.figures import importances_figure

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(0))
    study.optimize(
        lambda t: t.suggest_float("a", 0, 1) + 0.1 * t.suggest_float("b", 0, 1), n_trials=8
    )
    fig = importances_figure(study, "mult_vae: importances")
    ax = fig.axes[0]
    titles = [ax.get_title(loc) for loc in ("left", "center", "right")]
    assert titles == ["", "mult_vae: importances", ""]


# --- tracking ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def split():
    from harness.data import load_interactions, make_split

    frame = load_interactions("synthetic", n_users=300, n_items=150, density=0.05, seed=1)
    return make_split(frame, n_val_users=50, n_test_users=50)


MODEL = {
    "name": "mult_vae",
    "intermediate_dim": 16,
    "latent_dim": 8,
    "n_epochs": 3,
    "batch_size": 50,
    "k": 100,
    "annealing": True,
}


def test_tracking_settings_and_bad_uris_fail_before_the_sweep(tmp_path):
    assert not TrackingSettings.from_mapping(None).enabled
    settings = TrackingSettings.from_mapping(
        {"mlflow": {"uri": "sqlite:///x.db", "required": False}, "tensorboard": {"dir": "tb"}}
    )
    assert settings.mlflow_uri == "sqlite:///x.db" and settings.tensorboard_dir == "tb"
    with pytest.raises(TrackingConfigError, match="tracking.mlflow.url"):
        TrackingSettings.from_mapping({"mlflow": {"url": "x"}})
    bad = TrackingSettings(mlflow_uri="nosuchscheme://host/x")
    with pytest.raises(TrackingConfigError, match="cannot reach the MLflow tracking store"):
        check_tracking(bad)
    assert isinstance(TrackingConfigError("x"), SweepConfigError)  # the CLIs exit 2 on it
    # required=false: a warning, and the run goes on without MLflow
    soft = TrackingSettings(mlflow_uri="http://127.0.0.1:9", mlflow_required=False)
    assert check_tracking(soft).mlflow_uri is None


def test_mlflow_logs_every_trial_with_epochs_tags_and_the_benchmark(split, tmp_path, caplog):
    from mlflow.tracking import MlflowClient

    from harness.sweep.config import tracking_callbacks

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    callbacks = tracking_callbacks(
        {"tracking": {"mlflow": {"uri": uri}, "tensorboard": {"dir": str(tmp_path / "tb")}}}
    )
    with caplog.at_level(logging.WARNING, logger="harness.sweep"):
        study = run_sweep(
            split=split,
            dataset_name="synthetic",
            model_name="mult_vae",
            model_params=MODEL,
            search_space={"learning_rate": "tag(log, interval(1e-4, 1e-2))", "beta": "0.5"},
            settings=SweepSettings(n_trials=2, pruner="none", quiet=True, n_startup_trials=1),
            results_dir=tmp_path / "results",
            callbacks=callbacks,
        )
    assert study.metric_names == ["ndcg@100"]

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(study.study_name)
    runs = client.search_runs([experiment.experiment_id])
    runs = sorted(runs, key=lambda r: int(r.data.tags["number"]))
    assert len(runs) == 2
    for run, trial in zip(runs, study.trials, strict=True):
        assert run.data.metrics["ndcg_at_100"] == pytest.approx(trial.value)
        assert float(run.data.params["learning_rate"]) == pytest.approx(
            trial.params["learning_rate"]
        )
        assert run.data.params["intermediate_dim"] == "16"  # fixed params too
        tags = run.data.tags
        assert tags["study"] == study.study_name and tags["model"] == "mult_vae"
        assert tags["split_fingerprint"] == split.fingerprint and tags["state"] == "COMPLETE"
        assert run.info.status == "FINISHED"
        history = client.get_metric_history(run.info.run_id, "val_ndcg_at_100")
        logged = [m.value for m in sorted(history, key=lambda m: m.step)]
        assert [m.step for m in sorted(history, key=lambda m: m.step)] == [1, 2, 3]
        assert logged == pytest.approx(trial.user_attrs["ndcg_per_epoch"])
        betas = client.get_metric_history(run.info.run_id, "beta")
        assert [b.value for b in sorted(betas, key=lambda m: m.step)] == pytest.approx(
            trial.user_attrs["beta_per_epoch"]
        )
        assert len(client.get_metric_history(run.info.run_id, "loss")) == 3
        assert client.get_metric_history(run.info.run_id, "lr") == []  # TensorBoard only

    # TensorBoard: one event file per trial holding the per-epoch scalars
    import tensorflow as tf

    events = sorted((tmp_path / "tb" / study.study_name).glob("trial_*/events.*"))
    assert len(events) == 2
    values = {}
    for record in tf.compat.v1.train.summary_iterator(str(events[0])):
        for value in record.summary.value:
            if value.metadata.plugin_data.plugin_name == "scalars":
                point = (record.step, float(tf.make_ndarray(value.tensor)))
                values.setdefault(value.tag, []).append(point)
    assert [v for _, v in sorted(values["val_ndcg@100"])] == pytest.approx(
        study.trials[0].user_attrs["ndcg_per_epoch"]
    )
    assert {"loss", "val_loss", "lr", "beta", "best_val_ndcg@100"} <= set(values)

    # the benchmark's test table as one more run
    from harness.tracking import log_benchmark

    bench = tmp_path / "bench"
    bench.mkdir()
    (bench / "benchmark.json").write_text('{"name": "b", "dataset": "synthetic", "n_seeds": 2}')
    (bench / "metrics.csv").write_text(
        "model,metric,mean,ci_low,ci_high,n_seeds\nmult_vae,ndcg@100,0.4,0.38,0.42,2\n"
    )
    run_id = log_benchmark(TrackingSettings(mlflow_uri=uri), bench)
    run = client.get_run(run_id)
    assert run.data.metrics["mult_vae/ndcg_at_100"] == pytest.approx(0.4)
    assert run.data.metrics["mult_vae/ndcg_at_100/ci_high"] == pytest.approx(0.42)
    assert run.data.tags["stage"] == "benchmark"
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert {"metrics.csv", "benchmark.json"} <= artifacts
    # artifacts of a SQLite store live beside its file, not in ./mlruns of whatever folder
    assert (tmp_path / "mlartifacts").is_dir() and not Path("mlruns").exists()


def test_a_failing_tracker_warns_and_the_sweep_goes_on(split, tmp_path, caplog):
    from harness.tracking.factory import Guarded

    def broken(study, trial):
        raise ConnectionError("server gone")

    with caplog.at_level(logging.WARNING, logger="harness.tracking"):
        study = run_sweep(
            split=split,
            dataset_name="synthetic",
            model_name="popularity",
            model_params={"name": "popularity"},
            search_space={},
            settings=SweepSettings(n_trials=2, pruner="none", quiet=True),
            results_dir=tmp_path,
            callbacks=[Guarded(broken)],
        )
    assert len(study.trials) == 2
    assert caplog.text.count("failed for trial") == 2 and "server gone" in caplog.text


def test_searched_beta_with_annealing_warns_in_the_sweep(split, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="harness.sweep"):
        run_sweep(
            split=split,
            dataset_name="synthetic",
            model_name="mult_vae",
            model_params={**MODEL, "n_epochs": 1},
            search_space={"beta": "interval(0.05, 0.5)"},
            settings=SweepSettings(n_trials=1, pruner="none", quiet=True),
            results_dir=tmp_path,
        )
    assert "search_space.beta has no effect with model.annealing=true" in caplog.text


# --- commands: bad input and plain output off a terminal ----------------------------------


SMALL = SMALL_SYNTHETIC  # the default synthetic set takes longer to generate and split


def _command(tmp_path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "VAE_SWEEP_DATA_DIR": str(tmp_path / "data"), "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [str(BIN / args[0]), *args[1:], f"results_dir={tmp_path / 'results'}"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.slow  # subprocesses or training: tens of seconds on 2 cores
def test_bad_gpu_and_tracking_settings_stop_the_command_before_any_trial(tmp_path):
    done = _command(tmp_path, "harness-sweep", *SMALL, "sweep.gpus=[7]")
    assert done.returncode == 2, done.stderr[-2000:]
    assert "sweep.gpus: GPU 7 is not visible; visible GPUs:" in done.stderr
    done = _command(tmp_path, "harness-sweep", *SMALL, "tracking.mlflow.uri=nosuch://x")
    assert done.returncode == 2, done.stderr[-2000:]
    assert "tracking.mlflow.uri=nosuch://x: cannot reach the MLflow tracking store" in done.stderr
    storage = f"sqlite:///{tmp_path / 'results' / 'optuna.db'}"  # opened by the checks
    assert optuna.get_all_study_names(storage) == []  # no study was started


@pytest.mark.slow  # subprocesses or training: tens of seconds on 2 cores
def test_progress_bars_give_way_to_plain_lines_off_a_terminal(tmp_path):
    done = _command(tmp_path, "harness-sweep", *SMALL, "model=popularity", "sweep.n_trials=2")
    assert done.returncode == 0, done.stderr[-2000:]
    output = done.stdout + done.stderr
    assert "\r" not in output and "trial/s" not in output and "it/s" not in output
    assert output.count("COMPLETE ndcg@100=") == 2  # one plain line per trial


@pytest.mark.slow  # subprocesses or training: tens of seconds on 2 cores
def test_the_benchmark_progress_counts_every_retraining(split, tmp_path, monkeypatch):
    """The progress lines' total (planned_runs) is the number of retrainings, and every one
    ticks it: on an executor (the VAEs' job graph) and in this process (a SerialExecutor)."""
    from harness.benchmark import BenchmarkSettings, core, run_benchmark
    from harness.execution import ExecutorSettings, make_executor
    from harness.execution.progress import JobProgress

    study = run_sweep(
        split=split,
        dataset_name="synthetic",
        model_name="mult_vae",
        model_params={**MODEL, "n_epochs": 1},
        search_space={"learning_rate": "tag(log, interval(1e-4, 1e-2))"},
        settings=SweepSettings(n_trials=2, pruner="none", quiet=True),
        results_dir=tmp_path,
    )
    bars: list[dict] = []

    class Progress(JobProgress):  # records what run_benchmark tells its progress lines
        def __init__(self, total, title, **kwargs):
            super().__init__(total, title, **kwargs)
            bars.append({"total": total, "ticks": 0})

        def tick(self, label="", n=1):
            super().tick(label, n)
            bars[-1]["ticks"] += n

    monkeypatch.setattr(core, "JobProgress", Progress)
    studies = {"mult_vae": study, "popularity": None}
    params = {"mult_vae": {**MODEL, "n_epochs": 1}, "popularity": {}}
    settings = BenchmarkSettings(
        name="b", models=("mult_vae", "popularity"), n_seeds=2, n_candidates=2, liang_seeds=1
    )
    planned = core.planned_runs(studies, params, settings)
    # candidates x seeds + test runs on fresh seeds + Liang's pair + popularity once
    assert planned == 2 * 2 + 2 + 2 * 1 + 1
    with make_executor(ExecutorSettings(n_workers=2), split) as executor:
        for where in (executor, None):  # the job graph on the workers, then in this process
            run_benchmark(split=split, dataset_name="synthetic", studies=studies,
                          model_params=params, settings=settings, results_dir=tmp_path,
                          executor=where)  # fmt: skip
    assert bars == [{"total": planned, "ticks": planned}] * 2
