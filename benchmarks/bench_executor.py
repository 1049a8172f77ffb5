"""Executor figures: per-job coordinator overhead (submission to result) on the local pool,
submitit's local executor and a localhost Slurm, and the wall time of
`harness-run budget=smoke dataset=synthetic` on Slurm against the local pool, with the
per-trial coordinator overhead of its sweeps on Slurm (from each trial's recorded job: ask to
sbatch done, plus the job's end to the tell; Slurm's queueing and start-up apart) and the
manifest's record of where the jobs ran.

    python benchmarks/bench_executor.py --part overhead --jobs 10
    python benchmarks/bench_executor.py --part smoke

The localhost Slurm comes from tests/slurm_cluster.py (needs root and Debian's slurm-wlm and
munge). Prints figures; asserts nothing timed.
"""

from __future__ import annotations

import argparse
import json
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
    """Trivial jobs one after another; each one's time split into the coordinator's part
    (the submit call, i.e. sbatch, and the wait from the job's end to its result here) and
    the rest (Slurm's scheduling, srun and Python start-up until the call runs)."""
    from slurm_cluster import missing, slurm_cluster

    print(f"{jobs} trivial jobs one after another (the job returns time.time())")
    print(f"{'executor':<16} {'submit->result':>15} {'coordinator':>13} {'submit call':>13} "
          f"{'end->result':>13} {'queue+start':>13}")  # fmt: skip
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
                    rows: dict[str, list[float]] = {k: [] for k in
                                                    ("total", "coord", "call", "tail", "queue")}  # fmt: skip
                    for _ in range(jobs):
                        start = time.time()
                        future = executor.submit(time.time)
                        submitted = time.time()
                        began = future.result()
                        end = time.time()
                        where = future.placement or {}
                        # the job's own end: its call's start + its run time (else its return)
                        ended = where["started"] + where["seconds"] if where else began
                        rows["total"].append(end - start)
                        rows["call"].append(submitted - start)
                        rows["tail"].append(end - ended)
                        rows["coord"].append(submitted - start + end - ended)
                        rows["queue"].append((where.get("started", began)) - submitted)
                print(f"{backend:<16} {_stat(rows['total']):>15} {_stat(rows['coord']):>13} "
                      f"{_stat(rows['call']):>13} {_stat(rows['tail']):>13} "
                      f"{_stat(rows['queue']):>13}")  # fmt: skip
        finally:
            if cluster is not None:
                cluster.__exit__(None, None, None)
    print("seconds, median (max). coordinator = submit call (sbatch) + job end -> result here;")
    print("queue+start = Slurm's scheduling, srun and Python start-up until the job's call runs")


def _stat(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} ({max(values):.2f})"


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
        (manifest,) = Path(tmp, "slurm", "reports").rglob("manifest.json")
        print(f"  manifest jobs (slurm): {json.loads(manifest.read_text())['jobs']}")
        trial_overhead(Path(tmp, "slurm", "results"))
        del os


def trial_overhead(results: Path) -> None:
    """Per sweep trial on Slurm, from the study: the coordinator's part = ask to sbatch
    done + the job's end to the tell (which includes waiting for earlier trials' tells, as
    outcomes are told in trial-number order); Slurm's part = sbatch done to the job's call."""
    import optuna

    coordinator, tell_wait, queue, run = [], [], [], []
    for db in results.rglob("*.db"):
        storage = optuna.storages.RDBStorage(f"sqlite:///{db}")
        for summary in storage.get_all_studies():
            for trial in storage.get_all_trials(summary._study_id):
                job = trial.system_attrs.get("harness:job") or {}
                if "started" not in job or trial.datetime_complete is None:
                    continue
                asked = trial.datetime_start.timestamp()
                told = trial.datetime_complete.timestamp()
                ended = job["started"] + job["seconds"]
                coordinator.append(job["submitted"] - asked + max(0.0, told - ended))
                tell_wait.append(max(0.0, told - ended))
                queue.append(job["started"] - job["submitted"])
                run.append(job["seconds"])
    if not coordinator:
        print("  (no Slurm trials found)")
        return
    print(f"  {len(coordinator)} sweep trials on Slurm, seconds, median (max):")
    print(f"    coordinator (ask -> sbatch done + job end -> tell): {_stat(coordinator)}")
    print(f"      of which job end -> tell (incl. waiting for earlier tells): {_stat(tell_wait)}")
    print(f"    Slurm queue + start-up (sbatch done -> the job's call): {_stat(queue)}")
    print(f"    the job's call (TensorFlow import, split load, training): {_stat(run)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["overhead", "smoke"], default="overhead")
    parser.add_argument("--jobs", type=int, default=10)
    args = parser.parse_args()
    overhead(args.jobs) if args.part == "overhead" else smoke()
