"""Publication-style PNG figures (matplotlib, Agg backend), written atomically."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import NullFormatter  # noqa: E402

from .atomic import atomic_path  # noqa: E402


def _save(fig, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=150, bbox_inches="tight", format="png")
    plt.close(fig)


def _series(result, key: str):
    values = result.snn_accuracy if key == "accuracy" else result.synops["mops_per_image"]
    points = [(t, v) for t, v in enumerate(values, start=1) if v is not None]
    return [p[0] for p in points], [p[1] * (100 if key == "accuracy" else 1) for p in points]


def curves_subtitle(results: dict) -> str:
    """What every curve of a plot shares, so the figure stands alone: n, mode, readout, device
    (and method and T when there is one result)."""
    first = next(iter(results.values()))
    modes = sorted({r.mode for r in results.values()})
    readouts = sorted({r.readout for r in results.values()})
    parts = [f"n={first.n}", "/".join("time-stepped" if m == "simulate" else "closed form" for m in modes),
             f"readout: {readouts[0]}" if len(readouts) == 1 else "readout: " + ", ".join(
                 f"{label} {r.readout}" for label, r in results.items()), first.device]
    if len(results) == 1:
        parts = [f"{first.method}, T={first.timesteps}"] + parts
    return ", ".join(parts)


def plot_curves(results: dict, key: str, path, title: str = "", markers: dict | None = None) -> None:
    """Accuracy (%) or MOps per image against timesteps, one line per labelled result.

    The title (default: the model and what is plotted) gets a second line saying what the
    curves share (:func:`curves_subtitle`); a readout delay K is marked by a dotted vertical line
    at t = K. ``markers`` maps a label to (t, value) points drawn as dots (e.g. one conversion per T).
    """
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    several_modes = len({r.mode for r in results.values()}) > 1
    for label, result in results.items():
        t, v = _series(result, key)
        line, = ax.plot(t, v, label=f"{label} ({result.mode})" if several_modes else label, linewidth=1.6)
        delay = result.settings.get("readout_delay", 0)
        if delay:
            ax.axvline(delay, color=line.get_color(), linestyle=":", linewidth=1,
                       label=f"{label}: output read after step {delay}")
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
    what = "accuracy" if key == "accuracy" else "synaptic operations"
    model = os.path.basename(str(next(iter(results.values())).model))
    ax.set_title(f"{title or f'{model}: {what} vs timesteps'}\n{curves_subtitle(results)}", fontsize=9)
    _save(fig, path)


@dataclass
class Panel:
    """One set of axes of :func:`plot_panels`: named series of (x, y) points.

    ``references``: horizontal dashed lines (label → y); ``annotations``: per series, one text
    per point; ``logx``: the x axis' log base (None: linear); ``step``: draw as a histogram.
    """

    xlabel: str
    ylabel: str
    series: dict[str, list[tuple[float, float]]]
    title: str = ""
    logx: int | None = 2
    logy: bool = False
    references: dict[str, float] = field(default_factory=dict)
    annotations: dict[str, list[str]] = field(default_factory=dict)
    step: bool = False


@dataclass
class BarPanel:
    """One bar chart of :func:`plot_bars`: a value per bar (None: no bar, marked 'n/a'), and
    optional individual points drawn over each bar (e.g. one per model)."""

    ylabel: str
    values: dict[str, float | None]
    points: dict[str, list[float]] = field(default_factory=dict)
    title: str = ""


def _grid(count: int, width: float = 4.6, height: float = 3.6):
    fig, axes = plt.subplots(1, count, figsize=(width * count, height), squeeze=False)
    return fig, list(axes[0])


def _label(ax, panel, grid_axis: str) -> None:
    ax.set_ylabel(panel.ylabel)
    ax.grid(alpha=0.3, axis=grid_axis)
    if panel.title:
        ax.set_title(panel.title, fontsize=9)


def _finish(fig, title: str, path) -> None:
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    _save(fig, path)


def plot_panels(panels: list[Panel], path, title: str = "") -> None:
    """Line plots side by side, with markers at every point (the paper's accuracy/MOps figures)."""
    fig, axes = _grid(len(panels))
    for ax, panel in zip(axes, panels):
        for label, points in panel.series.items():
            if not points:
                continue
            x, y = [p[0] for p in points], [p[1] for p in points]
            if panel.step:
                ax.step(x, y, where="mid", label=label, linewidth=1.3)
            else:
                ax.plot(x, y, marker="o", markersize=3.5, label=label, linewidth=1.5)
            for (px, py), text in zip(points, panel.annotations.get(label, [])):
                ax.annotate(text, (px, py), textcoords="offset points", xytext=(3, 3), fontsize=6)
        for label, y in panel.references.items():
            ax.axhline(y, color="grey", linestyle="--", linewidth=1, label=label)
        if panel.logx:
            ax.set_xscale("log", base=panel.logx)
            ax.xaxis.set_minor_formatter(NullFormatter())
        if panel.logy:
            ax.set_yscale("log")
        ax.set_xlabel(panel.xlabel)
        ax.legend(fontsize=7)
        _label(ax, panel, "both")
    _finish(fig, title, path)


def plot_bars(panels: list[BarPanel], path, title: str = "") -> None:
    """Bar charts side by side (the paper's ablation histogram, Table 2 as a figure)."""
    fig, axes = _grid(len(panels), width=4.2)
    for ax, panel in zip(axes, panels):
        labels = list(panel.values)
        heights = [panel.values[k] if panel.values[k] is not None else 0.0 for k in labels]
        bars = ax.bar(range(len(labels)), heights, color="#4C72B0", alpha=0.85)
        for bar, label in zip(bars, labels):
            value = panel.values[label]
            text = "n/a" if value is None else f"{value:.3g}"
            top = (bar.get_x() + bar.get_width() / 2, bar.get_height())
            ax.annotate(text, top, ha="center", va="bottom", fontsize=7)
        for index, label in enumerate(labels):
            points = panel.points.get(label, [])
            ax.plot([index] * len(points), points, "k.", markersize=5)
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_xticks(range(len(labels)), labels, rotation=20, ha="right", fontsize=8)
        _label(ax, panel, "y")
    _finish(fig, title, path)
