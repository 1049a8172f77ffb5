"""Sweep settings: the `sweep.*` config keys as a typed, validated dataclass."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from harness.errors import UserError, check_known_keys

# No "gp": Optuna's GPSampler needs PyTorch, a dependency too large for this harness.
SAMPLERS = ("tpe", "random", "qmc", "grid")
PRUNERS = ("median", "hyperband", "successive_halving", "none")
COORDINATIONS = ("pool", "storage")
DEFAULT_WINDOW = 4  # smallest default window of trials in flight (SweepSettings.window)


class SweepConfigError(UserError, ValueError):
    """A sweep setting or search space is invalid; the message names the key and the fix."""


@dataclass(frozen=True)
class SweepSettings:
    """How one study is run. Every field maps to a `sweep.<field>` config key.

    Attributes:
        n_trials: Finished trials (COMPLETE or PRUNED) the study should hold at the end,
            counting trials of earlier runs, so rerunning the same command resumes rather than
            adds. FAILED trials (NaN loss, dead worker) do not count: they are re-run. None = no
            trial budget (then `timeout` must be set).
        timeout: Wall seconds after which this process starts no new trial (a running trial
            finishes). None = no time budget.
        sampler: "tpe" (seeded, multivariate; the default), "random", "qmc", "grid" (choice and
            range parameters only).
        pruner: "median" (default), "hyperband", "successive_halving" or "none".
        storage: Optuna storage URL; None = SQLite file `<results_dir>/optuna.db`. A path ending
            in `.log` or a `journal:///abs/path.log` URL selects a journal file.
        study_name: None = derived `<dataset>-<fingerprint[:12]>-<model>`, so a study never mixes
            trials from different data or protocols.
        n_workers: Local worker processes: "auto" (default) = one per CPU this process may use
            (`os.sched_getaffinity`), each with cores / workers TensorFlow threads; or a count
            (more than the CPUs is allowed, with a warning: 1 thread each).
        batch_size: Trials in flight at a time (pool coordination): trial n is asked when
            trial n - batch_size is told. None = max(4, 2 x workers): two per worker, so a
            worker that finishes early has a queued trial while the oldest trial of the window
            still runs (head-of-line waits cost ~20% of two workers' throughput with one
            per worker); the floor of 4 gives a 1-worker run the window of the 2-core
            default. The same seed and batch size give the same trials and values whatever
            the number of workers.
        coordination: "pool" (default): this process owns the study and trains on a pool of
            `n_workers` spawned processes, in reproducible batches; works with every storage
            (SQLite included). "storage": `n_workers` independent processes share the storage,
            as workers on other machines do (needs a journal file or PostgreSQL/MySQL when more
            than one; not reproducible).
        recycle_after: Trials (or benchmark fits) after which a pool worker process is replaced;
            None = never. A safety net: a trial frees what it built, so a worker's memory
            stays flat without it (`benchmarks/bench_sweep.py --part memory`).
        seed: Sampler seed. Sampler state is not stored in the study, so a resumed sweep draws a
            different (still seeded) sequence than an uninterrupted one would have.
        quiet: No progress bars (per-trial summary lines are still logged).
        n_startup_trials: Random trials before TPE starts modelling (and before median pruning).
        n_warmup_epochs: Epochs a trial always runs before the pruner may stop it; VAE NDCG is
            noisy in the first epochs while the KL weight anneals.
        heartbeat_interval: Seconds between worker heartbeats (RDB storages natively; journal
            storage via side files). 5 s with the default grace period of 15 s: a worker that
            dies on another machine has its trial failed and re-run within about 20 s by any
            live worker (a dead worker on the same machine is detected at once by its pid).
        grace_period: Seconds without heartbeat after which a RUNNING trial counts as dead and is
            failed and re-run. None = 3 x heartbeat_interval.
        max_retry: How often a dead worker's trial is re-run before giving up on it.
        db_retry_seconds: How long a PostgreSQL/MySQL storage that stopped answering is
            retried (with backoff) before the sweep gives up; 0 = fail at once.
        models: For `run_many`: several models swept one after another with this same budget.
        max_failed_trials: The sweep stops with an error once the study holds this many failed
            trials (diverged, no finite NDCG; Ctrl-C and dead workers excluded): no trial is
            asked after that, and the ones already in flight finish (up to batch_size - 1 more
            failures). None = max(5, n_trials // 2) (5 without a trial budget).
        worker_id: Set for spawned worker processes (logs, heartbeat owner); None in a parent.
        worker_timeout: Seconds a busy pool worker may send nothing before it is killed and its
            trial failed and retried (workers beat every 2 s while they train, so only a
            stopped or frozen worker goes silent); raised to 10 x the slowest epoch seen.
            None = never.
        gpus: GPU indices to train on; worker i uses gpus[i % len(gpus)] (harness.devices).
            None = TensorFlow's default device (the first GPU if one is visible, else the CPU).
    """

    n_trials: int | None = 20
    timeout: float | None = None
    sampler: str = "tpe"
    pruner: str = "median"
    storage: str | None = None
    study_name: str | None = None
    n_workers: int | str = "auto"
    seed: int = 0
    quiet: bool = False
    n_startup_trials: int = 5
    n_warmup_epochs: int = 5
    heartbeat_interval: int = 5
    grace_period: int | None = None
    max_retry: int = 2
    db_retry_seconds: float = 60.0
    models: tuple[str, ...] | None = None
    max_failed_trials: int | None = None
    batch_size: int | None = None
    coordination: str = "pool"
    recycle_after: int | None = 100
    worker_timeout: float | None = 600.0
    worker_id: int | None = field(default=None, compare=False)
    gpus: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        from harness.devices import DeviceConfigError, parse_gpus

        try:  # lists from a config become a tuple (hashable, picklable)
            object.__setattr__(self, "gpus", parse_gpus(self.gpus))
        except DeviceConfigError as error:
            raise SweepConfigError(str(error)) from None
        if self.sampler not in SAMPLERS:
            raise SweepConfigError(
                f"sweep.sampler={self.sampler!r} is unknown; use one of {', '.join(SAMPLERS)}."
            )
        if self.pruner not in PRUNERS:
            raise SweepConfigError(
                f"sweep.pruner={self.pruner!r} is unknown; use one of {', '.join(PRUNERS)}."
            )
        if self.n_trials is None and self.timeout is None:
            raise SweepConfigError(
                "sweep.n_trials and sweep.timeout are both null, so the sweep would never end; "
                "set sweep.n_trials=<int> or sweep.timeout=<seconds>."
            )
        if self.coordination not in COORDINATIONS:
            raise SweepConfigError(
                f"sweep.coordination={self.coordination!r} is unknown; use one of "
                f"{', '.join(COORDINATIONS)}."
            )
        workers = self.n_workers
        if workers != "auto" and (isinstance(workers, bool) or not isinstance(workers, int)):
            raise SweepConfigError(
                f"sweep.n_workers={workers!r} must be 'auto' (one per CPU) or an integer >= 1."
            )
        for key in (
            "n_trials",
            "n_workers",
            "heartbeat_interval",
            "max_failed_trials",
            "batch_size",
            "recycle_after",
        ):
            value = getattr(self, key)
            if value is not None and value != "auto" and value < 1:
                raise SweepConfigError(f"sweep.{key}={value} must be >= 1.")
        if not isinstance(self.db_retry_seconds, int | float) or self.db_retry_seconds < 0:
            raise SweepConfigError(
                f"sweep.db_retry_seconds={self.db_retry_seconds!r} must be a number >= 0."
            )
        if self.worker_timeout is not None and self.worker_timeout <= 0:
            raise SweepConfigError(
                f"sweep.worker_timeout={self.worker_timeout} must be > 0 seconds (or null)."
            )
        if self.timeout is not None and self.timeout <= 0:
            raise SweepConfigError(f"sweep.timeout={self.timeout} must be > 0 seconds (or null).")
        if self.grace_period is not None and self.grace_period <= self.heartbeat_interval:
            raise SweepConfigError(
                f"sweep.grace_period={self.grace_period} must exceed sweep.heartbeat_interval="
                f"{self.heartbeat_interval}, or a live worker's trial would be failed."
            )

    def worker_layout(self) -> Any:
        """Workers and TensorFlow threads per worker (`harness.pool.WorkerLayout`)."""
        from harness.pool import plan_workers

        try:
            return plan_workers(self.n_workers, gpus=self.gpus)
        except ValueError as error:
            raise SweepConfigError(str(error)) from None

    def window(self, n_workers: int) -> int:
        """Trials in flight on a pool of `n_workers` (see `batch_size`)."""
        if self.batch_size is not None:
            return self.batch_size
        return max(DEFAULT_WINDOW, 2 * n_workers)

    @property
    def effective_grace_period(self) -> int:
        """Seconds of heartbeat silence after which a trial is declared dead."""
        return self.grace_period if self.grace_period is not None else 3 * self.heartbeat_interval

    @property
    def failure_limit(self) -> int:
        """Failed trials after which the sweep stops (`max_failed_trials` or its default)."""
        if self.max_failed_trials is not None:
            return self.max_failed_trials
        return max(5, (self.n_trials or 0) // 2)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> SweepSettings:
        """Build settings from a plain mapping (e.g. the resolved `cfg.sweep`).

        Raises:
            SweepConfigError: On a key that is not a sweep setting (typo guard).
        """
        names = {f.name for f in dataclasses.fields(cls)}
        check_known_keys("sweep", values, names, SweepConfigError)
        kwargs = {key: _typed(key, value) for key, value in values.items()}
        if kwargs.get("models") is not None:
            kwargs["models"] = tuple(kwargs["models"])
        return cls(**kwargs)

    def replace(self, **changes: Any) -> SweepSettings:
        """Return a copy with `changes` applied (validated again)."""
        return dataclasses.replace(self, **changes)


_INTS = ("n_trials", "seed", "n_startup_trials", "n_warmup_epochs")
_INTS += ("heartbeat_interval", "grace_period", "max_retry", "worker_id")
_INTS += ("batch_size", "recycle_after")  # n_workers ("auto" or a count): __post_init__
_NUMBERS = ("timeout", "worker_timeout", "db_retry_seconds")
_TEXTS = ("sampler", "pruner", "storage", "study_name", "coordination")


def _typed(key: str, value: Any) -> Any:
    """``value`` checked against the key's type (a config can hold any text, e.g. "abc")."""
    if value is None:
        return None
    if key == "study_name" and isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if key in _INTS:
        if isinstance(value, bool) or not isinstance(value, int):
            raise SweepConfigError(f"sweep.{key}={value!r} must be a whole number (or null).")
    elif key in _NUMBERS:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise SweepConfigError(f"sweep.{key}={value!r} must be a number of seconds (or null).")
    elif key in _TEXTS and not isinstance(value, str):
        raise SweepConfigError(f"sweep.{key}={value!r} must be text.")
    elif key == "quiet" and not isinstance(value, bool):
        raise SweepConfigError(f"sweep.quiet={value!r} must be true or false.")
    elif key == "models" and (isinstance(value, str) or not isinstance(value, list | tuple)):
        raise SweepConfigError(
            f"sweep.models={value!r} must be a list, e.g. sweep.models=[standard_vae,mult_vae]."
        )
    return value


@dataclass(frozen=True)
class ModelConfig:
    """One model of a command, as composed: its config and its search space.

    Attributes:
        name: The registered model name.
        params: `conf/model/<name>.yaml` as composed (constructor arguments, with "name").
        search_space: Its search space entries (Hydra Optuna Sweeper syntax or fixed values).
    """

    name: str
    params: Mapping[str, Any]
    search_space: Mapping[str, Any]


def model_config(cfg_dict: Mapping[str, Any], name: str) -> tuple[dict, dict]:
    """(model config, search space) of model `name` in a composed config (plain containers).

    `models.<name>` and `search_spaces.<name>` (a run's models, composed by Hydra from
    conf/models/<name>.yaml), else harness-sweep's one model `model` and `search_space`.

    Raises:
        SweepConfigError: `name` is not among the composed models.
    """
    models = cfg_dict.get("models") or {}
    if isinstance(models, Mapping) and name in models:
        spaces = cfg_dict.get("search_spaces") or {}
        return dict(models[name]), dict(spaces.get(name) or {})
    current = cfg_dict.get("model") or {}
    if current.get("name") == name:
        return dict(current), dict(cfg_dict.get("search_space") or {})
    composed = list(models) if isinstance(models, Mapping) else []
    if current.get("name"):
        composed.append(current["name"])
    raise SweepConfigError(
        f"unknown model {name!r}: not among the composed models ({', '.join(composed) or 'none'});"
        f" select it with models=[...] (conf/models/{name}.yaml)"
    )


def models_of(
    cfg_dict: Mapping[str, Any], names: Sequence[str] | None = None
) -> tuple[ModelConfig, ...]:
    """The models of a composed config, in order: `names`, else every model at `models`, else
    harness-sweep's one model.

    Raises:
        SweepConfigError: An unknown name; `sweep.models` set (the old way of choosing several
            models; harness-sweep reads it on its command line as `models=[...]`).
    """
    several = cfg_dict.get("models")
    chosen = (cfg_dict.get("sweep") or {}).get("models")
    if chosen:  # the command line's sweep.models=[...] is read as models=[...] (harness-sweep)
        raise SweepConfigError(
            f"sweep.models={list(chosen)}: choose several models with "
            f"models=[{','.join(chosen)}] (conf/models/<name>.yaml), not sweep.models"
        )
    if names is None:
        names = list(several) if several else [(cfg_dict.get("model") or {}).get("name")]
    found = []
    for name in names:
        params, space = model_config(cfg_dict, name)
        found.append(ModelConfig(name=name, params=params, search_space=space))
    return tuple(found)
