"""`harness-sweep`: the Hydra entry point. Compose the config, run the study, report the best.

harness-sweep model=mult_vae dataset=ml-1m sweep.n_trials=50
harness-sweep search_space.beta='interval(0.05,0.5)' sweep.pruner=hyperband
harness-sweep 'models=[standard_vae,mult_vae,ease]'   (old spelling: sweep.models=[...])
"""

from __future__ import annotations

import logging
import sys

import hydra
import optuna
from omegaconf import DictConfig

from harness.configs import (  # noqa: F401  (re-exported: their old home)
    add_search_space_keys,
    hydra_config_path,
    quote_search_space_args,
)
from harness.errors import guarded
from harness.outputs import scrub_hydra_output
from harness.sweep.config import command_line_model_keys, sweep_from_config

log = logging.getLogger("harness.sweep")


def _task(cfg: DictConfig) -> float | None:
    scrub_hydra_output()  # Hydra saved .hydra/*.yaml already: mask a storage password there
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our per-trial line replaces Optuna's

    def work() -> optuna.Study:
        from harness.benchmark.locking import remove_stale_staging
        from harness.sweep.config import results_dir_of

        remove_stale_staging(results_dir_of(cfg))  # left by a crashed benchmark (a full disk)
        return sweep_from_config(cfg, overridden=command_line_model_keys(task_overrides()))

    study = guarded(
        "harness-sweep",
        work,
        resume_hint="rerun the same command to resume",
    )
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        log.warning("no trial completed in study %s", study.study_name)
        return None
    best = study.best_trial
    log.info("best trial %d: ndcg=%.4f params=%s", best.number, best.value, best.params)
    return best.value


def task_overrides() -> list[str]:
    """The command line's config overrides, as Hydra parsed them for this job."""
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task)


def models_spelling(argv: list[str]) -> list[str]:
    """`sweep.models=[a,b]` (the old spelling) -> `models=[a,b]`: both choose several models,
    each composed from conf/models/<name>.yaml, one study each with the same budget."""
    return [
        arg[arg.index("sweep.models=") + len("sweep.") :]
        if arg.lstrip("+").startswith("sweep.models=")
        else arg
        for arg in argv
    ]


def main() -> None:
    """Console entry point of `harness-sweep`."""
    from harness.argv_checks import check_argv_or_exit

    argv = add_search_space_keys(quote_search_space_args(models_spelling(sys.argv[1:])))
    config_path, argv = check_argv_or_exit("harness-sweep", argv)
    sys.argv = [sys.argv[0], *argv]
    # config_path: the checkout's conf/ as an absolute path (a relative one would make Hydra
    # look for a `conf` Python package), pkg://harness.conf in an installed wheel, or the
    # user's first config folder (harness.configs.user_dirs_first)
    hydra.main(version_base=None, config_path=config_path, config_name="sweep")(_task)()
