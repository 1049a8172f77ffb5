"""Reproducibility manifest: what ran (packages, git commit and dirty flag, config, split,
seeds), where (machine) and how long each stage took. With the same commit, config and
package versions, the command in it reproduces the report's numbers (README,
"Reproducibility")."""

from __future__ import annotations

import datetime as dt
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from harness.devices import describe_device
from harness.report.document import Code, Section, Table

PACKAGES = (
    "vae-sweep",
    "numpy",
    "scipy",
    "pandas",
    "optuna",
    "hydra-core",
    "omegaconf",
    "matplotlib",
    "tensorflow-cpu",
    "tensorflow",
    "keras",
)


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    """Installed version of each distribution (None when not installed), plus Python's."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_commit(repo: Path | None = None) -> dict[str, Any]:
    """HEAD commit of the repository holding the harness and whether the tree is dirty.

    Returns {"commit": None, ...} outside a git checkout (e.g. a wheel install) instead of
    failing: a report must still be writable there.
    """
    repo = repo or Path(__file__).resolve().parents[2]

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True, timeout=10
        ).stdout

    try:
        commit, status = git("rev-parse", "HEAD").strip(), git("status", "--porcelain")
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit, "dirty": bool(status.strip())}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    """CPU model, logical cores (total and usable by this process), memory, OS."""
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        memory = None
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "cores_usable": usable,
        "memory_gb": round(memory / 2**30, 1) if memory else None,
        "platform": platform.platform(),
        "hostname": platform.node(),
    }


def rerun_facts(sweep: Any, benchmark: Any, protocol_seed: int | None) -> dict[str, Any]:
    """The seeds and settings that fix a run's numbers, from its typed settings.

    Trial seeds derive from the sweep seed and trial number (`harness.sweep.objective.
    trial_seed`); selection uses `benchmark.seed .. seed + n_seeds - 1` and the test runs the
    next `n_seeds` seeds; the protocol seed fixes which users are validation and test users.

    Args:
        sweep: The run's `SweepSettings`.
        benchmark: The run's `BenchmarkSettings`.
        protocol_seed: `protocol.seed`.
    """
    return {
        "sweep_seed": sweep.seed,
        "sampler": sweep.sampler,
        "n_workers": sweep.n_workers,
        "selection_seeds": list(benchmark.seeds),
        "test_seeds": list(benchmark.test_seeds),
        "protocol_seed": protocol_seed,
    }


def collect_manifest(
    *,
    config: dict[str, Any],
    split_fingerprint: str | None,
    stage_seconds: dict[str, float],
    model_configs: dict[str, Any] | None = None,
    rerun: dict[str, Any] | None = None,
    jobs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Everything needed to reproduce (or distrust) a report.

    Args:
        config: the fully composed config as a plain dict.
        split_fingerprint: the data split's sha256 fingerprint.
        stage_seconds: wall time per stage, e.g. {"sweep": .., "benchmark": .., "report": ..}.
        model_configs: model -> its composed config (also in ``config["models"]``).
        rerun: the seeds that fix the numbers (`rerun_facts`).
        jobs: where a submitit/Slurm executor's jobs ran (`harness.execution.
            placement_summary`); None for the local pool.
    """
    from harness.secrets import mask, mask_text

    return {
        "model_configs": mask(dict(model_configs or {})),
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": mask_text(" ".join([Path(sys.argv[0]).name, *sys.argv[1:]])),
        "packages": package_versions(),
        "git": git_commit(),
        "rerun": rerun,
        "machine": machine(),
        "device": describe_device(),
        "jobs": jobs,  # executor=slurm|submitit_local: nodes and devices
        "split_fingerprint": split_fingerprint,
        "stage_seconds": {k: round(float(v), 1) for k, v in stage_seconds.items()},
        "config": mask(config),  # no database password in a report
    }


PROVENANCE = ("created", "command", "git", "machine", "device", "stage_seconds", "rerun")


def keep_provenance(previous: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
    """A standalone report's manifest that keeps the run's provenance and adds its own line.

    ``previous`` is the manifest of the report being redrawn (written by ``harness-run`` or an
    earlier report) for the same split; its command, commit, machine, device and stage times
    stay, and this report is appended to ``"reports"`` (command, time, commit, wall seconds).
    Without a previous manifest (or for another split) ``new`` is returned unchanged.
    """
    if not previous or previous.get("split_fingerprint") != new.get("split_fingerprint"):
        return new
    line = {
        "command": new.get("command"),
        "created": new.get("created"),
        "git": new.get("git"),
        "device": new.get("device"),
    }
    merged = {**new, **{k: previous[k] for k in PROVENANCE if k in previous}}
    merged["reports"] = [*previous.get("reports", []), line]
    return merged


def manifest_section(manifest: dict[str, Any]) -> Section:
    """The manifest as a report section: facts table, stage times, composed config."""
    git = manifest["git"]
    commit = git["commit"] or "not a git checkout"
    if git.get("dirty"):
        commit += " (uncommitted changes)"
    mach = manifest["machine"]
    facts = [
        ["created", manifest["created"]],
        ["command", f"`{manifest['command']}`"],
        ["git commit", commit],
        ["split fingerprint", str(manifest["split_fingerprint"])],
        *[
            [f"rerun: {k}", str(v)]
            for k, v in (manifest.get("rerun") or {}).items()
            if v is not None
        ],
        [
            "machine",
            f"{mach['cpu']}, {mach['cores']} cores ({mach['cores_usable']} usable), "
            f"{mach['memory_gb']} GB, {mach['platform']}",
        ],
    ]
    if manifest.get("device"):
        facts.append(["training device", manifest["device"]])
    facts += [[f"package {k}", str(v)] for k, v in manifest["packages"].items() if v]
    for i, line in enumerate(manifest.get("reports") or [], 1):
        facts.append([f"report redrawn ({i})", f"`{line.get('command')}` at {line.get('created')}"])
    stages = [[k, f"{v:.1f}"] for k, v in manifest["stage_seconds"].items()]
    blocks: list[Any] = [
        Table(["item", "value"], facts),
        Table(["stage", "wall seconds"], stages, caption="Wall time per stage"),
        "The fully composed config (also in `manifest.json`):",
        Code(yaml.safe_dump(manifest["config"], sort_keys=False), "yaml"),
    ]
    for model, config in (manifest.get("model_configs") or {}).items():
        blocks += [
            f"Composed config of `{model}`:",
            Code(yaml.safe_dump(config, sort_keys=False), "yaml"),
        ]
    return Section("Reproducibility manifest", blocks)
