"""The statistics options (the ``benchmark.*`` statistics keys) and their validation: which
interval and test method, the confidence level and the equivalence margin; the methods that
were removed are refused with the reason."""

from __future__ import annotations

import math
from dataclasses import dataclass

from harness.errors import UserError

METHOD = "components"  # variance components, users x seeds crossed, Satterthwaite t
INTERVALS = (METHOD, "none")
TESTS = (METHOD,)
POWER = 0.8  # of the minimum detectable difference
_REMOVED = {
    "bootstrap": (
        "was removed: resampling 2-10 seeds is anti-conservative when seed variance dominates "
        "(type-I error 0.095 at level 0.05) and conservative when the user x seed interaction "
        "dominates"
    ),
    "permutation": (
        "was removed: flipping signs of seed-averaged per-user differences ignores the "
        "variance between training seeds (type-I error up to 0.93 at level 0.05)"
    ),
    "t_seeds": (
        "was removed: a t-interval over seed means ignores which users happened to be test "
        "users and has zero width for deterministic models"
    ),
}


class StatsConfigError(UserError, ValueError):
    """A statistics option is unknown, out of range or contradicts another one."""


def _check_method(key: str, value: object, allowed: tuple[str, ...]) -> None:
    if value in allowed:
        return
    if value in _REMOVED:
        raise StatsConfigError(
            f"benchmark.{key}={value!r} {_REMOVED[value]}; use benchmark.{key}={METHOD} "
            "(variance components of users x seeds crossed, Satterthwaite t)"
        )
    raise StatsConfigError(f"benchmark.{key}={value!r} is unknown; use one of {', '.join(allowed)}")


@dataclass(frozen=True)
class StatsSettings:
    """How intervals and tests are computed (the `benchmark.*` statistics keys).

    Attributes:
        confidence: two-sided coverage of every interval; alpha = 1 - confidence is the
            (family-wise) level of the superiority and equivalence tests.
        interval: per-model interval: "components" (variance components of users x seeds
            crossed, Satterthwaite t; the default) or "none".
        test: test of the paired mean difference: "components" (the same model; the only
            one: "bootstrap" and "permutation" were removed, see the module docstring).
        n_resamples: unused by the "components" method (no resampling); still validated
            (>= 100) so that older configs load unchanged.
        seed: unused by the "components" method (nothing is random); kept for older configs.
        margin: equivalence margin on the test metric (e.g. 0.01 NDCG@100); >= 0, 0 = never
            claim equivalence.
    """

    confidence: float = 0.95
    interval: str = METHOD
    test: str = METHOD
    n_resamples: int = 2000
    seed: int = 0
    margin: float = 0.01

    def __post_init__(self) -> None:
        if not (isinstance(self.confidence, int | float) and 0.0 < self.confidence < 1.0):
            raise StatsConfigError(
                f"benchmark.confidence={self.confidence!r} must lie in (0, 1), e.g. 0.95"
            )
        _check_method("interval", self.interval, INTERVALS)
        _check_method("test", self.test, TESTS)
        if isinstance(self.n_resamples, bool) or not isinstance(self.n_resamples, int):
            raise StatsConfigError(f"benchmark.n_resamples={self.n_resamples!r} must be an integer")
        if self.n_resamples < 100:
            raise StatsConfigError(
                f"benchmark.n_resamples={self.n_resamples} is too few; use >= 100 "
                "(default 2000; unused by the components method)"
            )
        if not (isinstance(self.margin, int | float) and math.isfinite(self.margin)):
            raise StatsConfigError(f"benchmark.margin={self.margin!r} must be a finite number")
        if self.margin < 0:
            raise StatsConfigError(
                f"benchmark.margin={self.margin} is negative; it is a half-width: use e.g. "
                "0.01 (equivalent within +-0.01), or 0 to never claim equivalence"
            )

    @property
    def alpha(self) -> float:
        """Level of the tests: 1 - confidence."""
        return 1.0 - self.confidence
