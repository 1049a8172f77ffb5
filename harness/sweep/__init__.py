"""Optuna sweeps over VAE recommenders, configured by Hydra.

Public API:

- `run_sweep(*, split, dataset_name, model_name, model_params, search_space, settings,
  results_dir, config=None) -> optuna.Study`: one model's study, resumable.
- `sweep_from_config(cfg) -> optuna.Study` and `run_many(cfg_dict, model_names)`: the same from
  a composed `sweep` config (used by `harness-sweep`); `harness.sweep.config.sweep_models` runs
  the models of typed settings (used by `harness-run`).
- `SweepSettings`, `default_storage(results_dir)`, `load_study(storage, study_name)`,
  `export_study(study, out_dir)`, `parse_search_space(space, model_name=...)`.
"""

from harness.sweep.config import model_config, run_many, sweep_from_config
from harness.sweep.export import best_params, epochs_frame, export_study, trials_frame
from harness.sweep.objective import TrialFailedError, objective
from harness.sweep.runner import run_sweep
from harness.sweep.settings import SweepConfigError, SweepSettings
from harness.sweep.space import SearchSpace, parse_search_space
from harness.sweep.storage import default_storage, open_storage
from harness.sweep.study import StudyNotFoundError, load_study, study_name_for

__all__ = [
    "SearchSpace",
    "StudyNotFoundError",
    "SweepConfigError",
    "SweepSettings",
    "TrialFailedError",
    "best_params",
    "default_storage",
    "epochs_frame",
    "export_study",
    "load_study",
    "model_config",
    "objective",
    "open_storage",
    "parse_search_space",
    "run_many",
    "run_sweep",
    "study_name_for",
    "sweep_from_config",
    "trials_frame",
]
