"""Executor figures: per-job coordinator overhead (submission to result) on the local pool,
submitit's local executor and a localhost Slurm, and the wall time of
`harness-run budget=smoke dataset=synthetic` on Slurm against the local pool.

    python benchmarks/bench_executor.py --part overhead --jobs 10
    python benchmarks/bench_executor.py --part smoke

The localhost Slurm comes from tests/slurm_cluster.py (needs root and Debian's slurm-wlm and
munge). Prints figures; asserts nothing timed.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from harness.execution import ExecutorSettings, make_executor  # noqa: E402


def overhead(jobs: int) -> None:
    from slurm_cluster import missing, slurm_cluster

    print(f"{jobs} trivial jobs one after another (the job, time.time, returns when it ran)")
    print(f"{'executor':<16} {'submit->result s':>17} {'submit->start s':>16} "
          f"{'start->result s':>16}")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        backends = [("local", {}), ("submitit_local", {})]
        cluster = None
        if missing() is None:
            cluster = slurm_cluster(Path(tmp) / "slurm")
            env = cluster.__enter__().env
            import os

            os.environ["SLURM_CONF"] = env["SLURM_CONF"]
            backends.append(("slurm", {"cpus_per_task": 1}))
        else:
            print(f"(no localhost Slurm: {missing()})")
        try:
            for backend, extra in backends:
                settings = ExecutorSettings(backend=backend, n_workers=1,
                                            folder=f"{tmp}/{backend}", **extra)  # fmt: skip
                with make_executor(settings, None) as executor:
                    executor.submit(time.time).result()  # warm: a local worker is started once
                    totals, queued, returned = [], [], []
                    for _ in range(jobs):
                        start = time.time()
                        began = executor.submit(time.time).result()
                        end = time.time()
                        totals.append(end - start)
                        queued.append(began - start)
                        returned.append(end - began)
                print(f"{backend:<16} {_stat(totals):>17} {_stat(queued):>16} "
                      f"{_stat(returned):>16}")  # fmt: skip
        finally:
            if cluster is not None:
                cluster.__exit__(None, None, None)


def _stat(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} (max {max(values):.2f})"


def smoke() -> None:
    from slurm_cluster import missing, slurm_cluster

    reason = missing()
    if reason:
        print(f"no localhost Slurm: {reason}")
        return
    import os

    with tempfile.TemporaryDirectory() as tmp, slurm_cluster(Path(tmp) / "slurm") as cluster:
        env = {**cluster.env, "PYTHONPATH": str(ROOT), "VAE_SWEEP_DATA_DIR": f"{tmp}/data",
               "TF_CPP_MIN_LOG_LEVEL": "2", "MPLBACKEND": "Agg"}  # fmt: skip
        harness_run = str(Path(sys.executable).parent / "harness-run")
        rows = []
        for name, extra in (("local", []), ("slurm", ["executor=slurm",
                                                      "executor.cpus_per_task=1"])):  # fmt: skip
            command = [harness_run, "budget=smoke", "dataset=synthetic", "sweep.n_workers=2",
                       *extra, f"results_dir={tmp}/{name}/results",
                       f"reports_dir={tmp}/{name}/reports"]  # fmt: skip
            start = time.perf_counter()
            done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=tmp)
            wall = time.perf_counter() - start
            if done.returncode:
                print(done.stderr[-2000:])
            (metrics,) = Path(tmp, name, "results").rglob("metrics.csv")
            rows.append((name, wall, metrics.read_bytes()))
        print("harness-run budget=smoke dataset=synthetic sweep.n_workers=2")
        for name, wall, _ in rows:
            print(f"  {name:<6} {wall:7.1f} s wall")
        print(f"  metrics.csv identical: {rows[0][2] == rows[1][2]}")
        del os


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["overhead", "smoke"], default="overhead")
    parser.add_argument("--jobs", type=int, default=10)
    args = parser.parse_args()
    overhead(args.jobs) if args.part == "overhead" else smoke()
