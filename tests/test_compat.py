"""Every private third-party attribute the harness uses (harness/compat/) still works.

Each test exercises one compat function on the installed library. When an upgrade moves or
changes what it wraps, the test fails with one message naming the function, the installed
version and the range the harness is tested with, so the fix starts in harness/compat/.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from packaging.specifiers import SpecifierSet
from packaging.version import Version


@contextlib.contextmanager
def wraps(library: str, function: str) -> Iterator[None]:
    """Turn any failure inside the block into one message about ``library``'s internals."""
    import importlib

    module = importlib.import_module(f"harness.compat.{library}")
    version = importlib.import_module(library).__version__
    try:
        yield
    except (AttributeError, ImportError, TypeError, KeyError, AssertionError) as error:
        pytest.fail(
            f"harness.compat.{library}.{function} no longer works with {library} {version} "
            f"(the harness is tested with {library}{module.TESTED}): {type(error).__name__}: "
            f"{error}. Update harness/compat/{library}.py for this version, or install the "
            "tested versions (pip install -c constraints.txt -e .).",
            pytrace=True,
        )


@pytest.mark.parametrize("library", ["optuna", "keras", "tensorflow", "submitit"])
def test_the_installed_version_is_in_the_tested_range(library: str) -> None:
    import importlib

    tested = importlib.import_module(f"harness.compat.{library}").TESTED
    version = Version(importlib.import_module(library).__version__)
    assert version in SpecifierSet(tested), (
        f"{library} {version} is outside the range the harness's compat layer is tested with "
        f"({library}{tested}); run tests/test_compat.py and widen the range in "
        f"harness/compat/{library}.py and pyproject.toml"
    )


# --- Optuna ------------------------------------------------------------------------------------


def _study(storage=None, **kwargs):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(storage=storage, **kwargs)


def test_optuna_storage_and_ids() -> None:
    import optuna

    from harness.compat.optuna import storage_of, study_id_of, trial_id_of

    study = _study(study_name="ids")
    trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    with wraps("optuna", "storage_of/study_id_of/trial_id_of"):
        storage = storage_of(study)
        assert isinstance(storage, optuna.storages.BaseStorage)
        assert study_id_of(study) == storage.get_study_id_from_name("ids")
        frozen = storage.get_trial(trial_id_of(trial))
        assert frozen.number == trial.number
        assert trial_id_of(frozen) == trial_id_of(trial)


def test_optuna_optimize_loop_flag_lets_the_grid_sampler_stop_the_study() -> None:
    import optuna

    from harness.compat.optuna import optimize_loop_flag

    def ask_last_grid_point():
        study = _study(sampler=optuna.samplers.GridSampler({"x": [0]}))
        return study, study.ask({"x": optuna.distributions.CategoricalDistribution([0])})

    study, trial = ask_last_grid_point()
    with pytest.raises(RuntimeError):  # why the flag is needed: stop() outside optimize
        study.tell(trial, 1.0)
    study, trial = ask_last_grid_point()
    with wraps("optuna", "optimize_loop_flag"):
        with optimize_loop_flag(study):
            study.tell(trial, 1.0)
        assert study.trials[0].value == 1.0
        with pytest.raises(RuntimeError):  # the flag is reset afterwards
            study.stop()


def test_optuna_rdb_backend_and_models(tmp_path: Path) -> None:
    import optuna

    from harness.compat.optuna import rdb_backend, rdb_models, storage_of

    study = _study(f"sqlite:///{tmp_path / 'x.db'}", study_name="rdb")
    with wraps("optuna", "rdb_backend/rdb_models"):
        backend = rdb_backend(storage_of(study))
        assert isinstance(backend, optuna.storages.RDBStorage)
        in_memory = optuna.storages.InMemoryStorage()
        assert rdb_backend(in_memory) is in_memory
        models = rdb_models()
        for table, columns in {
            "TrialModel": ("number", "study_id", "state"),
            "TrialHeartbeatModel": ("heartbeat",),
            "StudySystemAttributeModel": ("study_id", "key", "value_json"),
        }.items():
            for column in columns:
                assert hasattr(getattr(models, table), column), f"{table}.{column}"


