"""A throwaway Slurm cluster on localhost for tests: munged, slurmctld and slurmd started from
a short slurm.conf in a temporary folder (Debian's `slurm-wlm` and `munge`; `.ci/run` installs
them), stopped afterwards once no job runs (a job still running after 30 s is scancelled).
A requeued (preempted) job starts again after `cred_expire` (20 s here, Slurm's default
120 s). Skipped with the reason when the binaries are missing or this is
not root (slurmd runs jobs as their user and needs root here).

    with slurm_cluster(tmp_path) as cluster:   # sets SLURM_CONF for sbatch/squeue/scancel
        subprocess.run(["sbatch", ...], env=cluster.env)
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scancel", "sinfo")
MUNGE_KEYS = (Path("/etc/munge/munge.key"),)
CONF = """\
ClusterName=vaesweep
SlurmctldHost={host}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={root}/munge/munge.sock,cred_expire=20
CredType=cred/munge
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
ReturnToService=2
SchedulerType=sched/builtin
SchedulerParameters=sched_interval=1
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
MinJobAge=600
KillWait=2
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory} State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
"""


@dataclass
class SlurmCluster:
    root: Path
    env: dict[str, str]
    partition: str = "debug"

    def jobs(self) -> dict[str, str]:
        """Job id -> state of every job the controller still knows."""
        out = subprocess.run(["squeue", "-h", "-t", "all", "-o", "%i %T"], env=self.env,
                             capture_output=True, text=True, check=True)  # fmt: skip
        return dict(line.split() for line in out.stdout.splitlines() if line.strip())


def missing() -> str | None:
    """Why no cluster can be started here (None = it can)."""
    absent = [name for name in BINARIES if shutil.which(name) is None]
    if absent:
        return (
            f"Slurm/munge binaries missing: {', '.join(absent)} (apt-get install slurm-wlm munge)"
        )
    if os.geteuid() != 0:
        return "a localhost Slurm needs root (slurmd)"
    if not any(key.exists() for key in MUNGE_KEYS):
        return "no munge key (/etc/munge/munge.key)"
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait(condition, what: str, deadline: float = 120.0) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if condition():
            return
        time.sleep(0.2)
    raise RuntimeError(f"localhost Slurm: gave up waiting for {what}")


@contextlib.contextmanager
def slurm_cluster(root: Path) -> Iterator[SlurmCluster]:
    """Start munged, slurmctld and slurmd under `root`; stop them afterwards."""
    reason = missing()
    if reason:
        pytest.skip(reason)
    root = Path(root)
    for sub in ("state", "spool", "munge"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    os.chmod(root / "munge", 0o700)
    key = root / "munge" / "munge.key"
    shutil.copyfile(next(k for k in MUNGE_KEYS if k.exists()), key)
    os.chmod(key, 0o600)
    host = socket.gethostname()
    memory = int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20 * 0.8)
    conf = root / "slurm.conf"
    conf.write_text(CONF.format(host=host, root=root, ctld_port=_free_port(),
                                slurmd_port=_free_port(), cpus=os.cpu_count() or 1,
                                memory=memory))  # fmt: skip
    env = {**os.environ, "SLURM_CONF": str(conf)}
    pids: list[Path] = []
    try:
        subprocess.run(["munged", "--force", f"--key-file={key}",
                        f"--socket={root}/munge/munge.sock",
                        f"--pid-file={root}/munge/munged.pid",
                        f"--log-file={root}/munge/munged.log",
                        f"--seed-file={root}/munge/seed"], check=True, env=env)  # fmt: skip
        pids.append(root / "munge" / "munged.pid")
        subprocess.run(["slurmctld", "-c"], check=True, env=env)
        pids.append(root / "slurmctld.pid")
        subprocess.run(["slurmd"], check=True, env=env)
        pids.append(root / "slurmd.pid")
        cluster = SlurmCluster(root, env)

        def idle() -> bool:
            out = subprocess.run(["sinfo", "-h", "-o", "%t"], env=env, capture_output=True,
                                 text=True, check=False)  # fmt: skip
            return out.stdout.strip() in ("idle", "mix", "alloc")

        _wait(idle, "the node to come up")
        yield cluster
    finally:
        if len(pids) == 3:  # a test may end as its last job writes its result: let Slurm
            _settle(env)  # finish the job (its slurmstepd needs slurmd) before stopping
        # The processes this fixture started, by their pid: each takes about 2 s to stop, so
        # all are told at once and waited for together (slurmd and slurmctld first).
        stopping = []
        for pid_file in reversed(pids):
            with contextlib.suppress(OSError, ValueError):
                pid = int(pid_file.read_text().strip())
                os.kill(pid, signal.SIGTERM)
                stopping.append(pid)
        _wait(lambda: not any(_alive(pid) for pid in stopping), f"{stopping} to stop", 30)


def _settle(env: dict[str, str], deadline: float = 30.0) -> None:
    """Wait until no job is running or completing; scancel what is left after `deadline`."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        out = subprocess.run(["squeue", "-h", "-t", "all", "-o", "%T"], env=env,
                             capture_output=True, text=True, check=False)  # fmt: skip
        busy = {"RUNNING", "COMPLETING", "CONFIGURING", "SUSPENDED", "STOPPED"}
        if out.returncode or not busy.intersection(out.stdout.split()):
            return
        time.sleep(0.2)
    subprocess.run(["scancel", "--full", "--user", "root"], env=env, check=False)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
