"""A study's identity: a hash of everything that shapes a trial's value.

Two runs may share a study only when their trials are comparable: same model, same split
(the split fingerprint covers the dataset and every protocol parameter), same fixed model
parameters (n_epochs, k, batch size, ...) and the same search space (compared as parsed
distributions, so `interval(0.1,0.5)` and `interval(0.1, 0.5)` are equal). Options that
change nothing about a trial's value (verbose, save_path) are left out; so is the sweep seed
(it changes which points are drawn, not what a point is worth).

`study_identity` builds the record, `identity_mismatch` compares a stored record with the
current one and returns the error to raise, naming every differing key.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from optuna.distributions import distribution_to_json

from harness.sweep.records import jsonable
from harness.sweep.settings import SweepConfigError

IDENTITY_ATTR = "identity"
# Run options of the models that do not change a trial's value.
NOT_SHAPING = frozenset({"name", "verbose", "save_path"})


def study_identity(
    *,
    model_name: str,
    split_fingerprint: str,
    fixed_params: Mapping[str, Any],
    distributions: Mapping[str, Any],
) -> dict[str, Any]:
    """The identity record of a study: its components (flat, `key -> value`) and their hash.

    Args:
        model_name: The model swept.
        split_fingerprint: The split's fingerprint (dataset and protocol).
        fixed_params: Parameters every trial gets (model config + fixed search-space values).
        distributions: Searched parameter -> Optuna distribution.

    Returns:
        {"hash": sha256 hex, "components": {"model": .., "split_fingerprint": ..,
        "model.<param>": value, "search_space.<param>": distribution JSON}}.
    """
    components: dict[str, Any] = {"model": model_name, "split_fingerprint": split_fingerprint}
    for key, value in sorted(fixed_params.items()):
        if key not in NOT_SHAPING and key not in distributions:
            components[f"model.{key}"] = jsonable(value)
    for key, dist in sorted(distributions.items()):
        components[f"search_space.{key}"] = json.loads(distribution_to_json(dist))
    return {"hash": config_hash(components), "components": components}


def config_hash(value: Any) -> str:
    """sha256 hex of a JSON-able value, independent of dict order."""
    text = json.dumps(jsonable(value), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def differing_keys(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, tuple]:
    """Component key -> (value in `old`, value in `new`) for every key that differs.

    A key missing on one side shows as "<unset>" there.
    """
    out = {}
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key, "<unset>"), new.get(key, "<unset>")
        if a != b:
            out[key] = (a, b)
    return out


def identity_mismatch(
    study_name: str, stored: Mapping[str, Any] | None, current: Mapping[str, Any]
) -> SweepConfigError | None:
    """The error for resuming `study_name` (stored identity) with `current`; None if equal.

    A study without a stored identity (made before identities existed) is accepted: the
    caller stores the current one, and it is checked from then on.
    """
    if not stored or stored.get("hash") == current["hash"]:
        return None
    diff = differing_keys(stored.get("components") or {}, current["components"])
    shown = "; ".join(
        f"{key}: {_short(a)} in the study, {_short(b)} now" for key, (a, b) in diff.items()
    )
    return SweepConfigError(
        f"study {study_name!r} holds trials of another configuration ({shown or 'hash differs'}). "
        "Trials of different configurations are never mixed: rerun with the study's values to "
        "resume it, or start a new study by naming it, e.g. sweep.study_name=<new name> "
        "(or use another results_dir / sweep.storage)."
    )


def _short(value: Any) -> str:
    if isinstance(value, dict) and "name" in value and "attributes" in value:
        # distribution JSON -> FloatDistribution(low=.., high=.., log=..)
        attrs = ", ".join(
            f"{k}={v}" for k, v in value["attributes"].items() if v not in (None, False)
        )
        return f"{value['name']}({attrs})"
    return json.dumps(value, default=str)
