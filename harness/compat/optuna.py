"""Optuna internals the harness relies on (written against optuna 4.x-5.0; tested 5.0.0).

Why each is needed, and what would replace it if Optuna made it public:

- `storage_of`, `study_id_of`, `trial_id_of`: the coordinator writes a pool worker's reports,
  attrs and heartbeats into the real study's storage for a trial it asked (Optuna exposes
  `Trial.storage` but neither the study's storage nor the ids).
- `optimize_loop_flag`: telling a grid sampler's last trial outside `Study.optimize` (the
  sampler calls `study.stop()`, which Optuna allows only inside the optimize loop).
- `rdb_backend`, `rdb_models`: heartbeat ages by the database's clock and an atomic
  exactly-once claim (a unique study-attr row) need the RDB tables.
- `journal_file_path`, `journal_file_lock`: a lock file beside a journal and repairing a torn
  journal under Optuna's own lock.
- `distribution_contains`: whether a default lies inside a search distribution.
- `unvisited_grid_ids`: whether a grid sampler has points left before asking.
- `OPTIMIZE_LOGGER`: the logger through which Optuna reports a failed trial.
- `RDB_PRIVATE_CALLS`: the private `RDBStorage` methods Optuna's cache in front of it calls
  directly; a storage that retries calls across a database outage must wrap them too.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # importing this module loads no Optuna (harness.errors uses the logger name)
    import optuna
    from optuna.distributions import BaseDistribution
    from optuna.storages import BaseStorage

TESTED = ">=4,<6"  # the pyproject pin; tests/test_compat.py checks every function below

OPTIMIZE_LOGGER = "optuna.study._optimize"

# `_CachedStorage` calls these on its RDBStorage backend (optuna/storages/_cached_storage.py).
RDB_PRIVATE_CALLS = (
    "_create_new_trial",
    "_get_best_trial_id",
    "_get_stale_trial_ids",
    "_get_trials",
    "_set_trial_param",
)


def storage_of(study: optuna.Study) -> BaseStorage:
    """The storage a study reads and writes (`Study._storage`)."""
    return study._storage


def study_id_of(study: optuna.Study) -> int:
    """The storage's id of a study (`Study._study_id`)."""
    return study._study_id


def trial_id_of(trial: optuna.Trial | optuna.trial.FrozenTrial) -> int:
    """The storage's id of a trial (`Trial._trial_id`, `FrozenTrial._trial_id`)."""
    return trial._trial_id


@contextlib.contextmanager
def optimize_loop_flag(study: optuna.Study) -> Iterator[None]:
    """Let `study.stop()` (called by the grid sampler on its last point) be legal while the
    block runs, as inside `Study.optimize` (`Study._thread_local.in_optimize_loop`)."""
    local = study._thread_local
    before = getattr(local, "in_optimize_loop", False)
    local.in_optimize_loop = True
    try:
        yield
    finally:
        local.in_optimize_loop = before


def rdb_backend(storage: BaseStorage) -> BaseStorage:
    """The storage behind Optuna's cache wrapper (`_CachedStorage._backend`), else itself."""
    return getattr(storage, "_backend", storage)


def rdb_models() -> Any:
    """Optuna's SQLAlchemy table models (`optuna.storages._rdb.models`)."""
    from optuna.storages._rdb import models

    return models


def journal_file_path(backend: Any) -> str | None:
    """The file of a `JournalFileBackend` (`_file_path`); None for other backends."""
    return getattr(backend, "_file_path", None)


def journal_file_lock(path: str) -> contextlib.AbstractContextManager[None]:
    """Optuna's own lock on a journal file, as its writers take it
    (`optuna.storages.journal._file.get_lock_file`)."""
    from optuna.storages.journal import JournalFileSymlinkLock
    from optuna.storages.journal._file import get_lock_file

    return get_lock_file(JournalFileSymlinkLock(str(path)))


def distribution_contains(distribution: BaseDistribution, value: Any) -> bool:
    """True if `value` lies in `distribution` (`BaseDistribution._contains`)."""
    try:
        return bool(distribution._contains(distribution.to_internal_repr(value)))
    except (ValueError, TypeError):
        return False


def unvisited_grid_ids(sampler: optuna.samplers.GridSampler, study: optuna.Study) -> list[int]:
    """Grid points not yet run or running (`GridSampler._get_unvisited_grid_ids`)."""
    return sampler._get_unvisited_grid_ids(study)