def test_optuna_rdb_private_calls_exist_and_the_cache_calls_them() -> None:
    import inspect

    from optuna.storages import RDBStorage
    from optuna.storages import _cached_storage as cached

    from harness.compat.optuna import RDB_PRIVATE_CALLS

    source = inspect.getsource(cached)
    for name in RDB_PRIVATE_CALLS:
        assert callable(getattr(RDBStorage, name)), name
    called = {n for n in RDB_PRIVATE_CALLS if f"_backend.{n}(" in source}
    assert called == set(RDB_PRIVATE_CALLS)
    used = set(__import__("re").findall(r"_backend\.(_[a-z_]+)\(", source))
    assert used <= set(RDB_PRIVATE_CALLS), used - set(RDB_PRIVATE_CALLS)


def test_optuna_journal_file_path_and_lock(tmp_path: Path) -> None:
    import optuna
    from optuna.storages.journal import JournalFileBackend

    from harness.compat.optuna import journal_file_lock, journal_file_path

    path = tmp_path / "j.log"
    with wraps("optuna", "journal_file_path/journal_file_lock"):
        assert journal_file_path(JournalFileBackend(str(path))) == str(path)
        assert journal_file_path(optuna.storages.InMemoryStorage()) is None
        with journal_file_lock(str(path)):
            assert os.path.lexists(f"{path}.lock")  # the lock Optuna's writers take
        assert not os.path.lexists(f"{path}.lock")


def test_optuna_distribution_contains() -> None:
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    from harness.compat.optuna import distribution_contains

    with wraps("optuna", "distribution_contains"):
        assert distribution_contains(FloatDistribution(0.1, 1.0, log=True), 0.5)
        assert not distribution_contains(FloatDistribution(0.1, 1.0), 2.0)
        assert distribution_contains(IntDistribution(10, 100, step=10), 70)
        assert not distribution_contains(IntDistribution(10, 100, step=10), 75)
        assert distribution_contains(CategoricalDistribution(["a", "b"]), "b")
        assert not distribution_contains(CategoricalDistribution(["a", "b"]), "c")


def test_optuna_unvisited_grid_ids() -> None:
    import optuna

    from harness.compat.optuna import unvisited_grid_ids

    sampler = optuna.samplers.GridSampler({"x": [0, 1]}, seed=0)
    study = _study(sampler=sampler)
    with wraps("optuna", "unvisited_grid_ids"):
        assert len(unvisited_grid_ids(sampler, study)) == 2
        study.optimize(lambda t: t.suggest_categorical("x", [0, 1]), n_trials=1)
        assert len(unvisited_grid_ids(sampler, study)) == 1


def test_optuna_optimize_logger_reports_failed_trials() -> None:
    from harness.compat.optuna import OPTIMIZE_LOGGER

    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger(OPTIMIZE_LOGGER)
    logger.addHandler(handler)
    try:
        study = _study()
        study.optimize(lambda t: 1 / 0, n_trials=1, catch=(ZeroDivisionError,))
    finally:
        logger.removeHandler(handler)
    with wraps("optuna", "OPTIMIZE_LOGGER"):
        assert any("failed" in r.getMessage() for r in records), [r.getMessage() for r in records]


# --- Keras -------------------------------------------------------------------------------------


