"""Writing experiment results: Markdown tables, CSV, JSON (NaN as ``null``) and PNG plots.

Plots are drawn on :class:`matplotlib.figure.Figure` objects with the Agg canvas, so nothing depends on
a display or on pyplot's global state. Every figure is saved at a fixed size (``figsize * dpi`` pixels,
no tight bounding box), so its pixel size is known in advance.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from reinforcens.atomic import atomic_open, atomic_write_json, atomic_write_text
from reinforcens.atomic import jsonable as jsonable  # re-exported: results as JSON values

#: dots per inch of every saved figure
DPI = 100


def write_json(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as indented JSON (atomically); NaN and infinities become ``null``."""
    path = Path(path)
    atomic_write_json(path, obj, sort_keys=False)
    return path


def write_csv(path: str | Path, rows: Sequence[Mapping[str, Any]] | pd.DataFrame) -> Path:
    """Write rows (dicts with the same keys, or a data frame) as CSV (atomically)."""
    path = Path(path)
    frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    atomic_write_text(path, frame.to_csv(index=False))
    return path


def write_text(path: str | Path, text: str) -> Path:
    path = Path(path)
    atomic_write_text(path, text if text.endswith("\n") else text + "\n")
    return path


def fmt_value(value: float | None, digits: int = 4) -> str:
    """A number with ``digits`` decimals; ``n/a`` for missing or NaN."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def fmt_mean_std(mean: float | None, std: float | None, digits: int = 4) -> str:
    """``mean ± std``; just the mean when the standard deviation is undefined (one seed)."""
    if mean is None or not math.isfinite(mean):
        return "n/a"
    if std is None or not math.isfinite(std):
        return fmt_value(mean, digits)
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def fmt_p(p: float | None) -> str:
    """A p-value in two significant digits (``3.1e-05``, ``0.042``); ``n/a`` when undefined."""
    if p is None or not math.isfinite(p):
        return "n/a"
    if p == 0.0:
        return "0"
    if p < 1e-3:
        return f"{p:.1e}"
    return f"{p:.2g}"


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[str]], align: str = "") -> str:
    """A GitHub-flavoured Markdown table; ``align`` has one of ``l``/``r`` per column (default: the
    first column left, the rest right)."""
    rows = [list(map(str, r)) for r in rows]
    align = align or "l" + "r" * (len(headers) - 1)
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        out = []
        for c, w, a in zip(cells, widths, align, strict=True):
            out.append(c.ljust(w) if a == "l" else c.rjust(w))
        return "| " + " | ".join(out) + " |"

    sep = (
        "|"
        + "|".join(
            ("-" * (w + 1) + ":") if a == "r" else (":" + "-" * (w + 1))
            for w, a in zip(widths, align, strict=True)
        )
        + "|"
    )
    return "\n".join([line(headers), sep] + [line(r) for r in rows])


def new_figure(width: float, height: float, ncols: int = 1, nrows: int = 1):
    """A figure of ``width x height`` inches (at :data:`DPI`) with a grid of axes.

    Returns
    -------
    fig : matplotlib.figure.Figure
    axes : numpy.ndarray of matplotlib.axes.Axes
        Always a flat array, even for one axis.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, np.asarray(axes).ravel()


def save_figure(fig, path: str | Path) -> Path:
    """Save a figure as PNG at :data:`DPI` (its pixel size is ``figsize * DPI``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, "wb") as f:
        fig.savefig(f, dpi=DPI, format="png")
    return path
