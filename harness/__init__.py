"""vae-sweep: hyperparameter sweeps and honest benchmarks for VAE recommenders."""

# Registers the `from_budget` resolver that conf/model/*.yaml use, so any code of the package
# can resolve the shipped configs (Hydra's entry points, tests, benchmarks).
from harness import configs as _configs  # noqa: F401

__version__ = "0.1.0"
