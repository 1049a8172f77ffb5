"""vae-sweep: hyperparameter sweeps and honest benchmarks for VAE recommenders."""

__version__ = "0.1.0"
