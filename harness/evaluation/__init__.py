"""Per-user ranking metrics (see metrics.py)."""

from harness.evaluation.metrics import ndcg_at_k, top_k_items

__all__ = ["ndcg_at_k", "top_k_items"]
