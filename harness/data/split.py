"""The Split value produced by the protocol, and its on-disk cache (one .npz per fingerprint)."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

log = logging.getLogger(__name__)

BLOCKS = ("train", "val_tr", "val_te", "test_tr", "test_te")
_ID_FIELDS = ("item_ids", "train_users", "val_users", "test_users")


def _ids(values: np.ndarray) -> np.ndarray:
    # object arrays (string ids) cannot go into an .npz without pickle: store them as str
    values = np.asarray(values)
    return values.astype(str) if values.dtype == object else values


def _csr(rows: np.ndarray, cols: np.ndarray, n_rows: int, n_cols: int) -> sp.csr_matrix:
    """Binary float32 CSR from (row, col) pairs already sorted by row then column."""
    indptr = np.r_[0, np.cumsum(np.bincount(rows, minlength=n_rows))].astype(np.int64)
    data = np.ones(cols.size, dtype=np.float32)
    return sp.csr_matrix((data, cols.astype(np.int32), indptr), shape=(n_rows, n_cols))


@dataclass(frozen=True, eq=False)
class Split:
    """Binary CSR blocks of one protocol run; rows follow the *_users arrays, columns item_ids.

    Attributes:
        train: training users x items.
        val_tr, val_te: validation users' fold-in (model input) and held-out (truth) parts.
        test_tr, test_te: the same for test users.
        item_ids: original item id of each column.
        train_users, val_users, test_users: original user id of each row of the blocks.
        fingerprint: sha256 hex of the data hash and the protocol params.
        params: the normalised protocol parameters.
        from_cache: True when loaded from the cache (ignored by ``==``).
    """

    train: sp.csr_matrix
    val_tr: sp.csr_matrix
    val_te: sp.csr_matrix
    test_tr: sp.csr_matrix
    test_te: sp.csr_matrix
    item_ids: np.ndarray
    train_users: np.ndarray
    val_users: np.ndarray
    test_users: np.ndarray
    fingerprint: str
    params: dict[str, Any]
    from_cache: bool = field(default=False)

    @property
    def n_items(self) -> int:
        return int(self.train.shape[1])

    @property
    def n_train_users(self) -> int:
        return int(self.train.shape[0])

    def __eq__(self, other: object) -> bool:
        """Same fingerprint, ids and matrices (``from_cache`` is ignored)."""
        if not isinstance(other, Split):
            return NotImplemented
        return (
            self.fingerprint == other.fingerprint
            and self.params == other.params
            and all(np.array_equal(getattr(self, f), getattr(other, f)) for f in _ID_FIELDS)
            and all(
                getattr(self, b).shape == getattr(other, b).shape
                and (getattr(self, b) != getattr(other, b)).nnz == 0
                for b in BLOCKS
            )
        )

    def __hash__(self) -> int:
        return hash(self.fingerprint)

    def summary(self) -> str:
        """Readable multi-line description: users, positives and density per block."""
        p = self.params
        lines = [
            f"Split {self.fingerprint[:12]} ({p['kind']} generalisation, rating > "
            f"{p['threshold']}, seed {p['seed']}{', from cache' if self.from_cache else ''})",
            f"items: {self.n_items:,}",
            f"{'block':<8}{'users':>10}{'positives':>13}{'per user':>10}{'density':>10}",
        ]
        for name in BLOCKS:
            m = getattr(self, name)
            density = m.nnz / max(m.shape[0] * m.shape[1], 1)
            lines.append(
                f"{name:<8}{m.shape[0]:>10,}{m.nnz:>13,}{m.nnz / max(m.shape[0], 1):>10.1f}"
                f"{density:>10.3%}"
            )
        return "\n".join(lines)

    @classmethod
    def from_pairs(
        cls,
        *,
        u: np.ndarray,
        col: np.ndarray,
        in_train: np.ndarray,
        heldout: np.ndarray,
        role: np.ndarray,
        train_users: np.ndarray,
        user_ids: np.ndarray,
        item_ids: np.ndarray,
        fingerprint: str,
        params: dict[str, Any],
    ) -> Split:
        """Assemble the blocks from positive pairs (user code, column) sorted by user/column.

        ``role`` maps user code -> 0 train, 1 validation, 2 test. Evaluation users left with
        no held-out pair are dropped (logged).
        """
        n_items = int(item_ids.size)
        blocks: dict[str, sp.csr_matrix] = {}
        rows_of = np.full(role.size, -1, dtype=np.int64)
        rows_of[train_users] = np.arange(train_users.size)
        sel = in_train & (rows_of[u] >= 0)
        blocks["train"] = _csr(rows_of[u[sel]], col[sel], train_users.size, n_items)
        users: dict[str, np.ndarray] = {"train": train_users}
        for prefix, r in (("val", 1), ("test", 2)):
            mine = role[u] == r
            has_heldout = np.zeros(role.size, dtype=bool)
            has_heldout[u[mine & heldout]] = True
            dropped = np.count_nonzero((role == r) & ~has_heldout)
            if dropped:
                log.warning(
                    "%d %s user(s) have no held-out item on the item axis and were dropped",
                    dropped,
                    prefix,
                )
            codes = np.flatnonzero((role == r) & has_heldout)
            rows_of[:] = -1
            rows_of[codes] = np.arange(codes.size)
            for suffix, part in (("tr", mine & ~heldout), ("te", mine & heldout)):
                part &= rows_of[u] >= 0
                blocks[f"{prefix}_{suffix}"] = _csr(
                    rows_of[u[part]], col[part], codes.size, n_items
                )
            users[prefix] = codes
        return cls(
            **blocks,
            item_ids=_ids(item_ids),
            train_users=_ids(user_ids[users["train"]]),
            val_users=_ids(user_ids[users["val"]]),
            test_users=_ids(user_ids[users["test"]]),
            fingerprint=fingerprint,
            params=dict(params),
        )


def _checksum(arrays: dict[str, np.ndarray]) -> str:
    """sha256 over every array's name, dtype, shape and bytes (in name order)."""
    digest = hashlib.sha256()
    for name in sorted(arrays):
        value = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}|{value.dtype.str}|{value.shape}|".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def save_cached(split: Split, path: Path) -> None:
    """Write ``split`` to ``path`` atomically: a temp file in the same directory, then
    os.replace, so a reader never sees half a file and a crash leaves no partial cache.

    The file holds its fingerprint and a sha256 of its arrays, checked by `load_cached`.
    """
    from harness.outputs import write_bytes

    arrays: dict[str, np.ndarray] = {f: getattr(split, f) for f in _ID_FIELDS}
    for name in BLOCKS:
        m = getattr(split, name)
        arrays[f"{name}_indptr"], arrays[f"{name}_indices"] = m.indptr, m.indices
        arrays[f"{name}_shape"] = np.asarray(m.shape, dtype=np.int64)
    meta = {"fingerprint": split.fingerprint, "params": split.params}
    meta["checksum"] = _checksum(arrays)
    arrays["meta"] = np.asarray(json.dumps(meta, sort_keys=True))
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    write_bytes(path, buffer.getvalue())  # temp file + fsync + rename, the user's umask


