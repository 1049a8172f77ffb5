"""The small synthetic dataset the command-line tests run on (300 users, 150 items): every
stage runs, in a fraction of the default synthetic set's time to generate and split."""

SMALL_SYNTHETIC = (
    "dataset=synthetic",
    "dataset.options.n_users=300",
    "dataset.options.n_items=150",
    "dataset.options.density=0.05",
    "dataset.n_heldout_users=50",
)
