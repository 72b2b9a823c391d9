"""The per-slice score curve: where along the volume the model found something, and where the reader is.

Built as a matplotlib `Figure` object (not through pyplot's global state), so concurrent sessions
never draw into each other's plots.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

FIGURE_SIZE_INCHES: tuple[float, float] = (7.0, 2.2)


def slice_score_figure(slice_scores: Sequence[float], top_slices: Sequence[int], current: int | None,
                       plane: str) -> Figure:
    """Scores against slice index, the top slices marked, and a line at the slice on screen (None when
    the screen shows another plane than the one scored)."""
    scores = np.asarray(slice_scores, dtype=np.float64)
    figure = Figure(figsize=FIGURE_SIZE_INCHES, layout="constrained")
    axes = figure.add_subplot()
    axes.plot(np.arange(scores.size), scores, color="tab:blue", linewidth=1.2)
    top = [index for index in top_slices if 0 <= index < scores.size]
    axes.scatter(top, scores[top], color="tab:red", zorder=3, s=18, label="top slices")
    if current is not None:
        axes.axvline(current, color="black", linewidth=1.0, linestyle="--", label="on screen")
    axes.set_xlim(-0.5, max(scores.size - 0.5, 0.5))
    axes.set_xlabel(f"{plane} slice index")
    axes.set_ylabel("slice score")
    axes.grid(alpha=0.3)
    # Above the axes, never over the curve (its peak is often in a corner).
    figure.legend(loc="outside upper right", ncols=2, fontsize="small", frameon=False)
    return figure
