"""Benchmark result files: their layout under ``results/<name>/``, atomic writing, loading.

Kept free of TensorFlow so that the report can read results without importing the models.

Layout of ``results/<name>/``:
    benchmark.json   everything below plus run facts (seeds, budgets, chosen params, betas)
    metrics.csv      model, metric, mean, ci_low, ci_high, n_seeds, n_users, interval (95%
                     t-interval, test users x seeds crossed, variance components; stats.py)
    tests.csv        model, baseline, metric, n_users, mean_difference, ci_low, ci_high, se,
                     df, p_value, p_holm, p_equivalence, p_equivalence_holm, significant,
                     verdict, mdd, margin, test
    folds.csv        (pooled folds, protocol.folds) fold, model, split_fingerprint, n_users,
                     metric, mean, ci_low, ci_high, chosen_trial, benchmark/sweep seconds
    seeds.csv        one row per (model, seed): validation NDCG, best epoch, test metrics
    budget.csv       model, study, n_trials_budget, finished/complete/pruned/failed trials
    per_user/<model>.npz   per-user test metrics, arrays (n_seeds, n_test_users) + user ids
                     (+ each user's fold, pooled folds)
    models/<model>-seed<s>.keras, models/<model>.npz   final trained models (when
                     benchmark.save_models; listed per model in benchmark.json "saved_models";
                     read them with ``harness.models.load_model``)
"""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.errors import UserError
from harness.outputs import recover, replace_folder

BENCHMARK_JSON = "benchmark.json"
TABLES = ("metrics", "tests", "seeds", "budget")
OPTIONAL_TABLES = ("folds",)


class MissingInputError(UserError, RuntimeError):
    """A study, storage or result a stage needs does not exist; the message names the fix."""


@dataclass(frozen=True)
class BenchmarkResults:
    """A loaded benchmark: the JSON record plus its CSV tables as DataFrames.

    Attributes:
        path: the ``results/<name>`` folder.
        info: the parsed ``benchmark.json``.
        metrics: ``metrics.csv``.
        tests: ``tests.csv``.
        seeds: ``seeds.csv``.
        budget: ``budget.csv``.
        folds: ``folds.csv`` (None unless the benchmark pools cross-validation folds).
    """

    path: Path
    info: dict[str, Any]
    metrics: pd.DataFrame
    tests: pd.DataFrame
    seeds: pd.DataFrame
    budget: pd.DataFrame
    folds: pd.DataFrame | None = None

    def per_user(self, model: str) -> dict[str, np.ndarray]:
        """Per-user test metric arrays of one model (each shaped seeds x users)."""
        with np.load(self.path / "per_user" / f"{model}.npz") as data:
            return {key: data[key] for key in data.files}


