"""Training-history figure (a free function: models never plot as a side effect)."""

from __future__ import annotations

from matplotlib.figure import Figure


def plot_training_history(
    history: dict[str, list[float]], *, k: int = 100, fig: Figure | None = None
) -> Figure:
    """Loss (train and validation) per epoch beside validation NDCG@k per epoch.

    Draws into ``fig`` when given (``display_metrics`` passes a new pyplot figure);
    otherwise on a ``matplotlib.figure.Figure`` that touches no pyplot state and is never
    shown (save it with ``fig.savefig``). Empty histories give empty axes.
    """
    if fig is None:
        fig = Figure(figsize=(12, 4.5))
    fig.set_layout_engine("constrained")
    loss_ax, ndcg_ax = fig.subplots(1, 2)
    epochs = range(len(history.get("loss", [])))
    loss_ax.plot(epochs, history.get("loss", []), label="train")
    loss_ax.plot(epochs, history.get("val_loss", []), label="validation")
    loss_ax.set(xlabel="epoch", ylabel="loss", title="Negative ELBO per epoch")
    loss_ax.legend(loc="upper right")
    ndcg_ax.plot(range(len(history.get("ndcg", []))), history.get("ndcg", []), color="C3")
    ndcg_ax.set(xlabel="epoch", ylabel=f"NDCG@{k}", title="Validation NDCG per epoch")
    return fig
