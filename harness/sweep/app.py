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

from harness.errors import guarded
from harness.secrets import scrub_hydra_output
from harness.sweep.config import CONF_DIR, sweep_from_config

log = logging.getLogger("harness.sweep")
_SPACE_ARG = re.compile(r"^(?P<key>[+~]?search_space\.[\w.\-]+)=(?P<value>.*\(.*)$", re.DOTALL)


# An absolute path: a relative one would make Hydra look for a `conf` Python package, which
# only resolves when the command runs from the repository root.
@hydra.main(version_base=None, config_path=str(CONF_DIR), config_name="sweep")
def _main(cfg: DictConfig) -> float | None:
    scrub_hydra_output()  # Hydra saved .hydra/*.yaml already: mask a storage password there
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our per-trial line replaces Optuna's
    study = guarded(
        "harness-sweep",
        lambda: sweep_from_config(cfg),
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


def main() -> None:
    """Console entry point of `harness-sweep`."""
    sys.argv = [sys.argv[0], *quote_search_space_args(sys.argv[1:])]
    _main()
