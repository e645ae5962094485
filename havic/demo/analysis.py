"""``make analysis``: SSR-DFD probes of the demo's pretrained HAVIC against its random-init twin.

The question: which layer ("tap") of the pretrained encoders carries the real/fake signal of the
synthetic detection set, and does pretraining put it there, or would the same network with fresh
weights do as well (the shortcut baseline of SSR-DFD)? The stages:

1. ``data``: the demo's detection set, manifest and pretraining export, taken from a demo run folder
   (``--demo-dir``) or made here with the demo's own stages (data, manifests, preprocessing of the
   pretraining corpus, a short pretraining: ``configs/demo/analysis.yaml``);
2. ``twin``: the random-init twin: the pretraining export's configuration with fresh weights;
3. ``extract``: ``havic extract-features havic`` of every detection video with both weights (per-segment
   rows of every tap and of the fusion modules, :mod:`havic.features.havic_encoder`);
4. ``probe``: ``havic probe train`` per stream and weights: the LSE probe trained on the train split,
   early-stopped on val, AUC on the held-out test split;
5. ``report``: the table (rows: stream; columns: pretrained AUC, random-init AUC), an AUC heatmap,
   ``index.html`` and ``summary.json`` in the run folder.
"""
from __future__ import annotations

import dataclasses
import html
import json
import logging
import os
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from havic.config import CONFIG_DIR
from havic.demo.pipeline import Demo, DemoPaths
from havic.demo.settings import DemoError, DemoSettings, config_file
from havic.utils.io import atomic_write_bytes, atomic_write_json, atomic_write_text

__all__ = ["ANALYSIS_CONFIG", "ROWS", "Analysis", "AnalysisOptions", "format_auc_table", "pretraining_export"]

log = logging.getLogger(__name__)

ANALYSIS_CONFIG = CONFIG_DIR / "demo" / "analysis.yaml"
# The two encoders probed: column name -> folder name.
ROWS = {"pretrained": "pretrained", "random init": "random_init"}


@dataclass
class AnalysisOptions:
    """How the probes are trained: the paper's probe (L2 norm, linear head, LSE pooling), with a
    shorter schedule than its 100 epochs at batch 1 and lr 1e-3.

    Attributes:
        max_epochs: epoch cap of every probe.
        lr: Adam learning rate.
        patience: early-stopping patience on the val loss.
        batch_size: videos per step.
        seed: probe initialisation and shuffling.
        streams: the sequence names probed; None: every tap and fusion stream of the store, plus
            the early fusion of the two fusion streams.
    """

    max_epochs: int = 40
    lr: float = 1e-2
    patience: int = 8
    batch_size: int = 4
    seed: int = 43
    streams: list[str] | None = None


def pretraining_export(run_dir: str | os.PathLike) -> Path:
    """The pretraining export of a demo run folder (``train/pretrain-*/export/{best,last}.safetensors``).

    Raises:
        DemoError: none, or several pretraining runs (the message names them).
    """
    runs = sorted(Path(run_dir, "train").glob("pretrain-*"))
    if len(runs) != 1:
        raise DemoError(f"{run_dir}: expected one pretraining run train/pretrain-*, found {[str(r) for r in runs]}")
    for name in ("best", "last"):
        if (w := runs[0] / "export" / f"{name}.safetensors").is_file():
            return w
    raise DemoError(f"{runs[0]}: no export/best.safetensors or export/last.safetensors")


