"""Per-user ranking metrics (see metrics.py)."""

from harness.evaluation.metrics import (
    catalogue_coverage,
    evaluate_all,
    hit_rate_at_k,
    map_at_k,
    ndcg_at_k,
    precision_at_k,
    recall_at_k,
    standard_recall_at_k,
    top_k_items,
)

__all__ = [
    "catalogue_coverage",
    "evaluate_all",
    "hit_rate_at_k",
    "map_at_k",
    "ndcg_at_k",
    "precision_at_k",
    "recall_at_k",
    "standard_recall_at_k",
    "top_k_items",
]
