"""Training and test scoring for the benchmark: one seeded fit early-stopped on validation
users, and chunked scoring of test users that counts every scoring it does.

TensorFlow is imported through ``harness.models`` only when a model is built.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from harness.evaluation import evaluate_all, top_k_items

_SCORE_ROWS = 2048  # test users scored at once: 2048 x 20k items x 4 B = 160 MB at ML-20M size


@dataclass
class FitResult:
    """A trained model and the facts of its training run.

    Attributes:
        model: the fitted model (best validation weights restored).
        facts: seed, val_ndcg, best_epoch, optimal_beta, epochs_run, wall_seconds,
            diverged (the TrainingDivergedError message or "").
        history: per-epoch "ndcg", "beta", ... of the fit.
    """

    model: Any
    facts: dict[str, Any]
    history: dict[str, list[float]]


class _Patience:
    """Epoch callback stopping training after ``patience`` epochs without a better NDCG."""

    def __init__(self, patience: int | None) -> None:
        self.patience, self.best, self.best_epoch = patience, -math.inf, 0

    def __call__(self, epoch: int, logs: dict[str, float]) -> bool:
        ndcg = logs.get("ndcg", math.nan)
        if math.isfinite(ndcg) and ndcg > self.best:
            self.best, self.best_epoch = ndcg, epoch
        return self.patience is not None and epoch - self.best_epoch >= self.patience


def fit_seed(
    split, model_name: str, params: dict[str, Any], seed: int, *, patience: int | None = None
) -> FitResult:
    """Train ``model_name`` with ``params`` and ``seed`` on the training users.

    Validation users drive early stopping and best-weight restoration; test users are not
    touched. A diverged run (NaN loss) is returned with NaN validation NDCG, not raised, so
    one bad seed marks itself in the results instead of aborting the benchmark.
    """
    from harness.models import TrainingDivergedError, build_model, model_param_names

    params = {k: v for k, v in params.items() if k != "name"}  # a config's group name
    # seeded models train with the seed and print or save nothing; the others take no seed
    run_options = {"seed": seed, "verbose": 0, "save_path": None}
    if not is_seeded(model_name):
        run_options.pop("seed")
    accepted = model_param_names(model_name)
    params = {k: v for k, v in params.items() if k not in ("seed", "verbose", "save_path")}
    params |= {k: v for k, v in run_options.items() if k in accepted}
    start = time.perf_counter()
    model = build_model(model_name, split.n_train_users, split.n_items, **params)
    diverged = ""
    try:
        model.fit(
            split.train,
            x_val_tr=split.val_tr,
            x_val_te=split.val_te,
            epoch_callback=_Patience(patience),
        )
    except TrainingDivergedError as exc:
        diverged = str(exc)
    history = model.history()
    facts = {
        "seed": seed,
        "val_ndcg": math.nan if diverged else float(model.best_ndcg),
        "best_epoch": int(model.best_epoch),
        "optimal_beta": float(model.get_optimal_beta()),
        "epochs_run": len(history.get("ndcg", [])),
        "wall_seconds": round(time.perf_counter() - start, 2),
        "diverged": diverged,
    }
    return FitResult(model, facts, history)


def is_seeded(model_name: str) -> bool:
    """True when the model's results depend on its training seed (the registry says)."""
    from harness.models.registry import model_spec

    return model_spec(model_name).seeded


def has_beta(model_name: str) -> bool:
    """True when the model has a KL weight (optimal beta, Liang et al.'s procedure)."""
    from harness.models.registry import model_spec

    return model_spec(model_name).has_beta