def load_cached(path: Path, fingerprint: str | None = None) -> Split | None:
    """Read a split written by save_cached; None (with a warning) if it is unreadable, empty,
    fails its checksum, or holds another fingerprint than ``fingerprint`` (then the caller
    rebuilds it)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {name: z[name] for name in z.files}
        meta = json.loads(str(arrays.pop("meta")))
        stored = meta.pop("checksum", None)
        if stored is None:
            raise ValueError("no checksum (written by an older version)")
        if _checksum(arrays) != stored:
            raise ValueError("checksum mismatch: the arrays were changed after writing")
        if fingerprint is not None and meta.get("fingerprint") != fingerprint:
            raise ValueError(f"it holds split {str(meta.get('fingerprint'))[:12]}")
        blocks = {}
        for name in BLOCKS:
            indices = arrays[f"{name}_indices"]
            data = np.ones(indices.size, dtype=np.float32)
            shape = tuple(int(s) for s in arrays[f"{name}_shape"])
            blocks[name] = sp.csr_matrix((data, indices, arrays[f"{name}_indptr"]), shape=shape)
        ids = {f: arrays[f] for f in _ID_FIELDS}
        split = Split(**blocks, **ids, **meta, from_cache=True)
    except (OSError, EOFError, KeyError, TypeError, ValueError, zipfile.BadZipFile) as exc:
        log.warning("ignoring unusable cached split %s (%s); rebuilding it", path, exc)
        return None
    return split