def format_auc_table(aucs: dict[str, dict[str, float | None]]) -> str:
    """Markdown table, rows: stream; columns: test AUC (%) of each encoder in :data:`ROWS`."""
    cols = list(ROWS)
    lines = ["| stream | " + " | ".join(f"{c} AUC" for c in cols) + " |", "|---|" + "---:|" * len(cols)]
    for stream, row in aucs.items():
        cells = ["—" if row.get(c) is None else f"{100 * row[c]:.1f}" for c in cols]
        lines.append(f"| {stream} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _heatmap(aucs: dict[str, dict[str, float | None]]) -> bytes:
    """PNG: streams x encoders, AUC in %."""
    import io

    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    grid = np.array([[np.nan if r.get(c) is None else 100 * r[c] for c in ROWS] for r in aucs.values()], dtype=float)
    fig = Figure(figsize=(5.6, 1.0 + 0.4 * len(aucs)))  # room for the long fused-stream label and the colour bar
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    im = ax.imshow(np.ma.masked_invalid(grid), vmin=0, vmax=100, cmap="RdYlGn", aspect="auto")
    ax.set_xticks(range(len(ROWS)), list(ROWS), fontsize=8)
    ax.set_yticks(range(len(aucs)), list(aucs), fontsize=8)
    for (i, j), v in np.ndenumerate(grid):
        if not np.isnan(v):
            ax.text(j, i, f"{v:.1f}", ha="center", va="center", fontsize=7)
    ax.set_title("probe test AUC (%)", fontsize=10)
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    return buf.getvalue()


class Analysis:
    """The analysis over one run folder; :meth:`run` does every stage.

    Args:
        settings: the demo settings (data and pretraining) used when no `demo_dir` is given.
        run_dir: the run folder (created).
        demo_dir: a finished ``make demo`` run folder to take the data and pretraining from.
        options: probe settings.
        echo: where progress lines go (default: this module's logger).
    """

    def __init__(self, settings: DemoSettings, run_dir: str | os.PathLike, demo_dir: str | os.PathLike | None = None,
                 options: AnalysisOptions | None = None, echo: Callable[[str], None] | None = None) -> None:
        self.settings = settings
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.demo_dir = Path(demo_dir) if demo_dir is not None else None
        self.options = options or AnalysisOptions()
        self.echo = echo if echo is not None else log.info
        self.timings: dict[str, float] = {}
        # The demo's stages, run in this folder when no demo run folder is given.
        self.demo = Demo(settings, self.demo_dir or self.run_dir, echo=self.echo)
        self.paths: DemoPaths = self.demo.paths

    def _tool(self, stage: str, name: str, main: Callable[[list[str]], int], argv: list[str]) -> None:
        self.echo("$ havic " + " ".join(shlex.quote(a) for a in [name, *argv]))
        try:
            rc = main(argv)
        except SystemExit as exit_:
            if isinstance(exit_.code, str):
                raise DemoError(f"stage {stage}: havic {name}: {exit_.code}") from None
            rc = exit_.code
        if rc not in (0, None):
            raise DemoError(f"stage {stage}: havic {name} exited with status {rc}")

    def _timed(self, name: str, start: float) -> None:
        self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - start
        self.echo(f"--- {name} done in {self.timings[name]:.1f} s")

    # -- stages ----------------------------------------------------------------------------------

    def prepare(self) -> Path:
        """Stage 1: the detection set, its manifest and the pretraining export; returns the export."""
        t0 = time.perf_counter()
        if self.demo_dir is not None:
            self.echo(f"=== data: from the demo run {self.demo_dir}")
            if not self.paths.detect_manifest.is_file():
                raise DemoError(f"{self.demo_dir}: no {self.paths.detect_manifest.relative_to(self.demo_dir)}; "
                                "is it a `make demo` run folder?")
            weights = pretraining_export(self.demo_dir)
        else:
            from havic.cli import preprocess

            self.demo.generate_data()
            self.demo.build_manifests()
            self.echo("=== preprocess: the pretraining corpus (the probes read the videos themselves)")
            p = self.paths
            self._tool("data", "preprocess", preprocess.main, [
                str(p.pretrain_manifest), "--root", str(p.pretrain_data), "--out", str(p.pretrain_cache),
                str(config_file(self.settings.finetune_config)), "--workers", str(self.settings.workers)])
            weights = self.demo.pretrain()
        self.echo(f"  pretraining export: {weights}")
        self._timed("data", t0)
        return weights

    def make_twin(self, weights: Path) -> Path:
        """Stage 2: the random-init twin: `weights`' configuration, fresh weights seeded by its ``seed``."""
        from havic.checkpoints.files import read_weights, save_weights
        from havic.checkpoints.strict import fresh_model

        t0 = time.perf_counter()
        self.echo("=== twin: same configuration, fresh weights")
        w = read_weights(weights)
        twin = self.run_dir / "random_init" / "random_init.safetensors"
        twin.parent.mkdir(parents=True, exist_ok=True)
        save_weights(twin, fresh_model(w.config, w.kind).state_dict(), w.config, w.kind, source="random init")
        self._timed("twin", t0)
        return twin

    def extract(self, weights: dict[str, Path]) -> dict[str, Path]:
        """Stage 3: a feature store of the detection set per encoder."""
        from havic.cli import extract_features

        t0 = time.perf_counter()
        self.echo("=== extract: HAVIC segment features of every detection video, every tap")
        stores = {}
        for row, w in weights.items():
            stores[row] = self.run_dir / "features" / ROWS[row]
            self._tool("extract", "extract-features", extract_features.main, [
                "havic", str(w), str(self.paths.detect_manifest), "--root", str(self.paths.detect_data),
                "--out", str(stores[row]), "--device", "cpu", "--no-progress"])
        self._timed("extract", t0)
        return stores

    def streams(self, store: Path) -> list[str]:
        """The sequence names probed (see :class:`AnalysisOptions`)."""
        if self.options.streams:
            return list(self.options.streams)
        from havic.features.store import FeatureStore

        names = str(FeatureStore(store).settings.get("streams", "")).split(",")
        fused = [n for n in names if n.endswith("/fusion")]
        return [n for n in names if n] + (["+".join(fused)] if len(fused) == 2 else [])

    def probe(self, stores: dict[str, Path]) -> dict[str, dict[str, float | None]]:
        """Stage 4: one probe per stream and encoder; returns ``{stream: {encoder: test AUC}}``."""
        from havic.cli import probe

        t0 = time.perf_counter()
        o = self.options
        self.echo("=== probe: LSE probes, train split -> test split")
        aucs: dict[str, dict[str, float | None]] = {}
        for stream in self.streams(next(iter(stores.values()))):
            aucs[stream] = {}
            for row, store in stores.items():
                out = self.run_dir / "probes" / ROWS[row] / stream.replace("/", "_")
                self._tool("probe", "probe", probe.main, [
                    "train", str(store), "--manifest", str(self.paths.detect_manifest), "--feature", stream,
                    "--out", str(out), "--max-epochs", str(o.max_epochs), "--lr", str(o.lr),
                    "--patience", str(o.patience), "--batch-size", str(o.batch_size), "--seed", str(o.seed)])
                metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
                aucs[stream][row] = metrics["test"]["auc"]
        self._timed("probe", t0)
        return aucs

    def report(self, aucs: dict[str, dict[str, float | None]], weights: dict[str, Path]) -> str:
        """Stage 5: the table, ``auc.png``, ``index.html`` and ``summary.json``; returns the table."""
        t0 = time.perf_counter()
        table = format_auc_table(aucs)
        atomic_write_bytes(self.run_dir / "auc.png", _heatmap(aucs))
        atomic_write_text(self.run_dir / "table.md", table + "\n")
        rows = "".join(
            "<tr><td>" + html.escape(s) + "</td>" + "".join(
                f"<td>{'—' if r.get(c) is None else f'{100 * r[c]:.1f}'}</td>" for c in ROWS) + "</tr>"
            for s, r in aucs.items())
        head = "".join(f"<th>{html.escape(c)} AUC (%)</th>" for c in ROWS)
        source = f"the demo run {self.demo_dir}" if self.demo_dir else "data and pretraining made in this folder"
        atomic_write_text(self.run_dir / "index.html", (
            "<!doctype html><html><head><meta charset='utf-8'><title>HAVIC probe analysis</title></head><body>"
            "<h1>SSR-DFD probes of the demo's HAVIC: pretrained vs random init</h1>"
            f"<p>Detection set and pretraining: {html.escape(source)}. One LSE probe per stream, trained on the "
            "train split, early-stopped on val, AUC on the held-out test split.</p>"
            f"<table border='1' cellpadding='4'><tr><th>stream</th>{head}</tr>{rows}</table>"
            "<h2>Heatmap</h2><img src='auc.png' alt='probe AUC heatmap'>"
            f"<p>Probe folders: <code>probes/</code>; feature stores: <code>features/</code>; "
            f"stage times: {html.escape(', '.join(f'{k} {v:.0f} s' for k, v in self.timings.items()))}.</p>"
            "</body></html>\n"))
        self._timed("report", t0)
        atomic_write_json(self.run_dir / "summary.json", {
            "settings": dataclasses.asdict(self.settings), "options": dataclasses.asdict(self.options),
            "demo_dir": None if self.demo_dir is None else str(self.demo_dir),
            "weights": {k: str(v) for k, v in weights.items()}, "aucs": aucs, "table": table,
            "timings_s": self.timings, "total_s": sum(self.timings.values()),
        }, sort_keys=False)
        return table

    def run(self) -> str:
        """Every stage; returns the table."""
        pretrained = self.prepare()
        weights = {"pretrained": pretrained, "random init": self.make_twin(pretrained)}
        stores = self.extract(weights)
        aucs = self.probe(stores)
        return self.report(aucs, weights)
