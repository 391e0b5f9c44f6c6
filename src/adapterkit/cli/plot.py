"""The training-curve PNG (loss per logged step, eval metric per epoch)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def plot_training_curve(history: list[dict], path: str | Path, metric: str | None = None) -> Path:
    """`history`: dicts with `step` and `loss` (training) or `epoch` and eval metrics. Written atomically."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    train = [h for h in history if "loss" in h]
    evals = [h for h in history if metric and metric in h]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    if train:
        ax.plot([h["step"] for h in train], [h["loss"] for h in train], color="tab:blue", label="training loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    if evals:
        ax2 = ax.twinx()
        ax2.plot([h["step"] for h in evals], [h[metric] for h in evals], "o-", color="tab:orange",
                 label=f"dev {metric}")
        ax2.set_ylabel(f"dev {metric}")
        ax2.legend(loc="upper right")
    ax.legend(loc="upper left")
    ax.set_title("adapterkit training")
    fig.tight_layout()
    fd, tmp = tempfile.mkstemp(suffix=".png", dir=path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, format="png")
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
