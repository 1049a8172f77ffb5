"""Input checks that run before any training, each naming the argument and the fix."""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from harness.errors import UserError


class MissingDependencyError(UserError, ImportError):
    """A model's optional dependency is not installed (the message names what to install)."""


def as_click_matrix(x, name: str, n_items: int | None = None) -> sp.csr_matrix:
    """Return ``x`` as a canonical float32 CSR click matrix, or raise ValueError.

    Accepts a 2-D numpy array (or anything ``np.asarray`` turns into one) or a scipy sparse
    matrix/array. Explicit zeros are dropped; the caller's matrix is never modified.

    Raises:
        ValueError: not 2-D, wrong number of columns, NaN/inf or negative entries.
    """
    if sp.issparse(x):
        csr = sp.csr_matrix(x, dtype=np.float32, copy=True)
    else:
        arr = np.asarray(x)
        if arr.ndim != 2:
            raise ValueError(
                f"{name} must be a 2-D users x items matrix, got shape {arr.shape}: pass a "
                "numpy array or scipy sparse matrix with one row per user"
            )
        csr = sp.csr_matrix(arr.astype(np.float32))
    if n_items is not None and csr.shape[1] != n_items:
        raise ValueError(
            f"{name} has {csr.shape[1]} item columns but the model expects {n_items}: build the "
            "model with original_dim equal to the split's number of items, and pass matrices "
            "over the same item axis"
        )
    if csr.nnz and not np.isfinite(csr.data).all():
        raise ValueError(f"{name} contains NaN or inf entries: clicks must be finite (0/1)")
    if csr.nnz and (csr.data < 0).any():
        raise ValueError(f"{name} contains negative entries: clicks must be >= 0 (binarise it)")
    csr.eliminate_zeros()
    csr.sort_indices()
    return csr


def check_k(k, n_items: int, name: str = "k") -> None:
    """k must be an integer in [1, n_items]."""
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or not 1 <= k <= n_items:
        raise ValueError(
            f"{name}={k!r} is invalid for {n_items} items: pass an integer 1 <= {name} <= {n_items}"
        )


def check_rate(value, name: str) -> None:
    """A dropout rate must lie in [0, 1)."""
    if not isinstance(value, int | float) or math.isnan(value) or not 0 <= value < 1:
        raise ValueError(f"{name}={value!r} must be a dropout rate in [0, 1), e.g. 0.5")


def check_positive_int(value, name: str) -> None:
    """An integer >= 1 (bools rejected)."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name}={value!r} must be an integer >= 1")


LR_SCHEDULES = ("plateau", "constant")
SAVE_SUFFIXES = (".keras", ".weights.h5", ".h5", ".hdf5")


def check_schedule(
    lr_schedule, plateau_factor, plateau_patience, plateau_min_lr, adam_epsilon
) -> None:
    """The learning-rate schedule and Adam's epsilon (raises ValueError naming the fix)."""
    if lr_schedule not in LR_SCHEDULES:
        raise ValueError(
            f"lr_schedule={lr_schedule!r} is unknown: use one of {LR_SCHEDULES} ('plateau' = "
            "ReduceLROnPlateau on val_loss as the Recommenders seed, 'constant' = Liang et al.)"
        )
    if not (isinstance(plateau_factor, int | float) and 0 < plateau_factor < 1):
        raise ValueError(f"plateau_factor={plateau_factor!r} must lie in (0, 1), e.g. 0.2")
    if isinstance(plateau_patience, bool) or not (
        isinstance(plateau_patience, int | np.integer) and plateau_patience >= 0
    ):
        raise ValueError(f"plateau_patience={plateau_patience!r} must be an integer >= 0, e.g. 1")
    if not (isinstance(plateau_min_lr, int | float) and plateau_min_lr >= 0):
        raise ValueError(f"plateau_min_lr={plateau_min_lr!r} must be >= 0, e.g. 1e-4")
    if not (isinstance(adam_epsilon, int | float) and adam_epsilon > 0):
        raise ValueError(f"adam_epsilon={adam_epsilon!r} must be > 0, e.g. 1e-8")


def check_stopping(patience, anneal_epochs) -> None:
    """Early stopping's patience and the annealing length in epochs (ValueError naming the fix)."""
    if patience is not None and (
        isinstance(patience, bool) or not isinstance(patience, int | np.integer) or patience < 1
    ):
        raise ValueError(
            f"patience={patience!r} must be an integer >= 1 (epochs without a better "
            "validation NDCG before training stops), or None to train every epoch"
        )
    if anneal_epochs is not None and (
        isinstance(anneal_epochs, bool)
        or not isinstance(anneal_epochs, int | float | np.integer | np.floating)
        or not anneal_epochs > 0
    ):
        raise ValueError(
            f"anneal_epochs={anneal_epochs!r} must be > 0 (the epoch at which beta reaches "
            "anneal_cap), or None for the seed formula (80% of n_epochs)"
        )


def check_save_path(save_path, suffixes: tuple[str, ...] = SAVE_SUFFIXES) -> None:
    """A file path Keras can read back, in an existing writable folder (checked before
    training, so a long fit never ends in an unwritable path)."""
    if save_path is None:
        return
    import os
    from pathlib import Path

    path = Path(save_path)
    if not str(path).endswith(suffixes):
        raise ValueError(
            f"save_path={str(save_path)!r} must end in one of {suffixes} so Keras can read it "
            "back (e.g. 'best.weights.h5', 'model.keras', or the seed's 'weights.hdf5')"
        )
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise ValueError(
            f"the folder of save_path={str(save_path)!r} does not exist: create {folder} first "
            "or pass a path in an existing folder"
        )
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(
            f"the folder of save_path={str(save_path)!r} is not writable: pass a path in a "
            "folder you can write to"
        )
    if path.is_dir():
        raise ValueError(f"save_path={str(save_path)!r} is a folder: pass a file path")


