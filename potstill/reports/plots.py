"""The report's plots: matplotlib figures rendered to inline SVG text (no files, no network).

matplotlib's object API (`Figure`) is used without pyplot, so no GUI backend is chosen and
nothing global changes. Text is drawn as paths (`svg.fonttype: path`), so the SVG looks the
same without any font installed; each plot gets its own `svg.hashsalt`, so the element ids
of two plots on one page never collide (and the output is deterministic).
"""
from __future__ import annotations

import io
import warnings
from typing import Sequence

import numpy as np

COLORS = {"published": "#2b8a3e", "scored": "#a5d8ff", "filtered": "#f59f00",
          "rejected": "#e03131", "read": "#1c7ed6", "ideal": "#868e96", "bar": "#1c7ed6"}
_PALETTE = ["#1c7ed6", "#2b8a3e", "#f59f00", "#e03131", "#7048e8", "#0c8599", "#e8590c",
            "#c2255c", "#5c940d", "#495057"]


def _figure(width: float = 7.0, height: float = 3.2):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    return fig, fig.subplots()


def _svg(fig, name: str) -> str:
    import matplotlib

    buf = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "path", "svg.hashsalt": f"potstill-{name}"}), \
            warnings.catch_warnings():
        # a label with a character the bundled font lacks (an emoji) is drawn as a box; the
        # report's tables carry the text itself, so this is no reason to warn the user
        warnings.filterwarnings("ignore", message=r"Glyph \d+ .* missing from font", category=UserWarning)
        fig.savefig(buf, format="svg", metadata={"Date": None})
    text = buf.getvalue()
    svg = text[text.index("<svg"):]
    return svg.replace("<svg ", f'<svg class="plot" data-plot="{name}" role="img" ', 1)


def _style(ax, title: str) -> None:
    ax.set_title(title, fontsize=11, loc="left")
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(axis="y", alpha=0.3)


def label_distribution(labels: Sequence[str], scored: Sequence[int], published: Sequence[int]) -> str:
    """Grouped bars per label: rows the teacher scored (before curation) vs rows published."""
    fig, ax = _figure()
    x = range(len(labels))
    width = 0.38
    bars_s = ax.bar([i - width / 2 for i in x], scored, width, label="scored (before curation)",
                    color=COLORS["scored"])
    bars_p = ax.bar([i + width / 2 for i in x], published, width, label="published",
                    color=COLORS["published"])
    for bars in (bars_s, bars_p):
        ax.bar_label(bars, fontsize=8, padding=2)
    ax.set_xticks(list(x), labels, rotation=30 if len(labels) > 6 else 0, ha="right"
                  if len(labels) > 6 else "center")
    ax.set_ylabel("rows")
    ax.legend(frameon=False, fontsize=8)
    _style(ax, "")
    return _svg(fig, "label-distribution")


def confidence_histogram(published: Sequence[float], filtered: Sequence[float],
                         threshold: float | None = None, bins: int = 20) -> str:
    """Stacked histogram of teacher_confidence: published vs curated-out rows."""
    fig, ax = _figure()
    edges = [i / bins for i in range(bins + 1)]
    ax.hist([np.asarray(published, dtype=float), np.asarray(filtered, dtype=float)], bins=edges,
            stacked=True,
            color=[COLORS["published"], COLORS["filtered"]],
            label=["published", "filtered by curation"])
    if threshold is not None:
        ax.axvline(threshold, color=COLORS["rejected"], linestyle="--", linewidth=1.2,
                   label=f"min_confidence = {threshold:g}")
    ax.set_xlim(0, 1)
    ax.set_xlabel("teacher confidence (max label probability)")
    ax.set_ylabel("rows")
    ax.legend(frameon=False, fontsize=8, loc="upper left")
    _style(ax, "")
    return _svg(fig, "confidence-histogram")


def reliability(buckets: Sequence[dict], ece: float | None) -> str:
    """Reliability diagram: accuracy vs mean confidence per bucket (calibration.sql rows)."""
    fig, ax = _figure(5.0, 4.2)
    ax.plot([0, 1], [0, 1], linestyle="--", color=COLORS["ideal"], linewidth=1,
            label="perfect calibration")
    full = [b for b in buckets if b["n"]]
    widths = [b["upper"] - b["lower"] for b in full]
    ax.bar([b["lower"] for b in full], [b["accuracy"] for b in full], widths, align="edge",
           color=COLORS["bar"], alpha=0.75, edgecolor="white", label="accuracy (seed rows)")
    ax.plot([b["mean_confidence"] for b in full], [b["accuracy"] for b in full], "o",
            color=COLORS["rejected"], markersize=4, label="mean confidence")
    for b in full:
        ax.annotate(f"n={b['n']}", (b["lower"] + (b["upper"] - b["lower"]) / 2, b["accuracy"]),
                    ha="center", va="bottom", fontsize=7, xytext=(0, 2), textcoords="offset points")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.08)
    ax.set_xlabel("teacher confidence")
    ax.set_ylabel("accuracy vs gold label")
    ax.legend(frameon=False, fontsize=8, loc="upper left")
    _style(ax, "Reliability diagram" + (f" (ECE {ece:.3f})" if ece is not None else ""))
    return _svg(fig, "reliability")


def funnel(stages: Sequence[tuple[str, Sequence[tuple[str, int]]]]) -> str:
    """One horizontal stacked bar per stage (read, rejected, filtered, published), split by
    source or reason; the segment names are in the legend and the bar totals at the end."""
    fig, ax = _figure(7.0, 0.6 * len(stages) + 1.4)
    keys = list(dict.fromkeys(k for _, segs in stages for k, _ in segs))
    color = {k: _PALETTE[i % len(_PALETTE)] for i, k in enumerate(keys)}
    seen = set()
    for y, (stage, segments) in enumerate(stages):
        left = 0
        for key, n in segments:
            ax.barh(y, n, left=left, color=color[key], edgecolor="white",
                    label=None if key in seen else key)
            seen.add(key)
            left += n
        ax.text(left, y, f" {left}", va="center", fontsize=9)
    ax.set_yticks(range(len(stages)), [s for s, _ in stages])
    ax.invert_yaxis()
    ax.set_xlabel("rows")
    ax.legend(frameon=False, fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))
    _style(ax, "")
    ax.grid(axis="x", alpha=0.3)
    ax.grid(axis="y", visible=False)
    return _svg(fig, "funnel")


def loss_curves(curves: Sequence[tuple[str, Sequence[float]]]) -> str:
    """Training loss per epoch, one line per student."""
    fig, ax = _figure(5.0, 3.2)
    for i, (name, losses) in enumerate(curves):
        ax.plot(range(1, len(losses) + 1), losses, "o-", color=_PALETTE[i % len(_PALETTE)],
                label=name, markersize=4)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("train loss")
    ax.legend(frameon=False, fontsize=8)
    _style(ax, "Student training loss")
    return _svg(fig, "loss")
