"""What every figure of the report shares: the canvas, the width, one colour per arm, the legend above the panels.

Figures are drawn on matplotlib's Agg canvas directly: no pyplot state, no display needed, safe in worker
processes and on headless machines. They are WIDTH inches at DPI, about 1170 px: report.html shows them at
their own size at 1280 px (its body is at most 1200 px wide) and GitHub scales them down a little.
"""

from __future__ import annotations

import io
import zlib
from pathlib import Path
from typing import Sequence

from matplotlib.artist import Artist
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.legend import Legend
from matplotlib.lines import Line2D

from ..io import _atomic, _write_error
from ..layout import SCRATCH
from .files import refuse_link

DPI = 110
WIDTH = 10.6  # inches: 1166 px at DPI

# One colour per arm in every figure (Okabe-Ito, readable by colour-blind readers): scratch (and the frozen
# random init it starts from) always grey, each known pretext task always its own colour.
ARM_COLORS = {SCRATCH: "#555555", "context": "#0072B2", "rotation": "#D55E00", "reconstruction": "#009E73",
              "simclr": "#CC79A7"}
SPARE_COLORS = ["#E69F00", "#882255", "#999933", "#332288", "#8C564B"]  # for other tasks: unlike the fixed five
BASELINES = {"random init": SCRATCH}  # other names of the scratch arm's starting point


def new_figure(width: float, height: float) -> Figure:
    """A constrained-layout figure on its own Agg canvas."""
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_png(fig: Figure, path: Path, tight: bool = False) -> None:
    """PNG at DPI; tight=True grows the canvas to hold text placed outside the axes. Written like every file of
    pretextlab (io's atomic writer: whole or not at all, a full disk is one line) and never through a link."""
    refuse_link(path)
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight" if tight else None)
    except OSError as e:  # savefig's own errors are plain OSErrors, and a traceback
        raise _write_error(path, e) from None
    _atomic(path, lambda f: f.write(buf.getvalue()))


def arm_of(label: str) -> str:
    """The arm a label names: "rotation s0" -> rotation, "random init" -> scratch."""
    return BASELINES.get(label, label.split(" ")[0])


def arm_colors(arms: Sequence[str]) -> dict[str, str]:
    """Each arm's colour: the fixed one of scratch and the known tasks; any other task a spare colour picked
    by its name (so the same in every figure, whatever else is drawn), the next free one where two collide."""
    colors = {a: ARM_COLORS[arm_of(a)] for a in arms if arm_of(a) in ARM_COLORS}
    taken = set(colors.values())
    for a in sorted(a for a in arms if a not in colors):
        start = zlib.crc32(arm_of(a).encode()) % len(SPARE_COLORS)
        free = [SPARE_COLORS[(start + i) % len(SPARE_COLORS)] for i in range(len(SPARE_COLORS))]
        colors[a] = next((c for c in free if c not in taken), free[0])
        taken.add(colors[a])
    return colors


def arm_handles(colors: dict[str, str], **style) -> tuple[list[Artist], list[str]]:
    """Legend entries, a line in each arm's colour."""
    return [Line2D([], [], color=c, lw=2, **style) for c in colors.values()], list(colors)


def legend_above(fig: Figure, handles: list[Artist], labels: list[str], below: bool = False) -> list[Legend]:
    """One legend for the whole figure above its panels (never over the data), in as few rows as fit;
    below=True repeats it under the panels, for a figure too tall to keep the top in view."""
    room = fig.get_figwidth() * 14  # characters of 9 pt text across the figure; an entry's line and gap: 5 more
    widths = [len(s) + 5 for s in labels]
    per_row = len(labels) if sum(widths) <= room else max(1, int(room // max(widths, default=1)))
    return [fig.legend(handles, labels, loc=f"outside {where} center", ncols=per_row, frameon=False, fontsize=9)
            for where in ("upper", "lower")[:1 + below]]