def test_keras_adam_slots_are_the_moments() -> None:
    import keras

    from harness.compat.keras import adam_slots

    variables = [keras.Variable(np.ones((2, 3), "float32")), keras.Variable(np.ones(3, "float32"))]
    grads = [np.full((2, 3), 2.0, "float32"), np.full(3, -1.0, "float32")]
    optimizer = keras.optimizers.Adam(1e-3, beta_1=0.9, beta_2=0.999)
    optimizer.build(variables)
    optimizer.apply(grads, variables)
    with wraps("keras", "adam_slots"):
        for variable, grad in zip(variables, grads, strict=True):
            m, v = adam_slots(optimizer, variable)
            np.testing.assert_allclose(np.asarray(m), 0.1 * grad, rtol=1e-6)
            np.testing.assert_allclose(np.asarray(v), 0.001 * grad**2, rtol=1e-6)
            own = {id(state.value) for state in optimizer.variables}
            assert id(m) in own and id(v) in own  # the optimizer's own state, not copies


def test_keras_has_schedule() -> None:
    import keras

    from harness.compat.keras import has_schedule

    schedule = keras.optimizers.schedules.ExponentialDecay(1e-3, 10, 0.5)
    with wraps("keras", "has_schedule"):
        assert not has_schedule(keras.optimizers.Adam(1e-3))
        assert has_schedule(keras.optimizers.Adam(schedule))


# --- TensorFlow --------------------------------------------------------------------------------


def test_tensorflow_gradient_registry_holds_traced_custom_gradients() -> None:
    import tensorflow as tf

    from harness.compat.tensorflow import gradient_registry

    @tf.function
    def f(x):
        @tf.custom_gradient
        def double(y):
            return 2 * y, lambda upstream: 2 * upstream

        return double(x)

    with wraps("tensorflow", "gradient_registry"):
        registry = gradient_registry()
        before = {k for k in registry if k.startswith("CustomGradient-")}
        f(tf.constant(1.0))
        after = {k for k in registry if k.startswith("CustomGradient-")}
        assert after - before, "tracing a tf.custom_gradient registered nothing"
        for key in after - before:
            del registry[key]


