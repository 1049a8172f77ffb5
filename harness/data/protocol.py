"""The evaluation protocol: interactions -> binary positives -> a cached, fingerprinted Split.

Strong generalisation (Liang et al. 2018, the default): whole users are held out for
validation and test and never seen in training; each held-out user's items are split into a
fold-in part (the model's input) and a held-out part (the truth). Weak generalisation
(``kind="weak"``): the evaluation users stay in the training matrix with their fold-in items,
only their held-out items are removed from it.

Filtering is applied once, items first then users (Liang et al.'s ``filter_triplets``), so a
user may end with fewer than ``min_user_positives`` positives on the item axis; iterating to a
fixed point would change the published protocol.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.data.split import Split, load_cached, save_cached
from harness.errors import DataError, DataTypeError

__all__ = ["Split", "make_split", "split_from_config"]

log = logging.getLogger(__name__)

# Bump when the algorithm changes so that old cached splits are not reused.
PROTOCOL_VERSION = 1
_REQUIRED = ("user", "item", "rating")
DEFAULT_HELDOUT_USERS = 100  # n_test_users when neither it nor folds is given
MIN_FOLD_USERS = 20  # smallest test fold protocol.folds may make


def _n_users(spec: int | float, n: int, name: str) -> int:
    """Resolve an absolute (int) or fractional (float in (0, 1)) number of users."""
    if isinstance(spec, bool) or not isinstance(spec, int | float | np.integer | np.floating):
        raise DataTypeError(f"{name} must be an int or a float in (0, 1), got {spec!r}")
    if isinstance(spec, float | np.floating) and 0 < spec < 1:
        return int(round(spec * n))
    if float(spec) != int(spec) or spec < 0:
        raise DataError(
            f"{name}={spec!r} is neither a count >= 0 nor a fraction in (0, 1): "
            f"pass e.g. {name}=100 or {name}=0.1"
        )
    return int(spec)


def _normalised_params(**p: Any) -> dict[str, Any]:
    if p["kind"] not in ("strong", "weak"):
        raise DataError(f"unknown kind {p['kind']!r}: use kind='strong' or kind='weak'")
    if not 0 < float(p["heldout_fraction"]) < 1:
        raise DataError(
            f"heldout_fraction={p['heldout_fraction']!r} must lie strictly between 0 and 1: "
            "pass e.g. heldout_fraction=0.2"
        )
    folds, fold = p.pop("folds", None), p.pop("fold", None)
    if folds is not None:
        if isinstance(folds, bool) or not isinstance(folds, int | np.integer) or folds < 2:
            raise DataError(
                f"protocol.folds={folds!r} must be an integer >= 2 (K disjoint test folds of "
                "users), e.g. protocol.folds=5; or null for one test set of n_test_users"
            )
        if p["n_test_users"] is not None:
            raise DataError(
                f"protocol.folds={folds} and protocol.n_test_users={p['n_test_users']!r} are "
                "both set: with folds every user is a test user once, in the fold's share; "
                "drop protocol.n_test_users (or protocol.folds)"
            )
        if fold is not None and (
            isinstance(fold, bool)
            or not isinstance(fold, int | np.integer)
            or not 0 <= fold < folds
        ):
            raise DataError(
                f"protocol.fold={fold!r} must be an integer in [0, protocol.folds={folds}) "
                "(or null: the harness runs every fold)"
            )
        p["folds"], p["fold"] = int(folds), 0 if fold is None else int(fold)
        del p["n_test_users"]
    elif fold is not None:
        raise DataError(
            f"protocol.fold={fold!r} is set without protocol.folds: set protocol.folds=K too"
        )
    elif p["n_test_users"] is None:
        p["n_test_users"] = DEFAULT_HELDOUT_USERS
    for name in ("n_val_users", "n_test_users"):
        if name not in p:
            continue
        _n_users(p[name], 1, name)  # type check only; the count is resolved after filtering
        p[name] = float(p[name]) if 0 < float(p[name]) < 1 else int(p[name])
    for name in ("min_user_positives", "min_item_positives", "seed"):
        p[name] = int(p[name])
    p["threshold"] = float(p["threshold"])
    p["heldout_fraction"] = float(p["heldout_fraction"])
    return p


def _data_hash(interactions: pd.DataFrame) -> str:
    """Order-independent hash of (user, item, rating): sorted row hashes, sha256'd."""
    rows = pd.util.hash_pandas_object(interactions[list(_REQUIRED)], index=False).to_numpy()
    return hashlib.sha256(np.sort(rows).tobytes()).hexdigest()


