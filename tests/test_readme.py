"""The README's examples run: the Python API section as written, every line of "More
commands" (shrunk to synthetic data and a tiny budget), and the user-config example. Minutes,
hence `slow`."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
README = (ROOT / "README.md").read_text()

# Lines of "More commands" not run here, and why (each is covered elsewhere).
NOT_RUN = {
    "experiment=liang2018_ml20m": "hours on ML-20M; tests/test_experiment.py runs it on "
    "ML-20M-shaped synthetic data",
    "postgresql://": "needs a PostgreSQL server; the postgres-marked tests start one",
    "protocol.folds=5": "five sweeps and benchmarks; tests/test_run_e2e.py runs harness-run "
    "protocol.folds=2 on small synthetic data",
}
# Every command's data: a 400-user synthetic set (its split builds in a fraction of a second).
SMALL = {
    "dataset": "synthetic",
    "dataset.options.n_users": "400",
    "dataset.options.n_items": "200",
    "dataset.options.density": "0.05",
    "dataset.n_heldout_users": "50",
}
# What each command gets so it runs in seconds on synthetic data.
SHRINK = {
    "harness-run": {
        **SMALL,
        "budget": "smoke",
        "sweep.n_trials": "1",
        "budget.n_epochs": "1",
        "benchmark.n_seeds": "2",
    },
    "harness-benchmark": {**SMALL, "budget": "smoke"},
    "harness-report": {**SMALL, "budget": "smoke"},
    "harness-sweep": {
        **SMALL,
        "budget": "smoke",  # as harness-run's: the same studies, resumed (one configuration)
        "sweep.n_trials": "1",
        "budget.n_epochs": "1",  # every model of the command, as harness-run's
        "sweep.quiet": "true",
    },
    "harness-split": SMALL,
}


def section(title: str) -> str:
    """The README text from heading `title` to the next heading of the same level."""
    level = title.split(" ")[0]
    start = README.index(title + "\n")
    rest = README[start + len(title) + 1 :]
    end = re.search(rf"^{level} ", rest, flags=re.MULTILINE)
    return rest[: end.start()] if end else rest


def code_blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.DOTALL)


def shrink(line: str) -> list[str]:
    """The command of one README line with its overrides replaced by the tiny ones."""
    words = shlex.split(line, comments=True)
    command, args = words[0], words[1:]
    fixed = SHRINK[command]
    kept = [a for a in args if a.split("=", 1)[0] not in fixed]
    return [str(BIN / command), *kept, *(f"{k}={v}" for k, v in fixed.items())]


def env_for(tmp: Path) -> dict[str, str]:
    env = {**os.environ, "VAE_SWEEP_DATA_DIR": str(tmp / "data"), "PYTHONPATH": str(ROOT)}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


@pytest.mark.slow
def test_the_python_api_section_runs_as_written(tmp_path):
    (code,) = code_blocks(section("## Python API"), "python")
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env={**env_for(tmp_path), "MPLBACKEND": "Agg"},
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "validation NDCG@100" in done.stdout
    assert (tmp_path / "reports" / "api" / "report.html").is_file()
    assert (tmp_path / "results" / "api" / "metrics.csv").is_file()


def more_commands() -> list[str]:
    (block,) = code_blocks(section("## More commands"), "bash")
    return [line for line in block.splitlines() if line.strip()]


@pytest.mark.slow
def test_every_line_of_more_commands_runs(tmp_path):
    lines = more_commands()
    assert len(lines) >= 8
    ran = []
    for line in lines:
        if any(marker in line for marker in NOT_RUN):
            continue
        args = [*shrink(line), f"results_dir={tmp_path / 'results'}"]
        if not line.startswith(("harness-sweep", "harness-split")):
            args.append(f"reports_dir={tmp_path / 'reports'}")
        if line.startswith("harness-split"):
            args = args[:-1]  # harness-split has no results_dir
        done = subprocess.run(
            args, cwd=tmp_path, env=env_for(tmp_path), capture_output=True, text=True, timeout=1200
        )
        assert done.returncode == 0, f"{line}\n{done.stderr[-3000:]}"
        assert "Traceback" not in done.stderr, line
        ran.append(line.split("#")[0].strip())
    assert len(ran) == len(lines) - len(NOT_RUN), ran
    # the Mult-VAE beta example searches beta without annealing: no "no effect" warning
    assert "model.annealing=false search_space.beta" in "\n".join(ran)


@pytest.mark.slow
def test_the_user_config_folder_example_runs(tmp_path):
    from harness.data import load_interactions

    frame = load_interactions("synthetic", n_users=400, n_items=200, density=0.05, seed=0)
    clicks = frame[frame["rating"] > 3.5][["user", "item"]]
    clicks.columns = ["user_id", "item_id"]
    clicks.to_csv(tmp_path / "clicks.csv", index=False)
    install = section("## Install")
    script = next(b for b in code_blocks(install, "bash") if "--config-dir" in b)
    script = script.split("# next:")[0]  # the full harness-run that follows: run elsewhere
    script = script.replace("/data/clicks.csv", str(tmp_path / "clicks.csv"))
    script = script.replace(
        "protocol.threshold=0.5",
        f"protocol.threshold=0.5 sweep.n_trials=1 model.n_epochs=1 sweep.quiet=true "
        f"results_dir={tmp_path / 'results'}",
    )
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=tmp_path,
        env=env_for(tmp_path),
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    studies = [p.name for p in (tmp_path / "results").iterdir() if p.is_dir()]
    assert any(name.startswith("my_clicks-") and name.endswith("standard_vae") for name in studies)
    assert "latent_dim=" in done.stdout + done.stderr


def test_the_readme_findings_are_the_example_reports_generated_ones():
    """The README's results sentences come from the verdicts, never by hand: its block is
    the committed example report's summary.md, written by harness.report.verdicts."""
    from harness.report.verdicts import BEGIN, END

    block = README[README.index(BEGIN) + len(BEGIN) + 1 : README.index(END)]
    summary = (ROOT / "docs" / "example-report" / "summary.md").read_text()
    assert block == summary
    comparisons = (ROOT / "docs" / "example-report" / "comparisons.csv").read_text()
    assert comparisons.splitlines()[0] == (
        "model,baseline,metric,n_users,mean_diff,ci_low,ci_high,p,p_holm,mdd,verdict"
    )
