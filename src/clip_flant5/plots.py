"""Plots of the report: training loss curves, scores against human ratings (the main table's: tables.py).

matplotlib (the `workflow` and `train` extras) is imported when a plot is drawn, never by `import clip_flant5`.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from .atomic import atomic_path
from .errors import UserError
from .jsonl import iter_jsonl


def savefig(fig, path: str | os.PathLike) -> Path:
    import matplotlib.pyplot as plt

    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
        return Path(path)
    finally:
        plt.close(fig)


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_loss_curve(metrics_jsonl: str | os.PathLike, title: str, path: str | os.PathLike) -> Path:
    """Training loss (and learning rate) per step from a trainer metrics log (the last entry of a step wins)."""
    rows = {row["step"]: row for row in iter_jsonl(metrics_jsonl, keys=("step", "loss"), what="logged step")}
    steps = sorted(rows)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(steps, [rows[s]["loss"] for s in steps], lw=0.8, label="loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    if any(rows[s].get("learning_rate") is not None for s in steps):
        lr = ax.twinx()
        lr.plot(steps, [rows[s].get("learning_rate") or 0 for s in steps], color="gray", lw=0.8, ls="--")
        lr.set_ylabel("learning rate", color="gray")
    ax.set_title(title)
    return savefig(fig, path)


def plot_correlation(human, scores, title: str, path: str | os.PathLike) -> Path:
    """Score vs mean human rating, one point per image, with Pearson r and Kendall tau-b in the title."""
    import numpy as np
    from scipy.stats import kendalltau

    plt = pyplot()
    human, scores = np.asarray(human, dtype=float), np.asarray(scores, dtype=float)
    if human.shape != scores.shape or human.ndim != 1:
        raise UserError(f"human and scores must be 1-d of equal length, got {human.shape} and {scores.shape}")
    ok = len(human) > 1 and human.std() > 0 and scores.std() > 0
    r = np.corrcoef(human, scores)[0, 1] if ok else math.nan
    tau = kendalltau(human, scores).statistic if ok else math.nan
    fig, ax = plt.subplots(figsize=(5, 4.5))
    ax.scatter(human, scores, s=8, alpha=0.5)
    ax.set_xlabel("human rating (mean)")
    ax.set_ylabel("score")
    ax.set_title(f"{title}\nPearson {100 * r:.1f}, Kendall {100 * tau:.1f} (x100, n={len(human)})")
    return savefig(fig, path)
