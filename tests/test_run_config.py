"""Every model of a run composed by Hydra (conf/models/<name>.yaml -> models.<name>,
search_spaces.<name>): the same configs as before for the shipped presets, a user config
folder's model and search-space files reach harness-run, and bad model keys or models are one
line each."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from harness.argv_checks import UnknownKeyError, prepare_argv
from harness.configs import conf_dir, user_dirs_first
from harness.models.registry import UnknownModelError
from harness.sweep.app import models_spelling
from harness.sweep.config import command_line_model_keys, model_config, preflight
from harness.sweep.settings import SweepConfigError

BIN = Path(sys.executable).parent
# `model_config(cfg, m)` of every model of these presets, printed by the code before models were
# composed by Hydra (the carrier model and `_overridden_model_keys`, commit bdd4068).
BEFORE = json.loads((Path(__file__).parent / "model_configs_main.json").read_text())
PRESETS = {
    "default": [],
    "smoke": ["budget=smoke"],
    "paper": ["budget=paper"],
    "liang2018_ml20m": ["experiment=liang2018_ml20m"],
    "all_models": ["experiment=all_models"],
    "all_models_smoke": ["experiment=all_models", "budget=smoke"],
    "all_models_paper": ["experiment=all_models", "budget=paper"],
}


def _compose(*overrides: str, name: str = "run") -> dict:
    with initialize_config_dir(config_dir=str(conf_dir()), version_base=None):
        return OmegaConf.to_container(compose(name, overrides=list(overrides)), resolve=True)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_the_presets_give_every_model_the_config_it_had_before(preset):
    cfg = _compose(*PRESETS[preset])
    assert list(cfg["models"]) == BEFORE[preset]["models"]  # report order kept
    for model, expected in BEFORE[preset]["configs"].items():
        params, space = model_config(cfg, model)
        assert params == expected["model"], model
        assert space == expected["search_space"], model


def test_overrides_reach_each_model_alike():
    cfg = _compose("budget.n_epochs=7", "models.mult_vae.batch_size=64", "budget.patience=3")
    for model in ("standard_vae", "mult_vae"):
        assert (cfg["models"][model]["n_epochs"], cfg["models"][model]["patience"]) == (7, 3)
    assert cfg["models"]["mult_vae"]["batch_size"] == 64
    assert cfg["models"]["standard_vae"]["batch_size"] == 100
    assert "n_epochs" not in cfg["models"]["ease"]
    cfg = _compose("models=[recvae,ease]", "search_spaces.ease.lam=500.0")
    assert list(cfg["models"]) == ["recvae", "ease"] and cfg["search_spaces"]["ease"]["lam"] == 500
    # harness-sweep's one model reads the budget the same way; without one, its own file
    assert _compose("model=recvae", "budget=smoke", name="sweep")["model"]["n_epochs"] == 3
    assert _compose("model=recvae", name="sweep")["model"]["n_epochs"] == 50


def test_command_line_model_keys_name_the_model():
    keys = command_line_model_keys(
        ["models.mult_vae.beta=0.3", "model.k=5", "budget=smoke", "++models.ease.lam=3"]
    )
    assert keys == {"mult_vae": {"beta"}, None: {"k"}, "ease": {"lam"}}


def test_an_override_of_a_searched_key_names_both_keys():
    cfg = _compose("models.mult_vae.anneal_cap=0.3")
    with pytest.raises(SweepConfigError, match=r"models\.mult_vae\.anneal_cap=0\.3 is set, but "
                       r"search_spaces\.mult_vae\.anneal_cap="):  # fmt: skip
        preflight(cfg, list(cfg["models"]), overridden={"mult_vae": {"anneal_cap"}})


def _one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


def test_a_key_no_model_has_names_the_model_the_key_and_the_closest_key():
    with pytest.raises(UnknownKeyError) as error:
        prepare_argv("harness-run", ["models.mult_vae.n_epoch=5"])
    message = _one_line(error)
    assert "mult_vae" in message and "'n_epoch'" in message
    assert "models.mult_vae.n_epochs" in message
    with pytest.raises(UnknownKeyError, match="'ials' is not among this run's models"):
        prepare_argv("harness-run", ["models.ials.n_epochs=5"])


def test_model_overrides_on_harness_run_name_the_spelling_to_use():
    with pytest.raises(UnknownKeyError) as error:
        prepare_argv("harness-run", ["model.n_epochs=100"])
    assert "budget.n_epochs=100" in _one_line(error)
    assert "models.<name>.n_epochs=100" in str(error.value)
    with pytest.raises(UnknownKeyError, match=r"models=\[mult_vae"):
        prepare_argv("harness-benchmark", ["model=mult_vae"])
    # harness-sweep keeps its one-model syntax; with several models it refuses model.X too
    prepare_argv("harness-sweep", ["model=mult_vae", "model.n_epochs=3"])
    with pytest.raises(UnknownKeyError, match=r"\+\+budget\.n_epochs=3"):
        prepare_argv("harness-sweep", ["models=[ease,mult_vae]", "model.n_epochs=3"])
    assert models_spelling(["sweep.models=[a,b]", "model=x"]) == ["models=[a,b]", "model=x"]


def _user_folder(tmp: Path, *, unknown: bool = False) -> Path:
    folder = tmp / "my_conf"
    (folder / "model").mkdir(parents=True)
    (folder / "search_space").mkdir()
    # a smaller Mult-VAE with its own epochs, and a narrower EASE lambda
    (folder / "model" / "mult_vae.yaml").write_text(
        "name: mult_vae\nintermediate_dim: 24\nlatent_dim: 6\n"
        "n_epochs: ${from_budget:n_epochs,4}\npatience: null\nbatch_size: 50\nk: 100\n"
        "verbose: 0\nannealing: true\nanneal_cap: 0.2\nlr_schedule: constant\n"
    )
    (folder / "search_space" / "ease.yaml").write_text("lam: tag(log, interval(10.0, 20.0))\n")
    if unknown:  # a model of the user's own that the registry doesn't know
        (folder / "models").mkdir()
        (folder / "model" / "mine.yaml").write_text("name: mine\nk: 100\n")
        (folder / "models" / "mine.yaml").write_text(
            "defaults:\n  - /model@mine: mine\n  - /search_space@_global_.search_spaces.mine: ease\n"
        )
    return folder


def _harness(script: str, tmp: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "VAE_SWEEP_DATA_DIR": str(tmp / "data"), "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run(
        [str(BIN / script), *args], cwd=tmp, env=env, capture_output=True, text=True,
        timeout=1200,
    )  # fmt: skip


def test_user_dirs_first_puts_the_first_user_folder_before_the_shipped_one(tmp_path):
    path, argv = user_dirs_first(["--config-dir", str(tmp_path), "budget=smoke"])
    assert path == str(tmp_path.resolve())
    assert argv == ["budget=smoke", "--config-dir", str(conf_dir())]
    assert user_dirs_first(["budget=smoke"])[1] == ["budget=smoke"]


def test_a_user_config_folder_changes_those_two_models_of_harness_run(tmp_path):
    folder = _user_folder(tmp_path)
    for given in (["--config-dir", str(folder)], [f"hydra.searchpath=[file://{folder}]"]):
        done = _harness("harness-run", tmp_path, *given, "--cfg", "job", "--resolve")
        assert done.returncode == 0, done.stderr[-2000:]
        cfg = yaml.safe_load(done.stdout)
        mult, mult_space = model_config(cfg, "mult_vae")
        assert (mult["intermediate_dim"], mult["latent_dim"], mult["n_epochs"]) == (24, 6, 4)
        assert model_config(cfg, "ease")[1] == {"lam": "tag(log, interval(10.0, 20.0))"}
        shipped = _compose()
        assert mult_space == model_config(shipped, "mult_vae")[1]  # not replaced: kept
        for model in ("standard_vae", "popularity"):  # the others as shipped
            assert model_config(cfg, model) == model_config(shipped, model)
    # the budget still reaches the user's model (its file reads it)
    done = _harness("harness-run", tmp_path, "--config-dir", str(folder), "budget=smoke",
                    "--cfg", "job", "--resolve")  # fmt: skip
    assert yaml.safe_load(done.stdout)["models"]["mult_vae"]["n_epochs"] == 3


def test_a_model_the_registry_does_not_know_is_one_line(tmp_path):
    folder = _user_folder(tmp_path, unknown=True)
    cfg = _compose("models=[ease]")
    cfg["models"]["mine"] = {"name": "mine", "k": 100}
    with pytest.raises(UnknownModelError, match="unknown model 'mine'"):
        preflight(cfg, ["ease", "mine"], protocol=False)
    with pytest.raises(UnknownKeyError, match="unknown model 'nope'"):
        prepare_argv("harness-run", ["--config-dir", str(folder), "models=[ease,nope]"])
    done = _harness("harness-run", tmp_path, "--config-dir", str(folder), "models=[ease,mine]",
                    "dataset=synthetic", f"results_dir={tmp_path / 'results'}")  # fmt: skip
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "unknown model 'mine'" in lines[0], done.stderr


@pytest.mark.slow
def test_harness_run_trains_the_user_folder_models(tmp_path):
    folder = _user_folder(tmp_path)
    done = _harness(
        "harness-run", tmp_path, "--config-dir", str(folder), "budget=smoke",
        "models=[mult_vae,ease]", "benchmark.baseline=ease", "benchmark.liang=false",
        "dataset=synthetic", "dataset.options.n_users=300", "dataset.options.n_items=150",
        "dataset.options.density=0.05", "dataset.n_heldout_users=50", f"results_dir={tmp_path / 'results'}",
        f"reports_dir={tmp_path / 'reports'}",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    manifest = json.loads((tmp_path / "reports" / "synthetic" / "manifest.json").read_text())
    mult = manifest["model_configs"]["mult_vae"]
    assert (mult["intermediate_dim"], mult["latent_dim"], mult["n_epochs"]) == (24, 6, 3)
    import optuna

    storage = f"sqlite:///{tmp_path / 'results' / 'optuna.db'}"
    studies = {s.study_name: s for s in optuna.get_all_study_summaries(storage)}
    (ease,) = [n for n in studies if n.endswith("-ease")]
    trials = optuna.load_study(study_name=ease, storage=storage).trials
    assert trials and all(10.0 <= t.params["lam"] <= 20.0 for t in trials if t.params)
    (mult_study,) = [n for n in studies if n.endswith("-mult_vae")]
    for trial in optuna.load_study(study_name=mult_study, storage=storage).trials:
        assert trial.user_attrs["params_full"]["n_epochs"] == 3
