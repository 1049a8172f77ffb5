"""What a sweep prints: one summary line per finished trial, the study header's text, the
progress bar that log lines don't tear, Optuna's own logging turned down, and a console
handler for library callers that configured no logging."""

from __future__ import annotations

import contextlib
import logging
import sys
import warnings
from collections.abc import Iterator
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState
from tqdm.auto import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

log = logging.getLogger("harness.sweep")


def summarize(study: optuna.Study, trial: FrozenTrial, *, k: int, worker_id: int | None) -> None:
    """One line per finished trial: number, state, best NDCG, epochs, time, params."""
    values = [v for v in trial.intermediate_values.values() if v == v]
    best = trial.value if trial.value is not None else (max(values) if values else float("nan"))
    attrs = trial.user_attrs
    params = ", ".join(f"{name}={short(value)}" for name, value in trial.params.items())
    prefix = f"[worker {worker_id}] " if worker_id is not None else ""
    line = (
        f"{prefix}trial {trial.number:>3} {trial.state.name:<8} ndcg@{k}={best:.4f} "
        f"epochs={attrs.get('epochs_run', '?')} {attrs.get('wall_seconds', 0.0):.1f}s  {params}"
    )
    if trial.state == TrialState.FAIL:
        line += f"  reason: {attrs.get('failure_reason', 'unknown')}"
    log.info(line)


def short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def budget_text(settings: Any) -> str:
    """`n_trials=.., timeout=..s, sampler=.., pruner=..` for the study's header line."""
    parts = [f"n_trials={settings.n_trials}"] if settings.n_trials is not None else []
    if settings.timeout is not None:
        parts.append(f"timeout={settings.timeout}s")
    return ", ".join(parts + [f"sampler={settings.sampler}", f"pruner={settings.pruner}"])


def progress(total: int | None, desc: str, show: bool) -> tuple[Any, Any]:
    """A trial progress bar and the context that routes console logging through it.

    The bar is drawn only when `show` and stderr is a terminal (tqdm's disable=None), so logs
    keep plain lines. Only the logger that owns the console handler (root under Hydra, else
    ours) may be redirected, or a propagated record would be printed twice.
    """
    bar = tqdm(total=total, desc=desc, unit="trial", disable=None if show else True)
    console = log if log.handlers else logging.getLogger()
    redirect = logging_redirect_tqdm(loggers=[console]) if show else contextlib.nullcontext()
    return bar, redirect


@contextlib.contextmanager
def quiet_optuna() -> Iterator[None]:
    """Optuna's INFO lines off (our summary replaces them), its experimental warnings too."""
    # A failed trial's traceback (an Optuna warning) still shows.
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(min(max(verbosity, optuna.logging.WARNING), optuna.logging.ERROR))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            yield
    finally:
        optuna.logging.set_verbosity(verbosity)


def ensure_logging() -> None:
    """Library callers without logging config would otherwise never see the trial summaries."""
    if not logging.getLogger().handlers and not log.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
        log.propagate = False  # no second copy should the caller configure logging later
    if log.getEffectiveLevel() > logging.INFO:
        log.setLevel(logging.INFO)
