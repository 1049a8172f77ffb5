"""Searched parameters that the chosen configuration ignores (a wasted search dimension)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def ineffective_params(fixed: Mapping[str, Any], searched: Iterable[str]) -> list[str]:
    """One message per searched parameter that has no effect given the fixed parameters.

    The VAEs use `beta` only without annealing and `anneal_cap` (and `total_anneal_steps`)
    only with it; searching the ignored one makes TPE model noise.

    Args:
        fixed: The model's fixed parameters (config + fixed search-space values).
        searched: Names of the searched parameters.
    """
    searched = set(searched)
    if "annealing" in searched or "annealing" not in fixed:
        return []  # annealing itself varies (or the model has no such switch): both can matter
    annealing = bool(fixed["annealing"])
    ignored = ("beta",) if annealing else ("anneal_cap", "total_anneal_steps")
    messages = []
    for name in sorted(searched & set(ignored)):
        if annealing:
            fix = (
                "search anneal_cap instead, or set model.annealing=false to train with a "
                "constant beta"
            )
        else:
            fix = "search beta instead, or set model.annealing=true"
        messages.append(
            f"search_space.{name} has no effect with model.annealing={str(annealing).lower()} "
            f"(the model ignores {name}); {fix}."
        )
    return messages
