"""Publication-style PNG figures (matplotlib, Agg backend), written atomically."""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .atomic import atomic_path  # noqa: E402


def _save(fig, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=150, bbox_inches="tight", format="png")
    plt.close(fig)


def _series(result, key: str):
    values = result.snn_accuracy if key == "accuracy" else result.synops["mops_per_image"]
    points = [(t, v) for t, v in enumerate(values, start=1) if v is not None]
    return [p[0] for p in points], [p[1] * (100 if key == "accuracy" else 1) for p in points]


def plot_curves(results: dict, key: str, path, title: str = "", markers: dict | None = None) -> None:
    """Accuracy (%) or MOps per image against timesteps, one line per labelled result.

    ``markers`` maps a label to (t, value) points drawn as dots (e.g. one conversion per T).
    """
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for label, result in results.items():
        t, v = _series(result, key)
        ax.plot(t, v, label=f"{label} ({result.mode})", linewidth=1.6)
    for label, points in (markers or {}).items():
        ax.plot([p[0] for p in points], [p[1] for p in points], "o", label=label)
    if key == "accuracy":
        reference = next(iter(results.values())).cnn_accuracy * 100
        ax.axhline(reference, color="grey", linestyle="--", linewidth=1, label="CNN")
        ax.set_ylabel("accuracy (%)")
    else:
        ax.set_ylabel("synaptic operations per image (MOps)")
    ax.set_xlabel("timesteps")
    ax.set_xscale("log", base=2)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    _save(fig, path)
