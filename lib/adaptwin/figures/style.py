"""One figure style for the whole project: paper-size, labelled, PNG + PDF.

Every figure function in `adaptwin.figures` builds its axes with `figure()` and writes with `save()`, so fonts,
sizes, colours per rank/method and file formats are consistent and change in one place.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: DVC stages and CI have no display

import matplotlib.pyplot as plt  # noqa: E402
import seaborn as sns  # noqa: E402

from adaptwin.io import atomic_write  # noqa: E402

#: width of one column / the full page of a two-column paper, inches
COLUMN_WIDTH = 3.5
PAGE_WIDTH = 7.2

_PALETTE = sns.color_palette("colorblind", 10)
RANK_COLORS: dict[int, tuple] = {8: _PALETTE[0], 16: _PALETTE[1], 32: _PALETTE[2], 64: _PALETTE[3]}
METHOD_COLORS: dict[str, tuple] = {
    "greedy": _PALETTE[0], "greedy-fast": _PALETTE[9], "greedy-latency": _PALETTE[4],
    "loraserve": _PALETTE[1], "dlora": _PALETTE[2], "ffd": _PALETTE[3], "round-robin": _PALETTE[7],
    "lower-bound": (0.2, 0.2, 0.2), "real": (0.1, 0.1, 0.1), "twin": _PALETTE[3],
}
#: marker conventions of the paper's Fig. 1
MARKER_OK = dict(marker="o", fillstyle="full")
MARKER_STARVED = dict(marker="o", fillstyle="none")
MARKER_MEMORY_ERROR = dict(marker="x")

RC = {
    "font.size": 8,
    "axes.titlesize": 8,
    "axes.labelsize": 8,
    "legend.fontsize": 7,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "lines.linewidth": 1.2,
    "lines.markersize": 4,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "savefig.dpi": 200,
    "savefig.bbox": "tight",
    "pdf.fonttype": 42,  # embed TrueType: editable text in the PDF
    "svg.hashsalt": "adaptwin",
}


def apply_style() -> None:
    """Set the project's matplotlib defaults (idempotent)."""
    plt.rcParams.update(RC)


def rank_color(rank: int) -> tuple:
    """Colour for an adapter rank, stable across figures."""
    return RANK_COLORS.get(int(rank), _PALETTE[(int(rank) // 8) % len(_PALETTE)])


def level_colors(levels, cmap: str = "viridis") -> dict:
    """Colours for the ordered levels of one variable (e.g. rates, A_max), low = dark, high = light.

    Evenly spaced in rank order (not value), so a log-spaced grid still gives distinguishable colours; the
    lightest end of the map is skipped because it vanishes on white paper.
    """
    levels = sorted(levels)
    palette = sns.color_palette(cmap, max(len(levels), 2) + 1)[: max(len(levels), 2)]
    return {level: palette[i] for i, level in enumerate(levels)}


def figure(ncols: int = 1, nrows: int = 1, width: float = PAGE_WIDTH, height: float = 2.2, **kwargs):
    """A styled figure with a grid of axes; returns ``(fig, axes)`` like `plt.subplots`."""
    apply_style()
    fig, axes = plt.subplots(nrows, ncols, figsize=(width, height * nrows), constrained_layout=True, **kwargs)
    return fig, axes


def save(fig, directory: str | Path, name: str) -> list[Path]:
    """Write ``name.png`` and ``name.pdf`` into ``directory`` atomically, close the figure, return the paths."""
    directory = Path(directory)
    paths = []
    for ext in ("png", "pdf"):
        target = directory / f"{name}.{ext}"
        atomic_write(target, lambda p, ext=ext: fig.savefig(p, format=ext, metadata=_metadata(ext)))
        paths.append(target)
    plt.close(fig)
    return paths


def _metadata(ext: str) -> dict:
    # No creation dates in the files, so the same data give byte-identical figures.
    if ext == "pdf":
        return {"CreationDate": None, "ModDate": None}
    if ext == "png":
        return {"Software": None}
    return {}