def write_atomically(target: Path, fill: Callable[[Path], None], *, key: str = "name") -> Path:
    """Create or replace folder ``target`` crash-safely (see `harness.outputs.replace_folder`).

    Readers never see a half-written folder; an existing ``target`` is replaced only if the
    harness wrote it; ``target.name`` must be a plain name (check it before joining paths,
    with `harness.outputs.output_dir`, since ``Path("r") / ""`` is ``r`` itself).
    """
    return replace_folder(target.parent, target.name, fill, key=key)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def _clean_floats(value: Any) -> Any:
    # JSON has no NaN; null is what readers (and json.loads in other languages) accept
    if isinstance(value, float | np.floating):
        return None if not np.isfinite(value) else float(value)
    if isinstance(value, dict):
        return {str(k): _clean_floats(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean_floats(v) for v in value]
    return value


def write_results(
    target: Path,
    info: dict[str, Any],
    tables: dict[str, pd.DataFrame],
    per_user: dict[str, dict[str, np.ndarray]],
    folders: dict[str, Path] | None = None,
) -> Path:
    """Write one benchmark's files into ``target`` atomically (see module docstring).

    Args:
        target: ``results/<name>``.
        info: the JSON record.
        tables: DataFrames named as in ``TABLES``.
        per_user: model -> {metric or "test_users" -> array}.
        folders: name -> an existing folder moved into ``target`` under that name.

    Returns:
        ``target``.
    """

    def fill(folder: Path) -> None:
        text = json.dumps(_clean_floats(info), indent=2, default=_json_default, allow_nan=False)
        (folder / BENCHMARK_JSON).write_text(text + "\n")
        for name in (*TABLES, *OPTIONAL_TABLES):
            if name in tables:
                tables[name].to_csv(folder / f"{name}.csv", index=False)
        (folder / "per_user").mkdir()
        for model, arrays in per_user.items():
            np.savez_compressed(folder / "per_user" / f"{model}.npz", **arrays)
        for name, source in (folders or {}).items():
            shutil.move(str(source), str(folder / name))

    return write_atomically(target, fill, key="benchmark.name")


def load_results(path: Path, *, hint: str = "harness-benchmark") -> BenchmarkResults:
    """Load the benchmark in ``path`` (``results/<name>``).

    Args:
        path: the benchmark folder.
        hint: the command that creates it, quoted in the error.

    Raises:
        MissingInputError: the folder or one of its files does not exist.
    """
    with contextlib.suppress(OSError):  # a kill mid-replacement: put the folder back first
        recover(path.parent, path.name)
    missing = [
        f for f in (BENCHMARK_JSON, *(f"{t}.csv" for t in TABLES)) if not (path / f).exists()
    ]
    if missing:
        raise MissingInputError(
            f"no benchmark results in {path} (missing {', '.join(missing)}): "
            f"run `{hint}` first, or point results_dir/name at an existing benchmark"
        )
    info = json.loads((path / BENCHMARK_JSON).read_text())
    frames = {t: pd.read_csv(path / f"{t}.csv") for t in TABLES}
    frames.update(
        {t: pd.read_csv(path / f"{t}.csv") for t in OPTIONAL_TABLES if (path / f"{t}.csv").exists()}
    )
    return BenchmarkResults(path=path, info=info, **frames)


def _storage_missing(storage: str) -> Path | None:
    """The file behind a file-based storage URL when that file does not exist, else None.

    Checked before opening because opening a SQLite URL silently creates an empty database.
    """
    from harness.sweep.storage import check_sqlite_file, is_journal_url, journal_path, sqlite_path

    if storage.startswith("sqlite:///"):
        path = sqlite_path(storage)
        check_sqlite_file(path)
    elif is_journal_url(storage):
        path = journal_path(storage)
    else:
        return None
    return None if path.exists() else path


def load_studies(
    storage: str,
    study_names: dict[str, str],
    *,
    fixed: tuple[str, ...] = (),
    sweep_hint: str = "harness-sweep model={model}",
    usable: tuple[str, ...] = ("COMPLETE",),
) -> dict[str, Any]:
    """Load each model's study, or None for a model compared as a fixed configuration.

    Args:
        storage: Optuna storage URL.
        study_names: model -> study name, in display order.
        fixed: models that may lack a study (e.g. popularity: nothing to tune).
        sweep_hint: the command that creates a model's study, with ``{model}`` placeholder.
        usable: trial states of which a study must hold at least one: "COMPLETE" for the
            benchmark (it needs a configuration with a value); a report also draws PRUNED
            trials' curves, so a running sweep with one finished trial can be reported.

    Raises:
        MissingInputError: storage or study missing, or a study without complete trials;
            the message names it and the command that would create it.
    """
    from optuna.trial import TrialState

    from harness.sweep.study import StudyNotFoundError, load_study

    tuned = [m for m in study_names if m not in fixed]
    if tuned and (path := _storage_missing(storage)):
        raise MissingInputError(
            f"no study storage at {path} (for models {', '.join(tuned)}): run "
            f"`{sweep_hint.format(model=tuned[0])}` for each of them (or `harness-run`), or "
            "point sweep.storage at the storage the sweeps used"
        )
    studies: dict[str, Any] = {}
    for model, name in study_names.items():
        try:
            study = load_study(storage, name)
        except StudyNotFoundError as exc:
            if model in fixed:
                studies[model] = None
                continue
            raise MissingInputError(
                f"model {model!r} has no study {name!r}: run `{sweep_hint.format(model=model)}` "
                f"(or drop {model} from the comparison). {exc}"
            ) from None
        states = [t.state for t in study.get_trials(deepcopy=False)]
        if not any(TrialState[state] in states for state in usable):
            raise MissingInputError(
                f"study {name!r} of {model!r} has no {' or '.join(usable)} trial ({len(states)} trials: "
                f"{states.count(TrialState.RUNNING)} running, {states.count(TrialState.FAIL)} "
                f"failed, {states.count(TrialState.PRUNED)} pruned): run or resume it with "
                f"`{sweep_hint.format(model=model)}`"
            )
        studies[model] = study
    return studies
