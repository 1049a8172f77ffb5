"""Worker processes never import the user's `__main__`: the README's Python API block saved
as `api.py` and run with `python api.py` (no `if __name__ == "__main__":` guard) completes,
and so does a small unguarded sweep script run as a file and fed on stdin (`python - <
script.py`). Before, each spawned worker re-ran the unguarded script and the parent waited
forever. Generous timeouts: a hang fails the test, a slow machine does not."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = """
from harness.data import load_interactions, make_split
from harness.sweep import SweepSettings, run_sweep

split = make_split(load_interactions("synthetic", n_users=300, n_items=150, density=0.05,
                                     seed=0), n_val_users=40, n_test_users=40)
study = run_sweep(split=split, dataset_name="synthetic", model_name="mult_vae",
                  model_params={"n_epochs": 2, "intermediate_dim": 16, "latent_dim": 4},
                  search_space={"learning_rate": "tag(log, interval(1e-4, 1e-2))"},
                  settings=SweepSettings(n_trials=2, quiet=True, n_workers=2),
                  results_dir="results")
print("finished", len(study.trials))
"""


def _env(tmp: Path) -> dict[str, str]:
    import os

    return {**os.environ, "PYTHONPATH": str(ROOT), "VAE_SWEEP_DATA_DIR": str(tmp / "data"),
            "MPLBACKEND": "Agg", "TF_CPP_MIN_LOG_LEVEL": "2"}  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("how", ["file", "stdin"])
def test_an_unguarded_sweep_script_completes(tmp_path, how) -> None:
    script = tmp_path / "sweep_script.py"
    script.write_text(SCRIPT)
    command = [sys.executable, str(script)] if how == "file" else [sys.executable, "-"]
    stdin = script.open() if how == "stdin" else None
    try:
        done = subprocess.run(command, cwd=tmp_path, env=_env(tmp_path), stdin=stdin,
                              capture_output=True, text=True, timeout=900)  # fmt: skip
    finally:
        if stdin is not None:
            stdin.close()
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("finished 2") == 1  # the script ran once: not again in a worker


@pytest.mark.slow
def test_the_readme_api_block_saved_as_a_script_completes(tmp_path) -> None:
    from test_readme import code_blocks, section

    (code,) = code_blocks(section("## Python API"), "python")
    (tmp_path / "api.py").write_text(code)
    done = subprocess.run([sys.executable, "api.py"], cwd=tmp_path, env=_env(tmp_path),
                          capture_output=True, text=True, timeout=1500)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("validation NDCG@100") == 1
    assert (tmp_path / "results" / "api" / "metrics.csv").is_file()