def test_tensorflow_csr_matrix_ops_multiply() -> None:
    import tensorflow as tf

    from harness.compat.tensorflow import csr_matrix_ops

    x = tf.sparse.from_dense(tf.constant([[1.0, 0.0], [0.0, 2.0], [3.0, 0.0]]))
    kernel = tf.constant([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    with wraps("tensorflow", "csr_matrix_ops"):
        ops = csr_matrix_ops()
        assert ops is not None, "the CSR kernels are gone (the slower public op would be used)"
        csr = ops.sparse_tensor_to_csr_sparse_matrix(x.indices, x.values, x.dense_shape)
        product = ops.sparse_matrix_mat_mul(csr, kernel)
        np.testing.assert_array_equal(product.numpy(), tf.sparse.to_dense(x).numpy() @ kernel)


@pytest.mark.parametrize(
    ("library", "distribution"),
    [
        ("optuna", "optuna"),
        ("keras", "keras"),
        ("tensorflow", "tensorflow-cpu"),
        ("submitit", "submitit"),
    ],
)
def test_pyproject_pins_the_range_the_compat_layer_is_tested_with(library, distribution) -> None:
    """pyproject.toml's range for each library whose internals harness/compat/ wraps is the
    range that module names, with an upper bound."""
    import importlib
    import tomllib

    from packaging.requirements import Requirement

    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    (pin,) = [
        Requirement(r) for r in pyproject["project"]["dependencies"]
        if Requirement(r).name == distribution
    ]  # fmt: skip
    tested = SpecifierSet(importlib.import_module(f"harness.compat.{library}").TESTED)
    assert any(s.operator == "<" for s in pin.specifier), f"{pin}: no upper bound"
    upper = {s.version for s in pin.specifier if s.operator == "<"}
    assert upper == {s.version for s in tested if s.operator == "<"}, (pin, tested)


# --- submitit ----------------------------------------------------------------------------------


def test_submitit_local_process_and_outcome_from_the_result_file(tmp_path: Path) -> None:
    import submitit

    from harness.compat.submitit import local_process, outcome_and_result

    with wraps("submitit", "local_process / outcome_and_result"):
        executor = submitit.LocalExecutor(folder=tmp_path)
        executor.update_parameters(timeout_min=5)
        job = executor.submit(sum, [1, 2])
        assert job.result() == 3
        assert local_process(job) is not None  # started here
        assert outcome_and_result(job) == ("success", 3)
        attached = submitit.LocalJob(folder=tmp_path, job_id=job.job_id)
        assert local_process(attached) is None  # attached from elsewhere: no process of ours
        assert outcome_and_result(attached) == ("success", 3)
        failing = executor.submit(int, "not a number")
        with pytest.raises(submitit.core.utils.FailedJobError, match="ValueError"):
            failing.result()
        outcome, text = outcome_and_result(failing)
        assert outcome == "error" and "ValueError" in str(text)


# --- nothing private outside harness/compat/ ---------------------------------------------------


def _private_uses(root: Path) -> list[str]:
    """`obj._name` reads, `getattr(obj, "_name")` and imports of private modules in the
    harness outside harness/compat/ whose name no harness code defines (the harness's own
    private names are fine: `self._x`, `module._helper`, `pool._closed`)."""
    import ast

    files = [p for p in root.rglob("*.py") if "compat" not in p.relative_to(root).parts]
    trees = {p: ast.parse(p.read_text(), str(p)) for p in root.rglob("*.py")}
    own: set[str] = set()
    for tree in trees.values():
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                own.add(node.name)
            if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                own.add(node.attr)
            if isinstance(node, ast.ClassDef):
                for item in node.body:
                    targets = (
                        item.targets
                        if isinstance(item, ast.Assign)
                        else [getattr(item, "target", None)]
                    )
                    own.update(t.id for t in targets if isinstance(t, ast.Name))

    def private(name: str) -> bool:
        return name.startswith("_") and not name.startswith("__") and name not in own

    found = []
    for path in files:
        for node in ast.walk(trees[path]):
            where = f"{path.relative_to(root.parent)}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, ast.Attribute) and private(node.attr):
                if not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
                    found.append(f"{where}: .{node.attr}")
            elif (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in ("getattr", "hasattr", "setattr")
                and len(node.args) >= 2
                and isinstance(node.args[1], ast.Constant)
                and isinstance(node.args[1].value, str)
                and private(node.args[1].value)
            ):
                found.append(f"{where}: {node.func.id}(..., {node.args[1].value!r})")
            elif isinstance(node, ast.Import | ast.ImportFrom):
                modules = (
                    [a.name for a in node.names] if isinstance(node, ast.Import)
                    else [node.module or ""]
                )  # fmt: skip
                for module in modules:
                    parts = module.split(".")
                    if parts[0] != "harness" and (
                        any(p.startswith("_") and p != "__future__" for p in parts)
                        or module.startswith("tensorflow.python")
                    ):
                        found.append(f"{where}: import {module}")
    return found


def test_no_private_third_party_attributes_outside_compat() -> None:
    root = Path(__file__).parents[1] / "harness"
    uses = _private_uses(root)
    assert not uses, (
        "private attributes of third-party libraries outside harness/compat/ (wrap each in a "
        "function of harness/compat/<library>.py with a test here):\n" + "\n".join(uses)
    )


def test_the_private_use_scan_sees_them(tmp_path: Path) -> None:
    package = tmp_path / "harness"
    package.mkdir()
    (package / "mine.py").write_text(
        "import optuna\nfrom optuna.storages._rdb import models\n"
        "class Pool:\n    _closed = False\n"
        "def f(study, pool):\n"
        "    return study._storage, pool._closed, getattr(study, '_study_id', None)\n"
    )
    assert [u.split(": ", 1)[1] for u in _private_uses(package)] == [
        "import optuna.storages._rdb",
        "._storage",
        "getattr(..., '_study_id')",
    ]