def _fingerprint(data_hash: str, params: Mapping[str, Any]) -> str:
    payload = json.dumps(
        {"data": data_hash, "params": dict(params), "version": PROTOCOL_VERSION}, sort_keys=True
    )
    return hashlib.sha256(payload.encode()).hexdigest()


def _positives(df: pd.DataFrame, p: Mapping[str, Any]):
    """Unique (user code, item code) positive pairs after min-count filtering, sorted by user
    then item, plus the code -> original id arrays."""
    ratings = df["rating"].to_numpy()
    if len(df) and not (ratings > p["threshold"]).any() and (ratings.max() <= p["threshold"]):
        raise DataError(
            f"no interactions left after filtering: no rating is above protocol.threshold="
            f"{p['threshold']} (the highest is {float(ratings.max()):g}, among {len(df):,} rows; "
            "positives are ratings > threshold): lower the threshold below your scale's top, or "
            "for implicit data (clicks, every rating 1.0) set protocol.threshold=0.5."
        )
    pos = df.loc[ratings > p["threshold"], ["user", "item"]]
    users, user_ids = pd.factorize(pos["user"], sort=True)
    items, item_ids = pd.factorize(pos["item"], sort=True)
    keys = np.unique(users.astype(np.int64) * max(len(item_ids), 1) + items)
    u, i = np.divmod(keys, max(len(item_ids), 1))
    if p["min_item_positives"] > 0:
        keep_items = np.bincount(i, minlength=len(item_ids)) >= p["min_item_positives"]
        u, i = u[keep_items[i]], i[keep_items[i]]
    if p["min_user_positives"] > 0:
        keep_users = np.bincount(u, minlength=len(user_ids)) >= p["min_user_positives"]
        u, i = u[keep_users[u]], i[keep_users[u]]
    if u.size == 0:
        raise DataError(
            f"no interactions left after filtering: {len(pos):,} ratings > "
            f"threshold={p['threshold']} among {len(df):,}, but no user/item pair survives "
            f"min_item_positives={p['min_item_positives']} then min_user_positives="
            f"{p['min_user_positives']}: lower the threshold (protocol.threshold=0.5 for "
            "implicit data, where every rating is 1.0) or the minimum counts "
            "(protocol.min_user_positives, protocol.min_item_positives)"
        )
    return u, i, np.asarray(user_ids), np.asarray(item_ids)


def fold_of_users(n_users: int, folds: int, rng: np.random.Generator) -> np.ndarray:
    """Fold id (0..folds-1) of each of ``n_users`` users, in a random order: sizes differ by
    at most one."""
    return rng.permutation(np.arange(n_users) % folds)


def _choose_fold_users(u: np.ndarray, p: Mapping[str, Any], rng: np.random.Generator):
    """Test users = fold ``p["fold"]`` of ``p["folds"]``; validation users drawn from the rest
    (the same permutation for every fold, so the folds partition the users)."""
    present = np.unique(u)
    folds = p["folds"]
    if present.size // folds < MIN_FOLD_USERS:
        raise DataError(
            f"protocol.folds={folds}: {present.size} users have >= {p['min_user_positives']} "
            f"positives, {present.size // folds} per fold, below the minimum of "
            f"{MIN_FOLD_USERS} test users per fold; use protocol.folds <= "
            f"{max(present.size // MIN_FOLD_USERS, 1)}"
        )
    fold_id = fold_of_users(present.size, folds, rng)
    fold = p["fold"]
    test = present[fold_id == fold]
    rest = present[fold_id != fold]
    n_val = _n_users(p["n_val_users"], present.size, "n_val_users")
    if n_val >= rest.size:
        raise DataError(
            f"{n_val} validation users requested but only {rest.size} users are outside test "
            f"fold {fold} of protocol.folds={folds}: lower n_val_users or protocol.folds"
        )
    val = rng.permutation(rest)[:n_val]
    return np.sort(val), np.sort(test)


