"""The report's PNGs, drawn with matplotlib's Agg backend from the evaluation's plot data.

Imported only by `modelfleet report` when it draws (matplotlib takes a second to import, and
no other command, nor any worker, needs it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display, no GUI toolkit

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

DPI = 100


def confusion(labels: list[Any], matrix: list[list[int]], out: Path) -> Path:
    """Counts per (true, predicted) class, darker for more, the count written in each cell."""
    counts = np.asarray(matrix)
    size = min(2.8 + 0.3 * len(labels), 9.0)
    fig, ax = plt.subplots(figsize=(size + 0.9, size), dpi=DPI)
    image = ax.imshow(counts, cmap="Blues")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    ticks = range(len(labels))
    ax.set_xticks(ticks, [str(v) for v in labels], rotation=45 if len(labels) > 6 else 0)
    ax.set_yticks(ticks, [str(v) for v in labels])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if len(labels) <= 20:
        threshold = counts.max() / 2 if counts.size else 0
        for (i, j), n in np.ndenumerate(counts):
            ax.text(j, i, str(n), ha="center", va="center", fontsize=9,
                    color="white" if n > threshold else "black")
    ax.set_title("confusion matrix (test split)")
    return _save(fig, out)


def residuals(y_true: list[float], y_pred: list[float], out: Path) -> Path:
    """Predicted against actual (the diagonal is perfect), and the residuals against predicted."""
    true, pred = np.asarray(y_true), np.asarray(y_pred)
    fig, (left, right) = plt.subplots(1, 2, figsize=(9.0, 4.0), dpi=DPI)
    left.scatter(true, pred, s=12, alpha=0.6)
    low, high = float(min(true.min(), pred.min())), float(max(true.max(), pred.max()))
    left.plot([low, high], [low, high], color="grey", linewidth=1)
    left.set_xlabel("actual")
    left.set_ylabel("predicted")
    left.set_title("predicted vs actual")
    right.scatter(pred, true - pred, s=12, alpha=0.6, color="tab:orange")
    right.axhline(0, color="grey", linewidth=1)
    right.set_xlabel("predicted")
    right.set_ylabel("actual - predicted")
    right.set_title(f"residuals ({len(true)} test rows)")
    return _save(fig, out)


def importances(features: list[list[Any]], kind: str, out: Path) -> Path:
    """Horizontal bars, the largest on top."""
    names = [str(name) for name, _ in features][::-1]
    values = [float(v) for _, v in features][::-1]
    fig, ax = plt.subplots(figsize=(5.0, 1.2 + 0.28 * len(names)), dpi=DPI)
    ax.barh(names, values, color=["tab:blue" if v >= 0 else "tab:red" for v in values])
    ax.axvline(0, color="grey", linewidth=0.8)
    ax.set_xlabel(kind)
    ax.set_title(f"top {len(names)} features by {kind}")
    return _save(fig, out)


def _save(fig: Any, out: Path) -> Path:
    fig.tight_layout()
    fig.savefig(out, format="png")
    plt.close(fig)
    return out
