"""The effort curve as a PNG: edits per task against tasks labelled, beside drawing every object by hand."""
from __future__ import annotations

import io
from typing import Any


def effort_png(stats: dict[str, Any]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")  # no display: a server renders to bytes
    from matplotlib.figure import Figure  # a Figure, not pyplot: no global state shared between requests

    curve = stats["curve"]
    figure = Figure(figsize=(7, 3.2), dpi=100)
    axes = figure.add_subplot()
    if curve:
        x = [p["index"] for p in curve]
        axes.plot(x, [p["hand_drawn"] for p in curve], color="0.6", linestyle="--", label="drawing every object by hand")
        axes.plot(x, [p["edits"] for p in curve], color="tab:blue", alpha=0.35, marker=".", linestyle="none",
                  label="edits of one task")
        axes.plot(x, [p["moving_average"] for p in curve], color="tab:blue", label="edits per task (moving average)")
        axes.legend(loc="upper right", fontsize=8)
    else:
        axes.text(0.5, 0.5, "no labelled task yet", ha="center", va="center", transform=axes.transAxes)
    axes.set_xlabel("tasks labelled")
    axes.set_ylabel("edits per task")
    axes.set_ylim(bottom=0)
    axes.set_title(f"project {stats['project']}: annotator effort", fontsize=10)
    figure.tight_layout()
    out = io.BytesIO()
    figure.savefig(out, format="png")
    return out.getvalue()