def _choose_eval_users(u: np.ndarray, p: Mapping[str, Any], rng: np.random.Generator):
    if p.get("folds") is not None:
        return _choose_fold_users(u, p, rng)
    present = np.unique(u)
    n_val = _n_users(p["n_val_users"], present.size, "n_val_users")
    n_test = _n_users(p["n_test_users"], present.size, "n_test_users")
    if n_val + n_test >= present.size:
        raise DataError(
            f"{n_val} validation + {n_test} test users requested but only {present.size} users "
            f"have >= {p['min_user_positives']} positives, and at least one must remain for "
            "training: lower n_val_users/n_test_users (or use fractions such as 0.1)"
        )
    perm = rng.permutation(present)
    return np.sort(perm[:n_val]), np.sort(perm[n_val : n_val + n_test])


def _heldout_mask(u: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Mark floor(fraction * n_u) random items of each user as held out (at least one, and
    at least one fold-in item when the user has two or more). ``u`` must be grouped."""
    if u.size == 0:
        return np.zeros(0, dtype=bool)
    order = np.lexsort((rng.random(u.size), u))
    starts = np.flatnonzero(np.r_[True, u[1:] != u[:-1]])
    counts = np.diff(np.r_[starts, u.size])
    within = np.arange(u.size) - np.repeat(starts, counts)
    # the epsilon keeps e.g. 0.2 * 15 = 3.0000000000000004 or 0.7 * 10 from flooring down
    n_te = np.maximum(np.floor(fraction * counts + 1e-9).astype(np.int64), 1)
    n_te = np.where(counts >= 2, np.minimum(n_te, counts - 1), n_te)
    mask = np.empty(u.size, dtype=bool)
    mask[order] = within < np.repeat(n_te, counts)
    return mask


def make_split(
    interactions: pd.DataFrame,
    *,
    kind: str = "strong",
    threshold: float = 3.5,
    min_user_positives: int = 5,
    min_item_positives: int = 0,
    n_val_users: int | float = 100,
    n_test_users: int | float | None = None,
    heldout_fraction: float = 0.2,
    seed: int = 98765,
    folds: int | None = None,
    fold: int | None = None,
    cache_dir: str | Path | None = None,
) -> Split:
    """Binarise, filter and split interactions under the strong (or weak) protocol.

    Args:
        interactions: DataFrame with columns user, item, rating (timestamp is ignored).
            Duplicate (user, item) pairs count once; any rating above the threshold makes
            the pair positive.
        kind: "strong" (held-out users absent from training) or "weak" (they train on
            their fold-in items).
        threshold: ratings strictly greater are positives; the rest are dropped.
        min_user_positives: users with fewer positives are dropped (after the item filter).
        min_item_positives: items with fewer positives are dropped first.
        n_val_users: validation users, an int count or a float fraction in (0, 1).
        n_test_users: test users, likewise; disjoint from validation and training users.
            None = 100, or the fold's users with ``folds``.
        heldout_fraction: share of each evaluation user's items that become the truth,
            floor(fraction * n), at least 1 and at most n - 1 when n >= 2.
        seed: protocol seed for both the user choice and the fold-in/held-out split.
        folds: user-level cross-validation: the eligible users are split at random (protocol
            seed) into ``folds`` disjoint test folds of near-equal size; None = one test set.
        fold: which fold is this split's test set (0 .. folds - 1; None = 0). Validation
            users are drawn from the other folds' users, the rest train. Over the folds
            every user is a test user exactly once.
        cache_dir: if given, the split is stored in and reloaded from
            ``cache_dir/splits/<fingerprint>.npz``.

    Returns:
        The Split. The item axis holds only items positive for some training row; an
        evaluation user left with no held-out item on that axis is dropped (logged), so
        val/test may hold slightly fewer users than requested.

    Raises:
        ValueError: missing columns, bad parameters, nothing left after filtering, or more
            evaluation users requested than exist. Raised before anything is written.
    """
    missing = [c for c in _REQUIRED if c not in interactions.columns]
    if missing:
        raise DataError(
            f"interactions lack column(s) {missing} (have {list(interactions.columns)}): "
            "rename them to user, item, rating (load_interactions does this)"
        )
    params = _normalised_params(
        kind=kind,
        threshold=threshold,
        min_user_positives=min_user_positives,
        min_item_positives=min_item_positives,
        n_val_users=n_val_users,
        n_test_users=n_test_users,
        heldout_fraction=heldout_fraction,
        seed=seed,
        folds=folds,
        fold=fold,
    )
    fingerprint = _fingerprint(_data_hash(interactions), params)
    path = Path(cache_dir) / "splits" / f"{fingerprint}.npz" if cache_dir is not None else None
    if path is not None and path.exists():
        cached = load_cached(path, fingerprint)
        if cached is not None:
            log.info("loaded split %s from cache %s", fingerprint[:12], path)
            return cached
    split = _build(interactions, params, fingerprint)
    if path is not None:
        save_cached(split, path)
        log.info("wrote split %s to cache %s", fingerprint[:12], path)
    return split


def _build(interactions: pd.DataFrame, p: dict[str, Any], fingerprint: str) -> Split:
    u, i, user_ids, item_ids = _positives(interactions, p)
    rng = np.random.default_rng(p["seed"])
    val_users, test_users = _choose_eval_users(u, p, rng)
    role = np.zeros(user_ids.size, dtype=np.int8)  # 0 train, 1 validation, 2 test
    role[val_users], role[test_users] = 1, 2
    is_eval = role[u] > 0
    heldout = np.zeros(u.size, dtype=bool)
    if p["kind"] == "strong":
        in_train = ~is_eval
        on_axis = np.zeros(item_ids.size, dtype=bool)
        on_axis[i[in_train]] = True
        # restrict evaluation users to the item axis *before* splitting, as Liang et al. do
        sel = np.flatnonzero(is_eval & on_axis[i])
        heldout[sel] = _heldout_mask(u[sel], p["heldout_fraction"], rng)
        train_users = np.flatnonzero((role == 0) & (np.bincount(u, minlength=role.size) > 0))
    else:
        sel = np.flatnonzero(is_eval)
        heldout[sel] = _heldout_mask(u[sel], p["heldout_fraction"], rng)
        in_train = ~heldout
        on_axis = np.zeros(item_ids.size, dtype=bool)
        on_axis[i[in_train]] = True
        train_users = np.unique(u)
    axis_items = np.flatnonzero(on_axis)
    column = np.full(item_ids.size, -1, dtype=np.int64)
    column[axis_items] = np.arange(axis_items.size)
    keep = column[i] >= 0
    return Split.from_pairs(
        u=u[keep],
        col=column[i[keep]],
        in_train=in_train[keep],
        heldout=heldout[keep],
        role=role,
        train_users=train_users,
        user_ids=user_ids,
        item_ids=item_ids[axis_items],
        fingerprint=fingerprint,
        params=p,
    )


def split_from_config(
    dataset: Mapping[str, Any], protocol: Mapping[str, Any], cache_dir: str | Path | None
) -> Split:
    """Load ``dataset["source"]`` (default: its ``name``) with its ``options`` and split it
    with the protocol params.

    Args:
        dataset: resolved conf/dataset/<name>.yaml: name (results, studies and reports are
            named after it), source (the reader: ml-100k, file, synthetic, ...; default the
            name), options (kwargs of load_interactions), n_heldout_users.
        protocol: resolved conf/protocol/<kind>.yaml: keyword arguments of make_split.
        cache_dir: split cache root (None: no caching).
    """
    from harness.data.sources import load_interactions  # lazy: sources pulls in downloads

    source = dataset.get("source") or dataset["name"]
    df = load_interactions(source, **dict(dataset.get("options") or {}))
    return make_split(df, **protocol_params(dataset, protocol), cache_dir=cache_dir)


def protocol_params(dataset: Mapping[str, Any], protocol: Mapping[str, Any]) -> dict[str, Any]:
    """``make_split`` keywords from the config: ``n_test_users: null`` means the dataset's
    ``n_heldout_users`` unless ``protocol.folds`` makes the folds the test sets."""
    params = dict(protocol)
    if params.get("n_test_users") is None and params.get("folds") is None:
        params["n_test_users"] = dataset.get("n_heldout_users", DEFAULT_HELDOUT_USERS)
    return params
