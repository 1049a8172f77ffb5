"""Bounded failure: a sweep stops after `sweep.max_failed_trials` failed trials.

Failed trials (diverged loss, no finite NDCG) do not count toward `sweep.n_trials`, so a
search space where every trial fails would otherwise run forever. Trials failed by Ctrl-C or
by a dead worker (no `failure_reason`, or the interrupted one) are not counted: they say
nothing about the search space and are re-run.
"""

from __future__ import annotations

from typing import Any

import optuna
from optuna.trial import TrialState

from harness.sweep.objective import INTERRUPTED, LOST, STOPPED
from harness.sweep.settings import SweepConfigError


class TooManyFailedTrialsError(SweepConfigError):
    """The study holds `sweep.max_failed_trials` failed trials; the message says what to change."""


def failed_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """Trials that failed on their own (a recorded failure reason other than Ctrl-C, a lost
    or dead worker or a full disk)."""
    return [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
        if t.user_attrs.get("failure_reason") not in (None, INTERRUPTED)
        and not str(t.user_attrs["failure_reason"]).startswith((LOST, STOPPED, "worker died"))
    ]


def failure_limit_reached(study: optuna.Study, settings: Any) -> bool:
    """True when the study holds at least `settings.failure_limit` failed trials."""
    return len(failed_trials(study)) >= settings.failure_limit


def check_failures(study: optuna.Study, settings: Any) -> None:
    """Raise when the failure limit is reached (call after the trials ran and were exported).

    Raises:
        TooManyFailedTrialsError: Naming the count, the limit, the last reason and the fixes.
    """
    failed = failed_trials(study)
    if len(failed) < settings.failure_limit:
        return
    last = failed[-1].user_attrs.get("failure_reason", "unknown")
    raise TooManyFailedTrialsError(
        f"study {study.study_name!r} stopped: {len(failed)} trials failed (limit "
        f"sweep.max_failed_trials={settings.failure_limit}); last reason: {last}. Narrow the "
        "search space (e.g. a lower learning_rate range) or raise sweep.max_failed_trials; "
        "the failed trials are listed in the exported trials.csv and the report's budget table."
    )
