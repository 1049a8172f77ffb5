"""`ExecutorSettings`: the `executor.*` config keys (and the `sweep.*` keys of the local pool).

Keys of the submitit backends follow submitit's names (`partition`, `timeout_min`, ...), so a
Slurm user's habits carry over. `from_config` reads a composed run config: `executor.*` and,
for the local pool, `sweep.n_workers`, `sweep.recycle_after`, `sweep.gpus` and
`sweep.worker_timeout`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import UserError, check_known_keys
from harness.outputs import results_dir_of

BACKENDS = ("local", "submitit_local", "slurm")
DEFAULT_WORKER_TIMEOUT = 600.0


class ExecutorConfigError(UserError):
    """An invalid `executor.*` setting, or a backend that can't run here (one line)."""


@dataclass(frozen=True)
class ExecutorSettings:
    """How training jobs run.

    Attributes:
        backend: "local" (spawned worker pool, the default), "submitit_local" (submitit's local
            executor: one process per job, as on a cluster) or "slurm" (submitit on Slurm).
        n_workers: Local pool workers ("auto" = one per CPU); for submitit, jobs in flight.
        recycle_after: Jobs after which a local worker process is replaced (None = never).
        gpus: GPU ids of the local pool (one worker each).
        worker_timeout: Seconds a busy local worker may stay silent before it is killed and its
            job re-run (it beats every 2 s while it works; None = never).
        folder: Logs and pickles of submitit jobs (must be on a filesystem the jobs see);
            None = `<results_dir>/executor`.
        cancel_on_exit: Ctrl-C (or an error) on the coordinator cancels its jobs in flight.
        partition, timeout_min, cpus_per_task, gpus_per_node, mem_gb, account, qos,
        array_parallelism, additional_parameters, setup: submitit's Slurm parameters.
    """

    backend: str = "local"
    n_workers: int | str = "auto"
    recycle_after: int | None = 100
    gpus: tuple[int, ...] | None = None
    worker_timeout: float | None = DEFAULT_WORKER_TIMEOUT
    folder: str | None = None
    cancel_on_exit: bool = True
    partition: str | None = None
    timeout_min: int = 60
    cpus_per_task: int | None = None
    gpus_per_node: int | None = None
    mem_gb: float | None = None
    account: str | None = None
    qos: str | None = None
    array_parallelism: int | None = None
    additional_parameters: dict[str, Any] = field(default_factory=dict)
    setup: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ExecutorConfigError(
                f"executor={self.backend!r} is unknown; use one of {', '.join(BACKENDS)}."
            )
        if self.worker_timeout is not None and self.worker_timeout <= 0:
            raise ExecutorConfigError(
                f"sweep.worker_timeout={self.worker_timeout} must be > 0 seconds (or null)."
            )
        object.__setattr__(self, "setup", tuple(self.setup or ()))
        object.__setattr__(self, "additional_parameters", dict(self.additional_parameters or {}))

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> ExecutorSettings:
        """Settings from a composed config's `executor` group and its `sweep` keys."""
        sweep = dict(cfg.get("sweep") or {})
        values = dict(cfg.get("executor") or {})
        backend = values.pop("name", None) or values.pop("backend", None) or "local"
        names = {f.name for f in dataclasses.fields(cls)}
        check_known_keys("executor", values, names - {"backend"}, ExecutorConfigError)
        for key in ("n_workers", "recycle_after", "gpus", "worker_timeout"):
            if key in sweep:
                values.setdefault(key, sweep[key])
        if values.get("gpus") is not None:
            from harness.devices import parse_gpus

            values["gpus"] = parse_gpus(values["gpus"])
        if values.get("folder") is None:
            values["folder"] = str(results_dir_of(cfg) / "executor")
        return cls(backend=backend, **values)

    def replace(self, **changes: Any) -> ExecutorSettings:
        return dataclasses.replace(self, **changes)

    @property
    def folder_path(self) -> Path:
        return Path(self.folder or "results/executor").expanduser().resolve()
