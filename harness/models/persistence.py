"""One file per trained model: ``model.save(path)`` and ``load_model(path)``.

Formats (each model's ``ModelSpec.formats``):
    Keras models (StandardVAE, MultVAE, MultDAE, RecVAE): a ``.keras`` file, Keras' own
        format, which ``keras.models.load_model`` opens once ``harness.models`` is imported
        (the networks are registered as serializable). The network's config carries a
        ``recommender`` record (format, class, constructor arguments, history, best epoch and
        NDCG) from which ``load_model`` rebuilds the recommender around the saved weights.
    The others (EASE, Popularity, IALS, RP3beta): a ``.npz`` written by ``numpy.savez`` (no
        pickles) with the arrays ``format`` ("vae-sweep-model/1"), ``class``, ``record``
        (JSON: constructor arguments, n_items, history, best NDCG, fitted state such as
        EASE's chosen lambda) and the fitted weights: ``B`` (EASE, scores = x @ B),
        ``item_counts`` (Popularity), ``item_factors`` (IALS; fold-in users are solved
        again), ``W_data``/``W_indices``/``W_indptr`` (RP3beta's sparse W).

``harness.models.load_model`` (the registry) finds the class by the name in the record;
``load_as`` here rebuilds it, so this module imports no model.

Every file is written to a temporary name in the target folder and renamed into place.
TensorFlow is imported only when a VAE file is loaded.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

FORMAT = "vae-sweep-model/1"


def write_atomically(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path`` (same suffix), then rename."""
    target = Path(path)
    suffix = "".join(target.suffixes[-2:]) if target.name.endswith(".weights.h5") else target.suffix
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.stem}.", suffix=suffix)
    os.close(fd)
    try:
        write(tmp)
        from harness.outputs import give_umask_mode

        give_umask_mode(tmp)  # mkstemp made it 0600: the user's umask decides, as for open()
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def save_network(network, path: str | os.PathLike) -> None:
    """Write a Keras network where Keras itself reads it back, by suffix: ``.keras`` (whole
    model), ``.weights.h5`` (weights), ``.h5``/``.hdf5`` (legacy whole-model HDF5, which
    both ``keras.models.load_model`` and ``Model.load_weights`` read, like the seed's file).
    """
    import logging

    name = str(path)

    def write(tmp: str) -> None:
        if name.endswith(".weights.h5"):
            network.save_weights(tmp, overwrite=True)
            return
        absl = logging.getLogger("absl")  # Keras logs that HDF5 is its legacy format
        level = absl.level
        absl.setLevel(logging.ERROR)
        try:
            network.save(tmp, overwrite=True)
        finally:
            absl.setLevel(level)

    write_atomically(path, write)


def read_record(path: str | os.PathLike) -> dict[str, Any]:
    """The ``recommender`` record of a model file without loading its weights.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a file written by ``model.save``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no model file at {path}: save one with model.save({str(path)!r})")
    hint = (
        "write model files with model.save(path) (.keras for the Keras models, .npz for the others)"
    )
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path} is not a model file of this harness: {hint}")
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        if "config.json" in names:
            config = json.loads(zf.read("config.json"))
            record = (config.get("config") or {}).get("recommender")
        elif "record.npy" in names:
            import numpy as np

            with np.load(path, allow_pickle=False) as data:
                record = json.loads(str(data["record"]))
        else:
            record = None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise ValueError(f"{path} holds no harness model record ({FORMAT}): {hint}")
    return record


def load_as(
    path: str | os.PathLike,
    cls: type,
    *,
    expected: type | str | None = None,
    n_items: int | None = None,
    record: dict[str, Any] | None = None,
):
    """Load a file written by ``model.save(path)`` as an instance of ``cls``.

    ``harness.models.load_model`` (the registry) finds ``cls`` from the file's class name;
    a class's own ``load`` passes itself (and ``expected=cls``). Scores equal the saved
    model's.

    Args:
        path: a ``.keras`` (Keras networks) or ``.npz`` (closed-form and factor models) file.
        cls: the class that rebuilds the model (``cls._from_record(path, record)``).
        expected: a model class (or its class name) the file must hold (None = any).
        n_items: the item count the file must have been trained on (None = any).
        record: the file's record when the caller has read it already.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a model file, or another class / item count than expected (the
            message names both).
    """
    record = read_record(path) if record is None else record
    found = record["class"]
    want = expected.__name__ if isinstance(expected, type) else expected
    if want is not None and want != found:
        raise ValueError(
            f"{path} holds a model of class {found}, not {want}: load it with "
            f"harness.models.load_model(path) or {found}.load(path)"
        )
    if found != cls.__name__:
        raise ValueError(f"{path} holds a model of class {found}, not {cls.__name__}")
    if n_items is not None and int(record["n_items"]) != int(n_items):
        raise ValueError(
            f"{path} holds a {found} model trained on {record['n_items']} items but {n_items} items "
            "were expected: load the model saved for this dataset/split"
        )
    return cls._from_record(Path(path), record)
