"""Statistics for comparing models over test users and training seeds.

The benchmark's numbers come from per-user test values of shape (n_seeds, n_users): every
training seed of a model scored the same test users, so users and seeds are **crossed**.
For one stochastic model, a two-way random-effects model describes the values,

    Y[s, u] = mu + a_u + b_s + e_su,

with a user effect a_u (variance sigma_a^2, shared by the models: the pairing), a training-run
effect b_s (sigma_b^2, independent per model: models do not share runs) and a user x seed
interaction e_su (sigma_e^2). A deterministic model (one run) has no b_s. The ANOVA mean squares
of the (n_seeds, n_users) table, MS_U (users), MS_S (seeds), MS_E (residual), estimate them:
E[MS_E] = sigma_e^2, E[MS_U] = sigma_e^2 + n_s sigma_a^2, E[MS_S] = sigma_e^2 + n_u sigma_b^2.

- One model's grand mean (`model_interval`): Var = sigma_a^2 / n_u + (sigma_b^2 + sigma_e^2 /
  n_u) / n_s, estimated by max(MS_U - MS_E, 0) / (n_u n_s) + MS_S / (n_u n_s): the user
  component is truncated at 0, the variance of the seed means (MS_S / n_u) is kept whole.
- A paired difference A - B on the same users (`compare`): with d_u the per-user difference
  of the seed-averaged values, Var(D) = sigma_g^2 / n_u + sum over stochastic models of
  MS_S / (n_u n_s), where sigma_g^2 / n_u (a user x model interaction: how much the models'
  advantage varies between users beyond seed noise) is estimated by s_d^2 / n_u - sum of
  MS_E / (n_u n_s), truncated at 0. The user effect cancels; each model's seed noise enters
  once, through its own seed means. The seed mean squares of the two models are pooled: one
  run variance for the compared models, as a mixed model with a model:seed random effect
  assumes (with 2 seeds per model Welch-type separate terms would make the test very
  conservative, type-I error ~0.02; pooled, a 4x variance ratio between the models still
  gives 0.056 at level 0.05 in simulation).
- Both use Student t with Satterthwaite degrees of freedom from the independent mean squares
  (df of the seed terms: n_s - 1 per stochastic model, so 5 seeds and 2 models give ~8 when
  the seeds dominate, n_u - 1 when the users do). Known limit: a single model's interval with
  only 2 seeds, when its seed variance dominates, undercovers (Satterthwaite df estimated from
  a 1-df mean square); use >= 3 seeds (the default is 5). The two-sided p-value is the t-test of
  "difference = 0", consistent with the interval. Its minimum detectable difference is
  (t_{1-alpha/(2m), df} + t_{power, df}) * se with m the comparisons in the family.
- Equivalence (`Comparison.p_equivalence`) is a TOST against +-margin; the summary
  Holm-adjusts it over the same family and level as superiority.
- Folds (`folds=`, user-level cross-validation): each fold's users are scored by that fold's
  own training runs, so seeds and users are nested in folds and crossed within a fold. The
  mean squares are computed within folds and pooled (user and residual ones) or kept per fold
  (seed ones, each with n_s - 1 df); the mean is over all users. Fold training-set effects are
  treated as fixed: the inference is conditional on the K training sets, as the inference
  without folds is conditional on the one training set of the split.
- `VarianceComponents`, `detectable_difference`, `users_needed`: the same variance formula
  from stated or estimated components, for planning how many users and seeds a test needs.
- `holm`: Holm's step-down correction; `verdict` turns a comparison into words.
- `mean_ci`: a t-interval over independent values (set-level metrics: one value per seed);
  `paired_wilcoxon`: a signed-rank test (kept for comparisons with older reports).

Modules: ``settings`` (the options), ``components`` (the mean squares and Satterthwaite df on
a batch), ``comparisons`` (intervals, `compare`, `holm`, `verdict`), ``planning``
(`VarianceComponents`, `detectable_difference`, `users_needed`). Every name is importable
from ``harness.benchmark.stats``.

Calibration (type-I error, coverage, power, TOST level) is checked by null simulations in
`tests/test_stats_calibration.py`; `benchmarks/bench_stats.py` prints the table. Every
computation runs on a leading batch axis (`compare_batch`, `interval_batch`), which the
simulations call with thousands of simulated data sets and `compare` with one. There is no
resampling: the numbers are deterministic. Kept free of TensorFlow and plotting so that
reports and tests import it cheaply.
"""

from __future__ import annotations

from harness.benchmark.stats.comparisons import (
    Comparison,
    MeanCI,
    PairedTest,
    compare,
    holm,
    mean_ci,
    minimum_detectable_difference,
    model_interval,
    model_intervals,
    paired_wilcoxon,
    verdict,
)
from harness.benchmark.stats.components import (
    ComparisonBatch,
    IntervalBatch,
    check_seeds,
    compare_batch,
    complete_users,
    difference_variance,
    interval_batch,
)
from harness.benchmark.stats.planning import (
    VarianceComponents,
    detectable_difference,
    users_needed,
)
from harness.benchmark.stats.settings import (
    INTERVALS,
    METHOD,
    POWER,
    TESTS,
    StatsConfigError,
    StatsSettings,
)

__all__ = [
    "Comparison",
    "ComparisonBatch",
    "INTERVALS",
    "IntervalBatch",
    "METHOD",
    "MeanCI",
    "POWER",
    "PairedTest",
    "StatsConfigError",
    "StatsSettings",
    "TESTS",
    "VarianceComponents",
    "check_seeds",
    "compare",
    "compare_batch",
    "complete_users",
    "detectable_difference",
    "difference_variance",
    "holm",
    "interval_batch",
    "mean_ci",
    "minimum_detectable_difference",
    "model_interval",
    "model_intervals",
    "paired_wilcoxon",
    "users_needed",
    "verdict",
]