class HeldOutTestScorer:
    """Scores test users (fold-in test_tr -> truth test_te) and records every scoring.

    The record is the evidence that test users were scored once per final configuration and
    seed: scoring the same (model, variant, seed) twice raises instead of being counted.
    With a ``ledger`` (``harness.benchmark.ledger.TestLedger``) and the configuration's
    ``params``, a scoring stored by an earlier run is reused instead of repeated (unless the
    ledger says rescore), and every new scoring is appended to it.
    """

    def __init__(self, split, ks: tuple[int, ...], coverage_k: int = 100, ledger=None) -> None:
        self.split, self.ks, self.coverage_k = split, tuple(ks), coverage_k
        self.ledger = ledger
        self.scored: Counter[tuple[str, str, int]] = Counter()
        self.reused: Counter[tuple[str, str, int]] = Counter()
        self.configs: dict[tuple[str, str, int], str] = {}  # (model, variant, seed) -> hash
        self.stale: dict[tuple[str, str, int], str] = {}  # why stored scores were not reused

    def score(
        self,
        model: Any,
        model_name: str,
        variant: str,
        seed: int,
        params: dict[str, Any] | None = None,
        *,
        evaluated: tuple[dict[str, np.ndarray], float] | None = None,
    ):
        """Per-user test metrics (dict of arrays, one value per test user) and coverage.

        ``evaluated``: the result of `evaluate(model)` computed elsewhere (a pool worker); it
        is recorded exactly as a scoring done here, and ignored when the ledger's stored
        scores are reused.

        Raises:
            RuntimeError: this (model_name, variant, seed) was scored before in this run.
        """
        key = (model_name, variant, seed)
        if self.scored[key] or self.reused[key]:
            raise RuntimeError(
                f"test users already scored for {key}: a benchmark scores each "
                "final configuration and seed once"
            )
        config = None
        if self.ledger is not None and params is not None:
            from harness.benchmark.ledger import configuration_hash

            config = configuration_hash(model_name, params, variant, (*self.ks, self.coverage_k))
            self.configs[key] = config
            if not self.ledger.rescore:
                entry = self.ledger.find(self.split.fingerprint, config, seed)
                if entry is not None:
                    self.reused[key] += 1
                    return self.ledger.load(entry)
                reason = self.ledger.stale_reason(self.split.fingerprint, config, seed)
                if reason is not None:
                    self.stale[key] = reason
        self.scored[key] += 1
        per_user, coverage = evaluated if evaluated is not None else self.evaluate(model)
        if config is not None:
            self.ledger.append(
                fingerprint=self.split.fingerprint,
                config=config,
                model=model_name,
                variant=variant,
                seed=seed,
                per_user=per_user,
                coverage=coverage,
            )
        return per_user, coverage

    def needs_scoring(
        self, model_name: str, variant: str, seed: int, params: dict[str, Any] | None = None
    ) -> bool:
        """False when `score` would reuse the ledger's stored scores for this configuration
        and seed instead of meeting the test users (records nothing)."""
        if self.ledger is None or params is None or self.ledger.rescore:
            return True
        from harness.benchmark.ledger import configuration_hash

        config = configuration_hash(model_name, params, variant, (*self.ks, self.coverage_k))
        return self.ledger.find(self.split.fingerprint, config, seed) is None

    def evaluate(self, model: Any) -> tuple[dict[str, np.ndarray], float]:
        """Per-user metrics and coverage of ``model`` on the test users (recorded nowhere:
        `score` is the accounted entry point)."""
        foldin, heldout = sp.csr_matrix(self.split.test_tr), sp.csr_matrix(self.split.test_te)
        parts: list[dict[str, np.ndarray]] = []
        recommended: set[int] = set()
        for start in range(0, foldin.shape[0], _SCORE_ROWS):
            rows = slice(start, start + _SCORE_ROWS)
            scores = model.score(foldin[rows])
            parts.append(evaluate_all(scores, heldout[rows], foldin[rows], self.ks))
            recommended.update(
                np.unique(top_k_items(scores, self.coverage_k, foldin[rows])).tolist()
            )
        per_user = {m: np.concatenate([p[m] for p in parts]) for m in parts[0]}
        return per_user, len(recommended) / foldin.shape[1]

    def record(self) -> dict[str, dict[str, int]]:
        """model -> variant -> number of seeds whose test users were scored in this run."""
        out: dict[str, dict[str, int]] = {}
        for (model, variant, _seed), count in self.scored.items():
            out.setdefault(model, {}).setdefault(variant, 0)
            out[model][variant] += count
        return out

    def ledger_record(self) -> dict[str, dict[str, dict[str, Any]]]:
        """model -> variant -> {scored, reused (this run), met_test_users (all runs),
        configs (seed -> configuration hash; Liang's retrainings differ per seed),
        rescored (seed -> why stored scores were not reused)}.

        ``met_test_users`` counts the ledger's scorings of the variant's configurations on
        this split, over every seed, code version and run; without a ledger it is this
        run's count.
        """
        meetings = self.ledger.meetings() if self.ledger is not None else {}
        out: dict[str, dict[str, dict[str, Any]]] = {}
        for model, variant, seed in [*self.scored, *self.reused]:
            key = (model, variant, seed)
            row = out.setdefault(model, {}).setdefault(
                variant,
                {"scored": 0, "reused": 0, "met_test_users": 0, "configs": {}, "rescored": {}},
            )
            row["scored"] += self.scored[key]
            row["reused"] += self.reused[key]
            if key in self.configs:
                row["configs"][str(seed)] = self.configs[key]
            if key in self.stale:
                row["rescored"][str(seed)] = self.stale[key]
        for variants in out.values():
            for row in variants.values():
                configs = set(row["configs"].values())
                if not configs:
                    row["met_test_users"] = row["scored"]
                else:
                    fp = self.split.fingerprint
                    row["met_test_users"] = sum(meetings.get((fp, c), 0) for c in configs)
                row["config_hash"] = next(iter(configs)) if len(configs) == 1 else None
        return out
