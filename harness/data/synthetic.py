"""Seeded synthetic interactions with planted low-rank structure.

Model (a non-negative rank-``rank`` factorisation, like a topic model):

* every user has a latent factor ``theta_u`` on the simplex (Dirichlet, concentrated, so a
  user likes few "topics");
* every item has a latent factor ``psi_j`` (Dirichlet over topics) and a Zipf popularity
  ``pop_j`` (``popularity_skew`` is the Zipf exponent, item order shuffled);
* a user's preference over items is ``P(j | u) = (1 - noise) * sum_z theta_uz phi_zj +
  noise / n_items`` with ``phi_zj`` proportional to ``pop_j * psi_jz``;
* the user's positives are ``n_u`` distinct items drawn from ``P(. | u)`` *without
  replacement* (successive sampling: draw with replacement, keep first occurrences).
  ``n_u`` is log-normal (heavy-tailed like MovieLens), at least ``min_user_positives``.

Why a mixture rather than a dense softmax over ``U @ V.T``: the mixture can be sampled in
O(positives * log(items)) with two ``searchsorted`` calls, never materialising the
users x items matrix, which is what makes the ML-20M shape (136,677 x 20,108, ~10M
positives) take seconds instead of minutes. It is still exactly low rank, so a factor model
(SVD, VAE) that recovers the topics beats popularity by a clear margin.

Positives get rating 4 or 5; on top, ``negative_ratio`` times as many low-rated (1-3)
interactions are drawn from popularity alone (items the user saw but disliked), so the
protocol's rating threshold matters. Ids are int32 ``0..n-1``.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from harness.errors import DataError

#: Users per generation chunk. Fixed (not an option) so the output for a seed never depends
#: on memory settings; bounds the working set to a few hundred MB at the ML-20M shape.
CHUNK_USERS = 16_384
_TIME_RANGE = (789_652_009, 1_427_784_002)  # ML-20M's timestamp span, for realism only


def _user_counts(
    rng: np.random.Generator, n_users: int, target: int, low: int, high: int
) -> np.ndarray:
    """Heavy-tailed per-user positive counts in [low, high] summing to ``target``."""
    raw = rng.lognormal(0.0, 1.0, n_users)
    lo, hi = 0.0, 2.0 * target / raw.sum() * n_users + high  # bisection bracket on the scale

    def total(scale: float) -> int:
        return int(np.clip(np.rint(raw * scale), low, high).sum())

    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if total(mid) < target else (lo, mid)
    counts = np.clip(np.rint(raw * hi), low, high).astype(np.int64)
    diff = target - int(counts.sum())  # rounding leftovers: +-1 on random users with room
    room = np.flatnonzero(counts > low if diff < 0 else counts < high)
    counts[rng.choice(room, size=min(abs(diff), room.size), replace=False)] += np.sign(diff)
    return counts


def _sample_without_replacement(
    rng: np.random.Generator,
    need: np.ndarray,
    theta_cdf: np.ndarray,
    topic_cdf: np.ndarray,
    noise: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``need[u]`` distinct items per (chunk-local) user; return (users, items)."""
    n_topics, n_items = topic_cdf.shape
    # Offsetting row i of a cdf by i makes one flat increasing array: a single searchsorted
    # then samples every row's own categorical at once.
    flat_theta = (theta_cdf + np.arange(len(need))[:, None]).ravel()
    flat_topic = (topic_cdf + np.arange(n_topics)[:, None]).ravel()
    keys: list[np.ndarray] = []
    users, deficit, factor = np.arange(len(need)), need.copy(), 1.25
    while users.size:
        rep = np.repeat(users, np.ceil(deficit * factor).astype(np.int64) + 2)
        topic = np.searchsorted(flat_theta, rep + rng.random(rep.size), side="right")
        topic = np.minimum(topic - rep * n_topics, n_topics - 1)
        item = np.searchsorted(flat_topic, topic + rng.random(rep.size), side="right")
        item = np.minimum(item - topic * n_items, n_items - 1)
        uniform = rng.random(rep.size) < noise
        item[uniform] = rng.integers(0, n_items, int(uniform.sum()))
        keys.append(rep * n_items + item)
        uniq, first = np.unique(np.concatenate(keys), return_index=True)
        have = np.bincount(uniq // n_items, minlength=len(need))
        users = np.flatnonzero(have < need)
        deficit, factor = need[users] - have[users], factor * 2  # heavy users: grow fast
    owner = uniq // n_items
    order = np.lexsort((first, owner))  # per user, in order of first draw
    owner, uniq = owner[order], uniq[order]
    start = np.concatenate(([0], np.cumsum(have)[:-1]))
    keep = np.arange(uniq.size) - start[owner] < need[owner]
    return owner[keep], uniq[keep] % n_items


def generate_synthetic(
    *,
    n_users: int = 2000,
    n_items: int = 1000,
    density: float | None = None,
    n_positives: int | None = None,
    rank: int = 10,
    seed: int = 0,
    popularity_skew: float = 1.0,
    user_concentration: float = 0.05,
    item_concentration: float = 0.05,
    noise: float = 0.05,
    negative_ratio: float = 0.25,
    min_user_positives: int = 5,
    progress: bool = False,
) -> pd.DataFrame:
    """Generate interactions with planted low-rank structure (see the module docstring).

    Args:
        n_users: Number of users (ids ``0..n_users-1``, all present).
        n_items: Number of items (ids ``0..n_items-1``; rare ones may have no interaction).
        density: Target positives / (n_users * n_items). Default 0.02 when neither this nor
            ``n_positives`` is given; giving both is an error.
        n_positives: Exact number of positives (rating >= 4) instead of ``density``.
        rank: Number of latent topics (the planted rank).
        seed: Seed; the same arguments and seed give the identical frame.
        popularity_skew: Zipf exponent of item popularity (0 = no popularity bias).
        user_concentration: Dirichlet concentration of user factors (smaller = users
            focus on fewer topics = stronger structure).
        item_concentration: Dirichlet concentration of item factors.
        noise: Share of each user's preference spread uniformly over all items.
        negative_ratio: Low-rated (1-3) interactions per positive, drawn from popularity;
            the realised count is a little lower (duplicates and positives are dropped).
        min_user_positives: Minimum positives per user.
        progress: Show a progress bar over user chunks.

    Returns:
        Frame sorted by (user, item) with user, item (int32), rating (float32: 4/5 for
        positives, 1/2/3 for negatives), timestamp (int64, random in ML-20M's span).

    Raises:
        ValueError: Invalid sizes, or more positives requested than fit (each user can have
            at most ``max(min_user_positives, n_items // 5)`` of them).
    """
    if n_users < 1 or n_items < 1 or rank < 1:
        raise DataError("n_users, n_items and rank must be >= 1. Fix: check dataset.options.")
    if density is not None and n_positives is not None:
        raise DataError("Give density or n_positives, not both. Fix: set one of them to null.")
    if n_positives is None:
        n_positives = round((0.02 if density is None else density) * n_users * n_items)
    high = min(n_items, max(min_user_positives, n_items // 5))
    low = min(min_user_positives, high)
    if not n_users * low <= n_positives <= n_users * high:
        raise DataError(
            f"{n_positives} positives do not fit {n_users} users with {low}..{high} each. "
            "Fix: change density/n_positives, n_items or min_user_positives."
        )
    seeds = np.random.SeedSequence(seed).spawn(1 + math.ceil(n_users / CHUNK_USERS))
    rng = np.random.default_rng(seeds[0])
    counts = _user_counts(rng, n_users, n_positives, low, high)
    pop = (rng.permutation(n_items) + 1.0) ** -popularity_skew
    psi = rng.dirichlet(np.full(rank, item_concentration), size=n_items)
    phi = pop[None, :] * psi.T + 1e-300  # + tiny: no all-zero topic row
    topic_cdf = np.cumsum(phi / phi.sum(1, keepdims=True), axis=1)
    theta = rng.dirichlet(np.full(rank, user_concentration), size=n_users)
    theta_cdf = np.cumsum(theta, axis=1)
    pop_cdf = np.cumsum(pop / pop.sum())
    for cdf in (topic_cdf, theta_cdf, pop_cdf[None, :]):
        cdf[:, -1] = 1.0  # exact end: row offsets i + 1.0 stay exact, rows never overlap

    parts = []
    for c, chunk_seed in enumerate(
        tqdm(seeds[1:], desc="synthetic", disable=None if progress else True)
    ):
        crng = np.random.default_rng(chunk_seed)
        lo, hi = c * CHUNK_USERS, min((c + 1) * CHUNK_USERS, n_users)
        need = counts[lo:hi]
        pu, pi = _sample_without_replacement(crng, need, theta_cdf[lo:hi], topic_cdf, noise)
        pos_keys = pu * n_items + pi  # sorted: pu ascending, then order within user
        n_neg = crng.binomial(need, negative_ratio)
        nu = np.repeat(np.arange(hi - lo), n_neg)
        ni = np.minimum(np.searchsorted(pop_cdf, crng.random(nu.size), side="right"), n_items - 1)
        neg_keys = np.unique(nu * n_items + ni)
        neg_keys = neg_keys[~np.isin(neg_keys, pos_keys)]
        keys = np.concatenate([pos_keys, neg_keys])
        rating = np.concatenate(
            [
                crng.choice([4.0, 5.0], pos_keys.size, p=[0.4, 0.6]),
                crng.integers(1, 4, neg_keys.size),
            ]
        ).astype(np.float32)
        order = np.argsort(keys, kind="stable")
        parts.append(
            pd.DataFrame(
                {
                    "user": (keys[order] // n_items + lo).astype(np.int32),
                    "item": (keys[order] % n_items).astype(np.int32),
                    "rating": rating[order],
                    "timestamp": crng.integers(*_TIME_RANGE, keys.size, dtype=np.int64),
                }
            )
        )
    return pd.concat(parts, ignore_index=True)
