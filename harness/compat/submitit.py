"""submitit internals the harness relies on (written against submitit 1.5; tested 1.5.4).

Why each is needed, and what would replace it if submitit made it public:

- `local_process`: whether a local job's process belongs to this executor. A job attached
  from another process (a rerun taking over a killed coordinator's jobs) has none, so its
  liveness is read from its pid instead of `job.done()`.
- `outcome_and_result`: a finished job's result straight from its result file. `job.result()`
  also waits for the job's process to exit (on Slurm, for the accounting to say it ended),
  which adds seconds per trial after the result is already on disk.
"""

from __future__ import annotations

from typing import Any

TESTED = ">=1.5.4,<2"  # the pyproject pin; tests/test_compat.py checks every function below


def local_process(job: Any) -> Any:
    """The `subprocess.Popen` of a `submitit.LocalJob` started by this process, else None."""
    return getattr(job, "_process", None)


def outcome_and_result(job: Any) -> tuple[str, Any]:
    """("success", result) or ("error", traceback text), read from the job's result file."""
    return job._get_outcome_and_result()
