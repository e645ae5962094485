"""Visual reports of scored videos: one PNG per video, an ``index.html`` listing them all, markdown pages.

The PNG shows the fake probability of every window over time (window centre on the x axis), the
decision threshold, the video score and how it was made in the title, and a strip of face crops
spread over the video. It is drawn 1000 px wide and the index shows it at that size below its
row, so it reads on a 1280 px screen without scrolling sideways. Figures are drawn with
matplotlib's Agg canvas directly (no pyplot, no global backend state) and every file is written
atomically. :func:`markdown_html` turns the markdown reports (``report.md`` of ``havic evaluate``)
into pages a browser shows as such.
"""
from __future__ import annotations

import html
import io
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from havic.predictions import VideoPrediction
from havic.utils.io import atomic_write_bytes, atomic_write_text

__all__ = [
    "PICTURE_DPI", "PICTURE_INCHES", "markdown_html", "picture_name", "picture_title", "write_index",
    "write_markdown_page", "write_video_report",
]

PICTURE_INCHES = 10.0  # figure width: 1000 px at PICTURE_DPI, shown unscaled in the index
PICTURE_DPI = 100
# How each aggregation makes the video logit, for the picture's title.
_AGGREGATE_TEXT = {"mean": "the mean window logit", "max": "the largest window logit",
                   "lse": "the log-mean-exp of the window logits"}


def picture_name(path: str) -> str:
    """A file name for the picture of the video listed as `path`, unique per path and readable."""
    from havic.data.cache import video_key

    return f"{video_key(path)}.png"


def picture_title(pred: VideoPrediction) -> str:
    """The first title line of a video's picture: its score and the rule that made it.

    >>> picture_title(VideoPrediction("a/v.mp4", score=0.7311, logit=1.0, n_windows=9, aggregate="mean"))
    'v.mp4: score 0.731 = sigmoid(1.000), the mean window logit of 9 windows'
    """
    rule = _AGGREGATE_TEXT.get(pred.aggregate, f"the {pred.aggregate} of the window logits")
    logit = f"{pred.logit:.3f}" if pred.logit is not None else "?"
    return (f"{Path(pred.path).name}: score {pred.score:.3f} = sigmoid({logit}), {rule} of {pred.n_windows} "
            f"window{'s' if pred.n_windows != 1 else ''}")


def write_video_report(pred: VideoPrediction, out_dir: str | os.PathLike, threshold: float = 0.5,
                       dpi: int = PICTURE_DPI) -> Path | None:
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
    fig = Figure(figsize=(PICTURE_INCHES, 5.4 if crops else 3.6))
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
    ax.set_title(f"{picture_title(pred)}{label}{flags}", fontsize=10)
    for i, (crop, t) in enumerate(zip(crops, pred.sample_times)):
        cax = fig.add_subplot(grid[1, i])
        cax.imshow(crop)
        cax.set_axis_off()
        cax.set_title(f"{t:.1f} s", fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return atomic_write_bytes(Path(out_dir) / picture_name(pred.path), buf.getvalue())


# The index's columns and their share of the page width (%).
_COLUMNS = (("video", 26), ("score", 7), ("prediction", 8), ("label", 6), ("category", 10), ("windows", 7),
            ("flags", 14), ("error", 22))


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
        error = f"{p.error}: {p.error_detail}" if p.error else ""
        cls = ' class="failed"' if p.error else ""
        rows.append(f"<tr{cls}>" + "".join(_cell(v) for v in (p.path, score, decision, label, p.category,
                                                            p.n_windows, ", ".join(p.flags), error)) + "</tr>")
        if pic is not None:
            # The picture gets a row of its own at its drawn size: readable, and never wider than the page.
            rel = html.escape(os.path.relpath(pic, out_dir))
            alt = html.escape(f"fake probability per window: {p.path}")
            rows.append(f'<tr class="picture"><td colspan="{len(_COLUMNS)}"><a href="{rel}">'
                        f'<img src="{rel}" alt="{alt}" loading="lazy"></a></td></tr>')
    widths = "".join(f'<col style="width:{w}%">' for _, w in _COLUMNS)
    header = "".join(f"<th>{name}</th>" for name, _ in _COLUMNS)
    page = f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:1em}} table{{border-collapse:collapse;width:100%;table-layout:fixed}}
