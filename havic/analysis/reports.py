"""What the probe analyses write: metrics.json, the matrix as markdown and heatmap PNGs, per-video scores CSV.

Figures are drawn on matplotlib's Agg canvas (no pyplot state) and every file is written atomically.
"""
from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from havic.analysis.protocols import MatrixRow, mean_ood
from havic.utils.io import atomic_write_bytes, atomic_write_csv, atomic_write_json, atomic_write_text

__all__ = ["matrix_as_dict", "matrix_heatmap", "matrix_markdown", "square_heatmap", "write_markdown",
           "write_metrics", "write_scores_csv"]


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.1f}"


def _label(row: MatrixRow) -> str:
    if not row.baseline_of:
        return row.name
    return f"{row.name} (random init)" if row.baseline_of == row.name else f"{row.name} (random init of {row.baseline_of})"


def matrix_markdown(rows: Sequence[MatrixRow], columns: Sequence[tuple[str, str, str]]) -> str:
    """The matrix as a markdown table: one line per feature, AUC % per (train -> test) column, then mean OOD.

    Columns in the Table 2 layout carry their letter and ``train→test``; a random-init twin is
    named after the row it shadows.
    """
    head = ["feature", "mod."] + [f"{c} {x}→{y}" if len(c) == 1 else f"{x}→{y}" for c, x, y in columns]
    head.append("mean OOD")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        aucs = row.aucs()
        cells = [_pct(aucs.get((x, y))) for _, x, y in columns] + [_pct(mean_ood(aucs, columns))]
        lines.append("| " + " | ".join([_label(row), row.modality or "—"] + cells) + " |")
    return "\n".join(lines) + "\n"


def matrix_as_dict(rows: Sequence[MatrixRow], columns: Sequence[tuple[str, str, str]]) -> dict[str, Any]:
    """A JSON-ready form of the matrix: columns, and per row its cells, mean OOD and training info."""
    return {
        "columns": [{"column": c, "train": x, "test": y, "in_domain": x == y} for c, x, y in columns],
        "rows": [{"feature": r.name, "modality": r.modality, "baseline_of": r.baseline_of,
                  "cells": {f"{x}->{y}": r.cells.get((x, y)) for _, x, y in columns},
                  "mean_ood_auc": mean_ood(r.aucs(), columns), "training": r.training} for r in rows],
    }


def _draw(values: list[list[float | None]], row_labels: Sequence[str], col_labels: Sequence[str], title: str,
          vmin: float, vmax: float, cmap: str, fmt: str) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    import numpy as np

    grid = np.array([[np.nan if v is None else v for v in r] for r in values], dtype=float)
    fig = Figure(figsize=(1.2 + 0.9 * len(col_labels), 1.0 + 0.45 * len(row_labels)))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    im = ax.imshow(np.ma.masked_invalid(grid), vmin=vmin, vmax=vmax, cmap=cmap, aspect="auto")
    ax.set_xticks(range(len(col_labels)), col_labels, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(row_labels)), row_labels, fontsize=8)
    for (i, j), v in np.ndenumerate(grid):
        if not np.isnan(v):
            ax.text(j, i, fmt.format(v), ha="center", va="center", fontsize=7)
    ax.set_title(title, fontsize=10)
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    return buf.getvalue()


def matrix_heatmap(rows: Sequence[MatrixRow], columns: Sequence[tuple[str, str, str]], path: str | os.PathLike,
                   title: str = "probe AUC (%)") -> Path:
    """The matrix (AUC %, with the mean OOD column) as a PNG heatmap."""
    values = []
    for r in rows:
        aucs = r.aucs()
        cells = [aucs.get((x, y)) for _, x, y in columns] + [mean_ood(aucs, columns)]
        values.append([None if v is None else 100 * v for v in cells])
    labels = [f"{x}→{y}" for _, x, y in columns] + ["mean OOD"]
    return atomic_write_bytes(path, _draw(values, [_label(r) for r in rows], labels, title, 0, 100, "RdYlGn", "{:.1f}"))


def square_heatmap(matrix: list[list[float | None]], names: Sequence[str], path: str | os.PathLike, title: str,
                   vmin: float = -1.0, vmax: float = 1.0) -> Path:
    """A model x model matrix (e.g. Pearson correlations of scores) as a PNG heatmap."""
    return atomic_write_bytes(path, _draw(matrix, names, names, title, vmin, vmax, "coolwarm", "{:.2f}"))


def write_scores_csv(videos: Sequence[Any], path: str | os.PathLike, extra: Mapping[str, Mapping[str, Any]] = {}) -> Path:
    """Per-video ``video_id, label, score, p_fake, num_frames`` rows (scored videos from ``score_probe``).

    Args:
        videos: objects with ``video_id``, ``label``, ``score``, ``frame_logits``.
        path: the CSV.
        extra: column -> {video id: value} added after the fixed columns.
    """
    import math

    cols = list(extra)
    rows = ([v.video_id, v.label, f"{v.score:.6g}", f"{1 / (1 + math.exp(-2 * v.score)):.6g}", len(v.frame_logits)]
            + [extra[c].get(v.video_id, "") for c in cols] for v in videos)
    return atomic_write_csv(path, ["video_id", "label", "score", "p_fake", "num_frames"] + cols, rows)


def write_metrics(obj: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """metrics.json (indented, keys in insertion order)."""
    return atomic_write_json(path, obj, indent=2, sort_keys=False)


def write_markdown(text: str, path: str | os.PathLike) -> Path:
    """A markdown file."""
    return atomic_write_text(path, text)