def check_vae_params(
    *,
    n_users: int,
    original_dim: int,
    intermediate_dim: int,
    latent_dim: int,
    n_epochs: int,
    batch_size: int,
    k: int,
    drop_encoder: float,
    drop_decoder: float,
    beta: float,
    annealing: bool,
    anneal_cap: float,
    total_anneal_steps: float | None,
    learning_rate: float,
    n_hidden_layers: int,
    l2_penalty: float,
) -> None:
    """Validate VAE hyperparameters (raises ValueError naming the first bad one)."""
    for name, value in [
        ("n_users", n_users),
        ("original_dim", original_dim),
        ("intermediate_dim", intermediate_dim),
        ("latent_dim", latent_dim),
        ("n_epochs", n_epochs),
        ("batch_size", batch_size),
        ("n_hidden_layers", n_hidden_layers),
    ]:
        check_positive_int(value, name)
    check_k(k, original_dim)
    check_rate(drop_encoder, "drop_encoder")
    check_rate(drop_decoder, "drop_decoder")
    if not math.isfinite(beta) or beta < 0:
        raise ValueError(f"beta={beta!r} must be a finite KL weight >= 0")
    if annealing and not (math.isfinite(anneal_cap) and anneal_cap > 0):
        raise ValueError(
            f"anneal_cap={anneal_cap!r} must be > 0 with annealing=True (beta grows up to it); "
            "pass e.g. anneal_cap=0.2, or annealing=False for a constant beta"
        )
    if total_anneal_steps is not None and not total_anneal_steps > 0:
        raise ValueError(
            f"total_anneal_steps={total_anneal_steps!r} must be > 0, or None for the seed formula"
        )
    if not (math.isfinite(learning_rate) and learning_rate > 0):
        raise ValueError(f"learning_rate={learning_rate!r} must be > 0, e.g. 1e-3")
    if not (math.isfinite(l2_penalty) and l2_penalty >= 0):
        raise ValueError(f"l2_penalty={l2_penalty!r} must be >= 0")


@dataclass(frozen=True)
class FitData:
    """Validated fit inputs: CSR float32 matrices; validation parts None when not given."""

    train: sp.csr_matrix
    valid: sp.csr_matrix | None
    val_tr: sp.csr_matrix | None
    val_te: sp.csr_matrix | None


def check_fit_inputs(
    x_train, x_valid, x_val_tr, x_val_te, *, n_items: int | None, n_users: int | None = None
) -> FitData:
    """Validate and convert fit inputs.

    ``x_valid`` (validation users' full rows, for the validation loss) defaults to
    val_tr + val_te when both parts are given. ``n_items=None`` takes the item axis from
    ``x_train``.

    Raises:
        ValueError: mismatched shapes, only one of x_val_tr/x_val_te, bad entries.
    """
    train = as_click_matrix(x_train, "x_train", n_items)
    n_items = train.shape[1]
    if n_users is not None and train.shape[0] != n_users:
        raise ValueError(
            f"x_train has {train.shape[0]} users but the model was built with n_users={n_users}: "
            "build it with n_users=x_train.shape[0]"
        )
    if (x_val_tr is None) != (x_val_te is None):
        raise ValueError(
            "pass both x_val_tr (fold-in) and x_val_te (held-out) for validation NDCG, or neither"
        )
    val_tr = val_te = None
    if x_val_tr is not None:
        val_tr = as_click_matrix(x_val_tr, "x_val_tr", n_items)
        val_te = as_click_matrix(x_val_te, "x_val_te", n_items)
        if val_tr.shape != val_te.shape:
            raise ValueError(
                f"x_val_tr has shape {val_tr.shape} but x_val_te has {val_te.shape}: they must "
                "be the fold-in and held-out parts of the same validation users"
            )
    if x_valid is not None:
        valid = as_click_matrix(x_valid, "x_valid", n_items)
    elif val_tr is not None:
        valid = as_click_matrix(val_tr + val_te, "x_val_tr + x_val_te", n_items)
    else:
        valid = None
    return FitData(train, valid, val_tr, val_te)


def check_vae_param(name: str, value, context: dict) -> None:
    """Check one VAE hyperparameter with the rules of ``check_vae_params`` and
    ``check_schedule``.

    The other arguments come from ``context`` (e.g. the model's defaults updated with the
    configured values; they should be valid themselves), so a rule that depends on another
    parameter (anneal_cap with annealing) is applied as configured. Parameters without a rule
    here (seed, verbose, output_activation), and rules whose other arguments ``context``
    lacks, are not checked. The data-dependent bound of ``k`` (<= number of items) is left to
    the fit.

    Raises:
        ValueError: naming the parameter and its allowed range.
    """
    data = {"n_users": 1, "original_dim": 2**31 - 1}  # the data's sizes: unknown before loading
    for rule in (check_vae_params, check_schedule):
        names = inspect.signature(rule).parameters
        if name not in names or name in data:
            continue
        args = {**{k: context[k] for k in names if k in context}, **data, name: value}
        if all(k in args for k in names):
            rule(**{k: args[k] for k in names})
