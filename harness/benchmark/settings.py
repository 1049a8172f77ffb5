"""The benchmark's settings (the ``benchmark.*`` config keys), validated when built."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from harness.benchmark.power import POWER_KEYS, stated_components
from harness.benchmark.stats import StatsConfigError, StatsSettings
from harness.benchmark.training import is_seeded


@dataclass(frozen=True)
class BenchmarkSettings:
    """The `benchmark.*` config keys.

    Attributes:
        name: results folder name under results_dir.
        models: models compared, in display order.
        baseline: model every other one is tested against.
        fixed_models: models compared at a fixed configuration when they have no study.
        n_seeds: seeds per final configuration. Selection uses seed, seed + 1, ...,
            seed + n_seeds - 1; the final (test) runs use the next n_seeds seeds, so the
            two sets are disjoint.
        seed: first seed.
        n_candidates: top trials per study re-run over the seeds in selection.
        patience: stop a run after this many epochs without a better validation NDCG
            (None = train all epochs; the best epoch's weights are restored either way).
        liang: run Liang et al.'s optimal-beta procedure for the models with a KL weight
            (``ModelSpec.has_beta``).
        liang_seeds: seeds of that procedure (the first ones; None = all ``n_seeds``); each
            costs two trainings.
        test_metric: per-user metric of the paired tests.
        ks: cut-offs of the test metrics.
        confidence: coverage of every interval (tests at level 1 - confidence).
        interval, test, n_resamples, stats_seed, margin: see
            ``harness.benchmark.stats.StatsSettings`` (stats_seed is its ``seed``).
        protocol_seeds: removed (it re-scored the configuration chosen on one split's
            validation users on splits where those users could be test users); must be None:
            use ``protocol.folds``.
        rescore: score the test users again even where the test ledger holds scores.
        power: the power preflight's pilot and stated variance assumption (see
            ``harness.benchmark.power``); None = no preflight values.
        save_models: keep each model's final trained model per seed under
            ``models/`` of the results folder (VAEs ``.keras``, others ``.npz``; read them
            with ``harness.models.load_model``).

    Raises:
        StatsConfigError: an unknown or contradictory option (message names it and the fix).
    """

    name: str
    models: tuple[str, ...] = ("standard_vae", "mult_vae", "ease", "popularity")
    baseline: str = "mult_vae"
    fixed_models: tuple[str, ...] = ("popularity",)
    n_seeds: int = 5
    seed: int = 0
    n_candidates: int = 3
    patience: int | None = None
    liang: bool = True
    liang_seeds: int | None = None
    test_metric: str = "ndcg@100"
    ks: tuple[int, ...] = (10, 20, 50, 100)
    confidence: float = 0.95
    interval: str = "components"
    test: str = "components"
    n_resamples: int = 2000
    stats_seed: int = 0
    margin: float = 0.01
    protocol_seeds: tuple[int, ...] | None = None
    rescore: bool = False
    save_models: bool = True
    power: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        self.stats  # validates the statistics options  # noqa: B018
        if self.power is not None:
            unknown = sorted(set(self.power) - set(POWER_KEYS))
            if unknown:
                raise StatsConfigError(
                    f"unknown benchmark.power key(s) {', '.join(unknown)}; valid keys are "
                    f"{', '.join(POWER_KEYS)}"
                )
            stated_components(self.power)  # the stated assumption is valid
        if self.baseline not in self.models:
            raise StatsConfigError(
                f"benchmark.baseline={self.baseline!r} is not among the compared models "
                f"({', '.join(self.models)}); pick one of them"
            )
        name, _, k = self.test_metric.partition("@")
        if not k.isdigit() or int(k) not in self.ks:
            raise StatsConfigError(
                f"benchmark.test_metric={self.test_metric!r} is not computed: the metrics are "
                f"<name>@k for k in benchmark.ks={list(self.ks)}; use e.g. ndcg@{max(self.ks)} "
                "or add the cut-off to benchmark.ks"
            )
        if self.n_seeds < 1:
            raise StatsConfigError(f"benchmark.n_seeds={self.n_seeds} must be >= 1")
        seeded = [m for m in self.models if is_seeded(m)]
        if self.n_seeds < 2 and seeded and self.interval != "none":
            raise StatsConfigError(
                f"benchmark.n_seeds={self.n_seeds}: {', '.join(seeded)} train with random "
                "seeds, and an interval over one seed would hide that noise; use "
                "benchmark.n_seeds >= 2, or benchmark.interval=none"
            )
        if self.liang_seeds is not None and not 1 <= self.liang_seeds <= self.n_seeds:
            raise StatsConfigError(
                f"benchmark.liang_seeds={self.liang_seeds} must lie in [1, benchmark.n_seeds="
                f"{self.n_seeds}] (or null = all seeds)"
            )
        if self.protocol_seeds is not None:
            raise StatsConfigError(
                f"benchmark.protocol_seeds={list(self.protocol_seeds)!r} was replaced by "
                "protocol.folds=K (user-level cross-validation: every fold runs its own sweep, "
                "selection and test scoring, and every user is a test user once); drop "
                "benchmark.protocol_seeds"
            )

    @property
    def stats(self) -> StatsSettings:
        """The statistics options (validated)."""
        return StatsSettings(
            confidence=self.confidence,
            interval=self.interval,
            test=self.test,
            n_resamples=self.n_resamples,
            seed=self.stats_seed,
            margin=self.margin,
        )

    @property
    def seeds(self) -> list[int]:
        """The selection seeds: every candidate configuration is trained with these."""
        return list(range(self.seed, self.seed + self.n_seeds))

    @property
    def test_seeds(self) -> list[int]:
        """The final runs' seeds, disjoint from `seeds` (they meet the test users)."""
        return list(range(self.seed + self.n_seeds, self.seed + 2 * self.n_seeds))
