"""The demo's results: the table of both detectors, and ``report.md`` / ``index.html`` in the run folder."""
from __future__ import annotations

import html
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from havic.report import write_markdown_page
from havic.utils.io import atomic_write_text

__all__ = ["DemoReport", "format_table"]


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100.0 * x:.1f}"


def format_table(evaluations: dict[str, dict[str, Any]], categories: Sequence[str] = ()) -> str:
    """The demo's results table: one row per set (overall, then each category), ACC / AP / AUC per method.

    Args:
        evaluations: method -> :meth:`havic.evaluation.Evaluation.to_json` of its predictions.
        categories: category order (default: sorted).

    Returns:
        A fixed-width text table, values in %; "—" where a metric is undefined (a category of
        real videos has ACC only).
    """
    methods = list(evaluations)
    groups = {m: ev.get("groups", {}).get("category", {}) for m, ev in evaluations.items()}
    names = list(categories) or sorted({g for m in methods for g in groups[m]})
    first = evaluations[methods[0]]
    rows = [("overall", first["overall"]["n"], [evaluations[m]["overall"] for m in methods])]
    for g in names:
        cells = [groups[m].get(g) for m in methods]
        n = next((c["n"] for c in cells if c is not None), 0)
        rows.append((g, n, cells))
    head1 = f"{'':<14}{'':>7}" + "".join(f"  {m:^20}" for m in methods)
    head2 = f"{'set':<14}{'videos':>7}" + "".join(f"  {'ACC':>6}{'AP':>7}{'AUC':>7}" for _ in methods)
    lines = [head1, head2, "-" * len(head2)]
    for name, n, cells in rows:
        line = f"{name:<14}{n:>7}"
        for c in cells:
            if c is None:
                line += f"  {'':>6}{'':>7}{'':>7}"
            else:
                line += f"  {_pct(c['acc']):>6}{_pct(c['ap']):>7}{_pct(c['auc']):>7}"
        lines.append(line)
    return "\n".join(lines)


@dataclass
class DemoReport:
    """What the run folder's report shows and links to; every path lies under ``run_dir``.

    Attributes:
        run_dir: the run folder (links are relative to it).
        table: :func:`format_table` of the evaluations.
        timings: stage -> seconds, in stage order.
        evaluation: the folder of ``havic evaluate`` (``report.md``, ``metrics.json``).
        plots: method -> ``index.html`` of its per-window plots.
        previews: reconstruction previews of the pretraining run, in step order.
        runs: description (e.g. "HAVIC training run") -> training run folder.
    """

    run_dir: Path
    table: str
    timings: dict[str, float]
    evaluation: Path
    plots: dict[str, Path]
    previews: list[Path]
    runs: dict[str, Path]

    def _rel(self, path: Path) -> str:
        return os.path.relpath(path, self.run_dir)

    def markdown(self) -> str:
        """``report.md``: the table, stage times and links to every output."""
        rel = self._rel
        metrics_md, metrics_json = self.evaluation / "report.md", self.evaluation / "metrics.json"
        lines = ["# havic demo", "",
                 "Synthetic talking faces (havic.demo.world), held-out test split, video-level scores.", "",
                 "```", self.table, "```", "", "Values in %; a category of fakes is ranked against all real test "
                 "videos; the real category has ACC only.", "", "## Stage times", ""]
        lines += [f"- {k}: {v:.1f} s" for k, v in self.timings.items()]
        lines += ["", "## Files", "",
                  f"- metrics: [{rel(metrics_md)}]({rel(metrics_md)}), [{rel(metrics_json)}]({rel(metrics_json)})"]
        lines += [f"- per-window plots, {m}: [{rel(f)}]({rel(f)})" for m, f in self.plots.items()]
        lines += [f"- reconstruction preview: [{rel(f)}]({rel(f)})" for f in self.previews]
        lines += [f"- {what}: {rel(run)}" for what, run in self.runs.items()]
        return "\n".join(lines) + "\n"

    def html(self) -> str:
        """``index.html``: the table, stage times, the per-window plots and the last two previews."""
        def rel(q: Path) -> str:
            return html.escape(self._rel(q))

        parts = ["<!DOCTYPE html><html><head><meta charset='utf-8'><title>havic demo</title>",
                 "<style>body{font-family:sans-serif;margin:1em} img{max-width:100%}</style></head><body>",
                 "<h1>havic demo</h1><h2>Held-out test split (values in %)</h2>",
                 f"<pre>{html.escape(self.table)}</pre>", "<h2>Stage times</h2><ul>"]
        parts += [f"<li>{html.escape(k)}: {v:.1f} s</li>" for k, v in self.timings.items()]
        parts += ["</ul><h2>Per-window scores</h2><ul>"]
        parts += [f"<li><a href='{rel(f)}'>{html.escape(m)}</a></li>" for m, f in self.plots.items()]
        parts += [f"</ul><p><a href='{rel(self.evaluation / 'report.html')}'>evaluation report</a></p>",
                  "<h2>Reconstruction previews (pretraining)</h2>"]
        parts += [f"<p>{html.escape(f.stem)}<br><img src='{rel(f)}'></p>" for f in self.previews[-2:]]
        parts.append("</body></html>")
        return "\n".join(parts) + "\n"

    def write(self) -> Path:
        """``results.txt`` (the table), ``report.md`` and ``index.html`` in the run folder; returns report.md.

        The evaluation's ``report.md`` is also rendered as ``report.html`` beside it, which the index links.
        """
        atomic_write_text(self.run_dir / "results.txt", self.table + "\n")
        if (self.evaluation / "report.md").is_file():
            write_markdown_page(self.evaluation / "report.md", title="havic demo: evaluation")
        report = atomic_write_text(self.run_dir / "report.md", self.markdown())
        atomic_write_text(self.run_dir / "index.html", self.html())
        return report
