"""The benchmark recipe's parts that need no training: seed-aware selection fed in any order,
the serial executor, and the job-graph scheduler running on it in this process."""

from __future__ import annotations

import gc
import random

import pytest

from harness.benchmark.parallel import PoolScheduler
from harness.benchmark.selection import Selection
from harness.benchmark.serial import SerialExecutor
from harness.benchmark.training import FitResult
from harness.execution import Executor

NDCG = {  # candidate -> validation NDCG per seed; 1 and 2 tie on the mean, 1 comes first
    0: [0.10, 0.12],
    1: [0.20, 0.22],
    2: [0.22, 0.20],
    3: [float("nan"), 0.05],
}


def _fit(i: int, j: int) -> FitResult:
    facts = {"seed": 10 + j, "val_ndcg": NDCG[i][j], "wall_seconds": 1.0}
    return FitResult(model=("model", i, j), facts=facts, history={})


def _cands() -> list[dict]:
    return [{"trial": i, "search_value": None, "params": {"x": i}} for i in NDCG]


@pytest.fixture
def frozen_heap():
    """The objects alive before the test moved out of the collector's reach, so the
    selection's gc.collect() after each rated candidate walks only what the test made
    (a full walk of the imported libraries' heap took most of this test's time)."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


@pytest.mark.parametrize("keep_models", [True, False])
def test_selection_chooses_the_same_whatever_order_fits_arrive_in(keep_models, frozen_heap) -> None:
    keys = [(i, j) for i in NDCG for j in range(2)]
    outcomes = set()
    rng = random.Random(0)
    for order in [keys, keys[::-1], *(rng.sample(keys, len(keys)) for _ in range(10))]:
        cands = _cands()
        selection = Selection("m", cands, [10, 11], keep_models=keep_models)
        done = [selection.add(i, j, _fit(i, j)) for i, j in order]
        assert done == [False] * (len(order) - 1) + [True]
        assert selection.chosen is cands[1]  # the first of the two best means
        models = [f.model for f in selection.chosen_fits]
        assert models == ([("model", 1, 0), ("model", 1, 1)] if keep_models else [None, None])
        outcomes.add(tuple(tuple(c["val_ndcg"]) for c in cands))
    assert len(outcomes) == 1  # every candidate's record is the same too


def test_selection_with_every_candidate_diverged_says_so() -> None:
    selection = Selection("m", _cands()[:1], [10], keep_models=True)
    fit = FitResult(None, {"seed": 10, "val_ndcg": float("nan"), "wall_seconds": 0.0}, {})
    with pytest.raises(RuntimeError, match="every candidate configuration of m diverged"):
        selection.add(0, 0, fit)


def _square(x: int) -> int:
    return x * x


def _boom(x: int) -> int:
    raise KeyError(f"no {x}")


def test_serial_executor_runs_jobs_inline_behind_the_executor_interface() -> None:
    with SerialExecutor() as executor:
        assert isinstance(executor, Executor) and executor.n_workers == 1
        ok, bad = executor.submit(_square, 3), executor.submit(_boom, 4)
        assert ok.done() and bad.done() and executor.wait([ok, bad]) == {ok, bad}
        assert ok.result() == 9
        assert isinstance(bad.exception(), KeyError)


def test_scheduler_on_a_serial_executor_runs_the_graph_in_priority_order() -> None:
    scheduler = PoolScheduler(SerialExecutor())
    results: list[tuple[str, int]] = []

    def then(name: str):
        def done(value: int) -> None:
            results.append((name, value))
            if name == "a":  # a finished job adds the one it unblocks
                scheduler.add(_square, (5,), then("c"), priority=10.0, label="c")

        return done

    scheduler.add(_square, (2,), then("a"), priority=2.0, label="a")
    scheduler.add(_square, (3,), then("b"), priority=1.0, label="b")
    scheduler.run()
    assert results == [("a", 4), ("c", 25), ("b", 9)]
    assert scheduler.submitted == ["a", "c", "b"]


def test_scheduler_on_a_serial_executor_raises_the_jobs_own_error() -> None:
    scheduler = PoolScheduler(SerialExecutor())
    ran: list[str] = []
    scheduler.add(_boom, (1,), ran.append, priority=2.0, label="boom")
    scheduler.add(_square, (2,), ran.append, priority=1.0, label="later")
    with pytest.raises(KeyError, match="no 1"):
        scheduler.run()
    assert ran == []  # queued jobs are dropped after a failure
