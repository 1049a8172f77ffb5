"""``ModelSpec``: what the stages need to know about a model (see ``harness.models.registry``).

Each model module declares its own ``MODEL_SPECS = (ModelSpec(...), ...)``; the registry
collects them, so a new model is one module (plus its two config files).
"""

from __future__ import annotations

from dataclasses import dataclass

KERAS_FORMATS = (".keras",)
NPZ_FORMATS = (".npz",)


@dataclass(frozen=True)
class ModelSpec:
    """What the stages need to know about a model.

    Attributes:
        name: the registry name (``conf/model/<name>.yaml``, ``models=[...]``).
        cls: the model class.
        iterative: trains in epochs (per-epoch NDCG, pruning, early stopping).
        seeded: results depend on the training seed (the benchmark runs n_seeds fits).
        has_beta: has a KL weight (optimal-beta figures and Liang et al.'s procedure).
        formats: file suffixes ``save()`` writes (the first is the one the harness uses).
        extra: the pip extra that provides an optional dependency (None: none needed).
        module: the importable module the model needs (checked by
            ``registry.check_available``; None: nothing beyond the harness's dependencies).
    """

    name: str
    cls: type
    iterative: bool
    seeded: bool
    has_beta: bool
    formats: tuple[str, ...]
    extra: str | None = None
    module: str | None = None
