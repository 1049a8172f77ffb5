"""`harness-sweep`: the Hydra entry point. Compose the config, run the study, report the best.

harness-sweep model=mult_vae dataset=ml-1m sweep.n_trials=50
harness-sweep search_space.beta='interval(0.05,0.5)' sweep.pruner=hyperband
harness-sweep sweep.models=[standard_vae,mult_vae,ease]
"""

from __future__ import annotations

import logging
import re
import sys

import hydra
import optuna
from omegaconf import DictConfig

from harness.configs import hydra_config_path
from harness.errors import guarded
from harness.outputs import scrub_hydra_output
from harness.sweep.config import sweep_from_config

log = logging.getLogger("harness.sweep")
_SPACE_ARG = re.compile(r"^(?P<key>[+~]?search_space\.[\w.\-]+)=(?P<value>.*\(.*)$", re.DOTALL)


# The checkout's conf/ as an absolute path (a relative one would make Hydra look for a `conf`
# Python package), or pkg://harness.conf in an installed wheel.
@hydra.main(version_base=None, config_path=hydra_config_path(), config_name="sweep")
def _main(cfg: DictConfig) -> float | None:
    scrub_hydra_output()  # Hydra saved .hydra/*.yaml already: mask a storage password there
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our per-trial line replaces Optuna's
    def work() -> optuna.Study:
        from harness.benchmark.locking import remove_stale_staging
        from harness.sweep.config import results_dir_of

        remove_stale_staging(results_dir_of(cfg))  # left by a crashed benchmark (a full disk)
        return sweep_from_config(cfg)

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


def quote_search_space_args(argv: list[str]) -> list[str]:
    """Quote sweep expressions given for `search_space.*` on the command line.

    The shell strips the quotes of `search_space.beta='interval(0.05,0.5)'`, and Hydra then
    reads a sweep that it refuses outside --multirun. Here the value is a string to be parsed
    later, so it is quoted for Hydra; already quoted values are left alone.
    """
    quoted = []
    for arg in argv:
        match = _SPACE_ARG.match(arg)
        value = match.group("value") if match else ""
        if not match or value[:1] in ("'", '"'):
            quoted.append(arg)
            continue
        if "'" not in value:
            value = f"'{value}'"
        elif '"' not in value:
            value = f'"{value}"'
        else:
            value = "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
        quoted.append(f"{match.group('key')}={value}")
    return quoted


def add_search_space_keys(argv: list[str]) -> list[str]:
    """`search_space.x=v` -> `++search_space.x=v`: add the key, or override it if present.

    A search space is free-form (any constructor argument may be searched), but Hydra refuses
    a key the model's file lacks ("Key 'beta' is not in struct") unless it is prefixed `+`.
    `++` adds or overrides, so users never need to know which keys a space file lists.
    """
    return [f"++{arg}" if arg.startswith("search_space.") and "=" in arg else arg for arg in argv]


def main() -> None:
    """Console entry point of `harness-sweep`."""
    from harness.configs import check_argv_or_exit

    check_argv_or_exit("harness-sweep")
    argv = add_search_space_keys(quote_search_space_args(sys.argv[1:]))
    sys.argv = [sys.argv[0], *argv]
    _main()
