"""The power preflight: before any sweep, the difference each planned comparison can detect.

A benchmark that cannot detect a difference as small as its equivalence margin can only say
"not distinguishable". This module predicts the minimum detectable difference (80% power,
Holm's strictest level) of every comparison against the baseline from:

- a **pilot**: the per-user test values of an earlier benchmark of the same models
  (``benchmark.power.pilot``: a results folder, or ``auto`` = ``results/<benchmark.name>``
  when it exists), from which the variance components (seed, user x seed, user x model)
  are estimated; or
- a **stated assumption** (``benchmark.power.seed_sd``, ``residual_sd``,
  ``user_model_sd``: standard deviations on the test metric's scale).

It is a warning, never an error: a prediction above the margin names the number of test
users that would bring it down to the margin (or says that more seeds are needed when the
seed variance alone is too large). The plan is saved beside the results
(``results/<benchmark.name>.power.json``) and stated in the report.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from harness.benchmark.stats import (
    StatsConfigError,
    StatsSettings,
    VarianceComponents,
    detectable_difference,
    users_needed,
)

POWER_KEYS = ("pilot", "seed_sd", "residual_sd", "user_model_sd")


@dataclass(frozen=True)
class PlannedComparison:
    """One planned comparison: what it is expected to detect.

    Attributes:
        model, baseline: the pair compared on the test metric.
        n_users: planned test users (all folds together).
        n_folds: folds the users are spread over (1 = one test set).
        mdd: predicted minimum detectable difference.
        users_needed: test users for an mdd at the margin (None: more users alone do not
            suffice, the seed variance dominates).
        source: "pilot <folder>" or "stated assumption".
    """

    model: str
    baseline: str
    n_users: int
    n_folds: int
    mdd: float
    users_needed: int | None
    source: str


def stated_components(power: Mapping[str, Any]) -> VarianceComponents:
    """Variance components from `benchmark.power`'s stated standard deviations.

    Raises:
        StatsConfigError: a missing or negative value (names the key).
    """
    values = {}
    for key in ("seed_sd", "residual_sd", "user_model_sd"):
        value = power.get(key)
        if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
            raise StatsConfigError(
                f"benchmark.power.{key}={value!r} must be a number >= 0 (a standard deviation "
                "of the test metric), e.g. 0.005"
            )
        values[key] = float(value) ** 2
    return VarianceComponents(
        seed=values["seed_sd"], residual=values["residual_sd"], user_model=values["user_model_sd"]
    )


def pilot_components(
    folder: Path, models: Sequence[str], baseline: str, metric: str, stochastic: Callable
) -> dict[str, VarianceComponents] | None:
    """Per model, the components of its comparison with the baseline, from an earlier
    benchmark's per-user arrays (None when the folder lacks the baseline's)."""
    base_file = folder / "per_user" / f"{baseline}.npz"
    if not base_file.exists():
        return None
    with np.load(base_file) as data:
        base = data[metric]
        folds = data["folds"] if "folds" in data.files else None
    out = {}
    for model in models:
        path = folder / "per_user" / f"{model}.npz"
        if model == baseline or not path.exists():
            continue
        with np.load(path) as data:
            values = data[metric]
        out[model] = VarianceComponents.estimate(
            values,
            base,
            model_stochastic=stochastic(model) and values.shape[0] > 1,
            baseline_stochastic=stochastic(baseline) and base.shape[0] > 1,
            folds=folds,
        )
    return out


def plan(
    *,
    models: Sequence[str],
    baseline: str,
    metric: str,
    n_users: int,
    n_folds: int,
    n_seeds: int,
    stats: StatsSettings,
    power: Mapping[str, Any],
    stochastic: Callable[[str], bool],
    pilot: Path | None,
) -> list[PlannedComparison]:
    """The detectable difference of every model against ``baseline``.

    Args:
        models: the compared models (baseline included).
        n_users: test users of the run (every fold's together).
        n_folds: folds they are spread over.
        n_seeds: benchmark.n_seeds.
        stats: level, margin.
        power: `benchmark.power` (the stated assumption; pilot path).
        stochastic: model -> whether its results depend on the seed.
        pilot: an earlier benchmark folder to estimate the components from, or None.
    """
    others = [m for m in models if m != baseline]
    from_pilot = (
        pilot_components(pilot, models, baseline, metric, stochastic) if pilot else None
    ) or {}
    stated = None
    out = []
    for model in others:
        comps = from_pilot.get(model)
        source = f"pilot {pilot}" if comps is not None else "stated assumption"
        if comps is None:
            stated = stated or stated_components(power)
            comps = stated
        kwargs = dict(
            n_seeds_model=n_seeds if stochastic(model) else 1,
            n_seeds_baseline=n_seeds if stochastic(baseline) else 1,
            alpha=stats.alpha,
            n_comparisons=len(others),
            model_stochastic=stochastic(model),
            baseline_stochastic=stochastic(baseline),
            n_folds=n_folds,
        )
        mdd = float(detectable_difference(comps, n_users=n_users, **kwargs))
        needed = users_needed(comps, margin=stats.margin, **kwargs) if stats.margin > 0 else None
        out.append(PlannedComparison(model, baseline, n_users, n_folds, mdd, needed, source))
    return out


def messages(planned: Sequence[PlannedComparison], margin: float, metric: str) -> list[str]:
    """One line per comparison; the ones above the margin are warnings with the users
    needed (not errors: the run may still find a large difference)."""
    lines = []
    for p in planned:
        where = f"{p.n_users} test users" + (f" over {p.n_folds} folds" if p.n_folds > 1 else "")
        line = (
            f"power preflight: {p.model} vs {p.baseline} on {metric} with {where} can detect "
            f"±{p.mdd:.4f} (80% power; {p.source})"
        )
        if margin > 0 and math.isfinite(p.mdd) and p.mdd > margin:
            more = (
                f"about {p.users_needed:,} test users would detect ±{margin:g}"
                if p.users_needed
                else "more seeds (benchmark.n_seeds), not more users, are needed"
            )
            line = (
                f"WARNING {line}: above the ±{margin:g} margin, so this comparison can end "
                f"'not distinguishable'; {more} (e.g. protocol.folds=5 makes every user a "
                "test user)"
            )
        lines.append(line)
    return lines


def save(path: Path, planned: Sequence[PlannedComparison], margin: float, metric: str) -> None:
    """Write the plan as JSON (atomically) for the report."""
    from harness.outputs import write_text

    record = {"metric": metric, "margin": margin, "comparisons": [asdict(p) for p in planned]}
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, json.dumps(record, indent=2) + "\n")


def load(path: Path) -> dict[str, Any] | None:
    """The saved plan, or None."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
