"""Visual reports of scored videos: one PNG per video and an ``index.html`` listing them all.

The PNG shows the fake probability of every window over time (window centre on the x axis), the
decision threshold, the aggregate score in the title, and a strip of face crops spread over the
video. Figures are drawn with matplotlib's Agg canvas directly (no pyplot, no global backend
state) and every file is written atomically.
"""
from __future__ import annotations

import html
import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from havic.predictions import VideoPrediction
from havic.utils.io import atomic_write_bytes, atomic_write_text

__all__ = ["picture_name", "write_index", "write_video_report"]


def picture_name(path: str) -> str:
    """A file name for the picture of the video listed as `path`, unique per path and readable."""
    from havic.data.cache import video_key

    return f"{video_key(path)}.png"


def write_video_report(pred: VideoPrediction, out_dir: str | os.PathLike, threshold: float = 0.5,
                       dpi: int = 80) -> Path | None:
    """Draw the window-by-window probability and the face strip of one video.

    Args:
        pred: a scored video (with ``sample_crops`` if the strip is wanted).
        out_dir: folder of the report.
        threshold: the decision threshold drawn as a line.
        dpi: resolution of the PNG.

    Returns:
        The PNG written, or None for a failed video (nothing to draw).
    """
    if pred.error or not pred.window_logits:
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    crops = list(pred.sample_crops)
    fig = Figure(figsize=(10, 5.4 if crops else 3.6))
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(2 if crops else 1, max(1, len(crops)), height_ratios=[2.2, 1] if crops else None)
    ax = fig.add_subplot(grid[0, :])
    centres = [s + pred.window_s / 2 for s in pred.window_starts]
    ax.plot(centres, pred.window_scores, "o-", color="tab:red", lw=1.5, ms=4, label="window")
    ax.axhline(threshold, color="0.4", ls="--", lw=1, label=f"threshold {threshold:g}")
    ax.set_ylim(-0.02, 1.02)
    end = pred.duration_s if pred.duration_s else max(centres) + pred.window_s / 2
    ax.set_xlim(0, max(end, pred.window_s))
    ax.set_xlabel("window centre (s)")
    ax.set_ylabel("fake probability")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right", fontsize=8)
    label = {None: "", 0: ", label real", 1: ", label fake"}.get(pred.label, "")
    flags = f"\nflags: {', '.join(pred.flags)}" if pred.flags else ""
    ax.set_title(f"{Path(pred.path).name}: score {pred.score:.3f} ({pred.aggregate} of {pred.n_windows} windows)"
                 f"{label}{flags}", fontsize=10)
    for i, (crop, t) in enumerate(zip(crops, pred.sample_times)):
        cax = fig.add_subplot(grid[1, i])
        cax.imshow(crop)
        cax.set_axis_off()
        cax.set_title(f"{t:.1f} s", fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return atomic_write_bytes(Path(out_dir) / picture_name(pred.path), buf.getvalue())


def _cell(text: object) -> str:
    return f"<td>{html.escape(str(text))}</td>"


def write_index(preds: Sequence[VideoPrediction], out_dir: str | os.PathLike,
                pictures: Mapping[str, Path | None] | None = None, threshold: float = 0.5,
                title: str = "havic predictions") -> Path:
    """An ``index.html`` table of every video: score, decision, label, flags, error, picture.

    Args:
        preds: the videos, failed ones included.
        out_dir: folder of the report; pictures are linked relative to it.
        pictures: path -> PNG (or None); default: :func:`picture_name` where that file exists.
        threshold: decision threshold for the "prediction" column.
        title: page title.
    """
    out_dir = Path(out_dir)
    n_failed = sum(1 for p in preds if p.error)
    rows = []
    for p in preds:
        pic = pictures.get(p.path) if pictures is not None else out_dir / picture_name(p.path)
        if pic is not None and not Path(pic).is_file():
            pic = None
        if p.error:
            score, decision = "", ""
        else:
            score, decision = f"{p.score:.4f}", "fake" if p.score >= threshold else "real"
        label = {None: "", 0: "real", 1: "fake"}.get(p.label, str(p.label))
        if pic is not None:
            rel = html.escape(os.path.relpath(pic, out_dir))
            link = f'<td><a href="{rel}"><img src="{rel}" width="320" loading="lazy"></a></td>'
        else:
            link = "<td></td>"
        error = f"{p.error}: {p.error_detail}" if p.error else ""
        cls = ' class="failed"' if p.error else ""
        rows.append(f"<tr{cls}>" + "".join(_cell(v) for v in (p.path, score, decision, label, p.category,
                                                            p.n_windows, ", ".join(p.flags), error)) + link + "</tr>")
    page = f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:1em}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;vertical-align:top}} tr.failed{{background:#fee}}</style>
</head><body>
<h1>{html.escape(title)}</h1>
<p>{len(preds)} videos: {len(preds) - n_failed} scored, {n_failed} failed. Score = fake probability;
prediction = fake when score &ge; {threshold:g}.</p>
<table>
<tr><th>video</th><th>score</th><th>prediction</th><th>label</th><th>category</th><th>windows</th><th>flags</th>
<th>error</th><th>windows over time</th></tr>
{chr(10).join(rows)}
</table></body></html>
"""
    return atomic_write_text(out_dir / "index.html", page)
