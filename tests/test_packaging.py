"""The wheel: build it, install it non-editable into a fresh venv, run a command from a folder
outside the repository. Slow (a wheel build and a smoke run), hence `slow`.

The fresh venv gets the wheel itself with pip (`--no-deps`, from the file), and sees the
dependencies already installed in the test's environment through a `.pth` line: downloading
TensorFlow again would take minutes and a network. That line adds the dependency folder to
`sys.path` without running the `.pth` files in it, so the test environment's editable install of
this repository is not importable there; the test checks that `harness` comes from the new venv.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, **kwargs)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    done = _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(ROOT)],
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (path,) = out.glob("vae_sweep-*.whl")
    return path


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("venv")
    done = _run([sys.executable, "-m", "venv", "--without-pip", str(root)], timeout=300)
    assert done.returncode == 0, done.stderr
    python = root / "bin" / "python"
    purelib = _run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]
    ).stdout.strip()
    done = _run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
         "--no-index", "--force-reinstall", str(wheel)],
        timeout=600, env=_clean_env(root),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert (Path(purelib) / "harness" / "conf" / "run.yaml").is_file()
    # after the install: pip would otherwise see this environment's vae-sweep as installed
    deps = sysconfig.get_paths()["purelib"]  # this environment's packages (TensorFlow, ...)
    Path(purelib, "_test_dependencies.pth").write_text(deps + "\n")
    return root


def _clean_env(tmp: Path) -> dict[str, str]:
    drop = ("PYTHONPATH", "PYTHONHOME", "TF_CPP_MIN_LOG_LEVEL", "VAE_SWEEP_TF_LOGS")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env["VAE_SWEEP_DATA_DIR"] = str(tmp / "data")
    return env


@pytest.mark.slow
def test_the_wheel_holds_the_configs_and_py_typed(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {
        f"harness/conf/{p.relative_to(ROOT / 'conf').as_posix()}"
        for p in (ROOT / "conf").rglob("*.yaml")
    }
    assert shipped and shipped <= names, sorted(shipped - names)
    assert {"harness/conf/__init__.py", "harness/py.typed", "harness/cli.py"} <= names
    assert not [n for n in names if n.startswith(("conf/", "tests/"))]


@pytest.mark.slow
def test_the_installed_wheel_runs_from_any_folder(venv, tmp_path):
    bin_dir = venv / "bin"
    env = _clean_env(tmp_path)
    where = _run(
        [str(bin_dir / "python"), "-c",
         "import harness, harness.configs as c; print(harness.__file__); "
         "print(c.hydra_config_path())"],
        cwd=tmp_path, env=env, timeout=120,
    )  # fmt: skip
    assert where.returncode == 0, where.stderr
    module, config_path = where.stdout.split()
    assert Path(module).is_relative_to(venv) and config_path == "pkg://harness.conf"

    helped = _run([str(bin_dir / "harness-run"), "--help"], cwd=tmp_path, env=env, timeout=120)
    assert helped.returncode == 0 and helped.stdout.startswith("harness-run: sweep every model")

    small = [  # a 400-user synthetic set, one trial of one epoch: the configs are the point
        "dataset.options.n_users=400",
        "dataset.options.n_items=200",
        "dataset.options.density=0.05",
        "dataset.n_heldout_users=50",
        "sweep.n_trials=1",
        "budget.n_epochs=1",
        "models=[mult_vae,ease]",
    ]
    done = _run(
        [str(bin_dir / "harness-run"), "budget=smoke", "dataset=synthetic", *small],
        cwd=tmp_path, env=env, timeout=1500,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "reports" / "synthetic" / "report.html").is_file()
    assert (tmp_path / "results" / "synthetic" / "benchmark.json").is_file()
    assert "| mult_vae |" in done.stdout
    # quiet start-up: none of TensorFlow's C++ lines
    assert "oneDNN" not in done.stderr and "E0000" not in done.stderr, done.stderr[-2000:]

    # a user's config folder that doesn't exist: one line naming it
    missing = tmp_path / "my_conf"
    bad = _run(
        [str(bin_dir / "harness-split"), "--config-dir", str(missing)],
        cwd=tmp_path, env=env, timeout=120,
    )  # fmt: skip
    assert bad.returncode == 2 and str(missing) in bad.stderr
