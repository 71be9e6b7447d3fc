"""PNG plots of a run: training curves, accuracy vs shots, confusion matrix.

Drawn on ``matplotlib.figure.Figure`` objects with the Agg canvas, never through ``pyplot``, so no
global figure state or GUI backend is involved.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from fsar_features import atomic_path
from fsar_train._evaluate import MethodResult

__all__ = ["plot_accuracy_vs_shots", "plot_confusion", "plot_training_curves"]


def _save(figure: Figure, path: str | Path) -> Path:
    path = Path(path)
    with atomic_path(path, suffix=".png") as tmp:
        figure.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    return path


def plot_training_curves(
    history: Sequence[Mapping[str, float]], val_history: Sequence[Mapping[str, float]], path: str | Path
) -> Path:
    """Loss terms and learning rate per step (left), meta-val accuracy ± CI (right)."""
    figure = Figure(figsize=(10, 3.6), layout="constrained")
    loss_ax, val_ax = figure.subplots(1, 2)
    if history:
        steps = np.array([h["step"] for h in history])
        terms = [k for k in history[0] if k not in ("step", "lr", "grad_norm")]
        for term in terms:
            values = np.array([h.get(term, np.nan) for h in history])
            loss_ax.plot(steps, values, label=term, linewidth=1.2 if term == "loss" else 0.8)
        loss_ax.set_xlabel("optimiser step")
        loss_ax.set_ylabel("loss (mean per episode)")
        lr_ax = loss_ax.twinx()
        lr_ax.plot(steps, [h["lr"] for h in history], color="grey", linestyle=":", label="lr")
        lr_ax.set_ylabel("learning rate", color="grey")
        loss_ax.legend(loc="upper right", fontsize=8)
    loss_ax.set_title("training")
    if val_history:
        v_steps = [v["step"] for v in val_history]
        accuracy = np.array([v["accuracy"] for v in val_history])
        ci = np.array([v["ci95"] for v in val_history])
        val_ax.plot(v_steps, accuracy, marker="o", markersize=3)
        val_ax.fill_between(v_steps, accuracy - ci, accuracy + ci, alpha=0.25)
        best = int(np.argmax(accuracy))
        val_ax.axvline(v_steps[best], color="green", linestyle="--", linewidth=0.8, label=f"best: step {v_steps[best]}")
        val_ax.legend(loc="lower right", fontsize=8)
    val_ax.set_xlabel("optimiser step")
    val_ax.set_ylabel("meta-val accuracy (%)")
    val_ax.set_title("model selection (meta-val)")
    return _save(figure, path)


def plot_accuracy_vs_shots(results: Mapping[int, Mapping[str, MethodResult]], path: str | Path) -> Path:
    """Test accuracy ± 95 % CI against K, one line per method."""
    figure = Figure(figsize=(5, 3.6))
    ax = figure.subplots()
    shots = sorted(results)
    methods = list(dict.fromkeys(name for k in shots for name in results[k]))
    for name in methods:
        ks = [k for k in shots if name in results[k]]
        ax.errorbar(
            ks,
            [results[k][name].accuracy for k in ks],
            yerr=[results[k][name].ci95 for k in ks],
            marker="o",
            capsize=3,
            label=name,
        )
    ax.set_xticks(shots)
    ax.set_xlabel("shots K")
    ax.set_ylabel("test accuracy (%)")
    some = next(iter(results[shots[0]].values())) if shots else None
    if some is not None:
        ax.set_title(f"{some.n_way}-way, {some.n_episodes:,} episodes")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(figure, path)


def plot_confusion(
    confusion: Sequence[Sequence[int]], class_names: Sequence[str], path: str | Path, *, title: str = "",
    max_labelled: int = 40,
) -> Path:  # fmt: skip
    """Row-normalised confusion matrix (row = true class); class names on the axes up to ``max_labelled``."""
    counts = np.asarray(confusion, dtype=np.float64)
    rows = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    n = len(class_names)
    side = min(3 + 0.28 * n, 14)
    figure = Figure(figsize=(side + 1.5, side))
    ax = figure.subplots()
    image = ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
    figure.colorbar(image, ax=ax, fraction=0.046, label="fraction of the true class's queries")
    if n <= max_labelled:
        ax.set_xticks(range(n), labels=list(class_names), rotation=90, fontsize=7)
        ax.set_yticks(range(n), labels=list(class_names), fontsize=7)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title or "confusion (test queries)")
    return _save(figure, path)