td,th{{border:1px solid #ccc;padding:4px 8px;vertical-align:top;overflow-wrap:anywhere}} tr.failed{{background:#fee}}
tr.picture td{{border-top:none;padding-bottom:1em}} img{{max-width:100%;height:auto;display:block}}</style>
</head><body>
<h1>{html.escape(title)}</h1>
<p>{len(preds)} videos: {len(preds) - n_failed} scored, {n_failed} failed. Score = fake probability, the sigmoid
of the aggregated window logits; prediction = fake when score &ge; {threshold:g}. Below each scored video: its
windows over time.</p>
<table>
<colgroup>{widths}</colgroup>
<tr>{header}</tr>
{chr(10).join(rows)}
</table></body></html>
"""
    return atomic_write_text(out_dir / "index.html", page)


# -- markdown pages -----------------------------------------------------------------------------

_INLINE = re.compile(r"`([^`]+)`|\*\*(.+?)\*\*|\[([^\]]+)\]\(([^)\s]+)\)|(?<![\w*])\*(?=\S)(.+?)(?<=\S)\*(?![\w*])")
_HEADING = re.compile(r"(#{1,6})\s+(.*)")
_TABLE_RULE = re.compile(r"\s*\|?\s*:?-+:?\s*(\|\s*:?-+:?\s*)*\|?\s*$")
_BULLET = re.compile(r"\s*[-*]\s+(.*)")
_NUMBERED = re.compile(r"\s*\d+\.\s+(.*)")


def _inline(text: str) -> str:
    """Escaped text with `code`, **strong**, *emphasis* and [links](url)."""
    out, pos = [], 0
    for m in _INLINE.finditer(text):
        out.append(html.escape(text[pos:m.start()]))
        code, strong, label, url, em = m.groups()
        if code is not None:
            out.append(f"<code>{html.escape(code)}</code>")
        elif strong is not None:
            out.append(f"<strong>{_inline(strong)}</strong>")
        elif label is not None:
            out.append(f'<a href="{html.escape(url)}">{_inline(label)}</a>')
        else:
            out.append(f"<em>{_inline(em)}</em>")
        pos = m.end()
    return "".join(out) + html.escape(text[pos:])


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _table(lines: list[str]) -> str:
    """A pipe table: header, rule (``:`` marks alignment), rows; scrolls inside its box when too wide."""
    aligns = [{(True, True): "center", (False, True): "right", (True, False): "left"}.get(
        (c.startswith(":"), c.endswith(":")), "") for c in _cells(lines[1])]

    def row(cells: list[str], tag: str) -> str:
        styles = [f' style="text-align:{a}"' if a else "" for a in aligns + [""] * len(cells)]
        return "<tr>" + "".join(f"<{tag}{st}>{_inline(c)}</{tag}>" for c, st in zip(cells, styles)) + "</tr>"

    body = [row(_cells(line), "td") for line in lines[2:]]
    return f'<div class="wide"><table>{row(_cells(lines[0]), "th")}{"".join(body)}</table></div>'


def markdown_html(text: str, title: str = "") -> str:
    """A standalone HTML page of a markdown report.

    The subset havic's reports use: ATX headings, paragraphs, fenced code, pipe tables, bullet and
    numbered lists, inline code, strong, emphasis and links. Every text is HTML-escaped.

    >>> '<td style="text-align:right">75.00</td>' in markdown_html("| a | ACC |\\n|---|---:|\\n| x | 75.00 |")
    True
    """
    lines, body, i = text.splitlines(), [], 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("```"):
            j = i + 1
            while j < len(lines) and not lines[j].startswith("```"):
                j += 1
            body.append(f"<pre><code>{html.escape(chr(10).join(lines[i + 1:j]))}</code></pre>")
            i = j + 1
        elif _HEADING.match(line):
            hashes, content = _HEADING.match(line).groups()
            body.append(f"<h{len(hashes)}>{_inline(content)}</h{len(hashes)}>")
            i += 1
        elif "|" in line and i + 1 < len(lines) and _TABLE_RULE.match(lines[i + 1]) and "-" in lines[i + 1]:
            j = i + 2
            while j < len(lines) and "|" in lines[j] and lines[j].strip():
                j += 1
            body.append(_table(lines[i:j]))
            i = j
        elif _BULLET.match(line) or _NUMBERED.match(line):
            pattern, tag = (_BULLET, "ul") if _BULLET.match(line) else (_NUMBERED, "ol")
            items = []
            while i < len(lines) and pattern.match(lines[i]):
                items.append(pattern.match(lines[i]).group(1))
                i += 1
                while i < len(lines) and lines[i].startswith("  ") and lines[i].strip():  # continuation
                    items[-1] += " " + lines[i].strip()
                    i += 1
            body.append(f"<{tag}>" + "".join(f"<li>{_inline(item)}</li>" for item in items) + f"</{tag}>")
        elif not line.strip():
            i += 1
        else:
            para = []
            while (i < len(lines) and lines[i].strip() and not lines[i].startswith("```")
                   and not _HEADING.match(lines[i]) and not _BULLET.match(lines[i]) and not _NUMBERED.match(lines[i])
                   and not (i + 1 < len(lines) and "|" in lines[i] and _TABLE_RULE.match(lines[i + 1]))):
                para.append(lines[i].strip())
                i += 1
            body.append(f"<p>{_inline(' '.join(para))}</p>")
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:1em;line-height:1.4}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:3px 8px}} div.wide{{overflow-x:auto;margin:0.5em 0}}
pre{{background:#f6f6f6;padding:0.6em;overflow-x:auto}} code{{background:#f6f6f6}}</style>
</head><body>
{chr(10).join(body)}
</body></html>
"""


def write_markdown_page(markdown_path: str | os.PathLike, out_path: str | os.PathLike | None = None,
                        title: str | None = None) -> Path:
    """Render a markdown file (:func:`markdown_html`) to ``<same name>.html`` beside it, or `out_path`."""
    src = Path(markdown_path)
    out = Path(out_path) if out_path is not None else src.with_suffix(".html")
    page = markdown_html(src.read_text(encoding="utf-8"), title if title is not None else src.stem)
    return atomic_write_text(out, page)
