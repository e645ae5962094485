"""``make demo``: the whole method on a synthetic dataset, end to end, on a CPU in minutes.

Every stage runs the project's own command-line tools in this process (their ``main`` functions,
so nothing is re-implemented here) on files written to the run folder, and each stage prints the
equivalent shell command, so the same steps can be repeated by hand on real data:

1. ``data``: generate a pretraining corpus of real talking faces and a labelled detection set
   (real clips and the four fake categories of :mod:`havic.data.synthetic`) as mp4 files;
2. ``manifest``: ``tools/build_manifest.py generic`` (seeded split by video, stratified by
   category for the detection set);
3. ``preprocess``: ``tools/preprocess.py`` (Haar face detector, fbank, clip cache) for both;
4. ``pretrain``: ``tools/train.py configs/demo/pretrain.yaml`` on the real corpus only;
5. ``finetune``: ``tools/train.py configs/demo/finetune.yaml`` from the pretraining export, and the
   same budget from scratch (``configs/ablations/no_pretraining.yaml``, the paper's "w/o HCP");
6. ``score``: ``tools/infer.py`` on the held-out test videos with sliding windows, for both;
7. ``evaluate``: ``tools/evaluate.py --compare``: ACC / AP / AUC overall and per category;
8. ``report``: ``report.md``, ``index.html`` and ``summary.json`` in the run folder.

The demo settings (data sizes, configurations, budgets) are :class:`DemoSettings`, read from
``configs/demo/demo.yaml`` (plus ``configs/demo/quick.yaml`` for the reduced run of the tests)
and ``key=value`` overrides.
"""
from __future__ import annotations

import dataclasses
import html
import json
import logging
import os
import shlex
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, ValidationError

from havic.config import CONFIG_DIR
from havic.utils.io import atomic_write_json, atomic_write_text

__all__ = [
    "DEMO_CONFIG",
    "QUICK_CONFIG",
    "Demo",
    "DemoError",
    "DemoSettings",
    "METHODS",
    "STAGES",
    "format_table",
    "load_settings",
]

log = logging.getLogger(__name__)

REPO_DIR = CONFIG_DIR.parent
DEMO_CONFIG = CONFIG_DIR / "demo" / "demo.yaml"
QUICK_CONFIG = CONFIG_DIR / "demo" / "quick.yaml"
STAGES = ("data", "manifest", "preprocess", "pretrain", "finetune", "score", "evaluate", "report")
# The two detectors compared: method name in the table -> folder name.
METHODS = {"HAVIC": "havic", "w/o HCP": "wo_hcp"}


class DemoError(RuntimeError):
    """A stage failed; the message names the stage and what to look at."""


@dataclass
class DemoSettings:
    """What the demo generates and runs (``configs/demo/demo.yaml`` documents every key)."""

    seed: int = 0
    n_identities: int = 4
    duration_s: float = 6.4
    fps: float = 5.0
    frame_size: int = 96
    pretrain_videos: int = 80
    real_videos: int = 80
    fake_videos_per_category: int = 25
    split_fractions: list[float] = field(default_factory=lambda: [0.6, 0.1, 0.3])
    pretrain_split_fractions: list[float] = field(default_factory=lambda: [0.875, 0.125])
    workers: int = 2
    pretrain_config: str = "configs/demo/pretrain.yaml"
    finetune_config: str = "configs/demo/finetune.yaml"
    no_pretraining_config: str = "configs/ablations/no_pretraining.yaml"
    pretrain_overrides: list[str] = field(default_factory=list)
    finetune_overrides: list[str] = field(default_factory=list)
    detector_weights: str = "last"
    hop_seconds: float = 0.4
    aggregate: str = "mean"
    batch_size: int = 8


def load_settings(files: Sequence[str | os.PathLike] = (DEMO_CONFIG,), overrides: Sequence[str] = ()) -> DemoSettings:
    """Demo settings from YAML files (merged in order) and ``key=value`` overrides; unknown keys are errors."""
    cfg = OmegaConf.structured(DemoSettings)
    try:
        for f in files:
            cfg = OmegaConf.merge(cfg, OmegaConf.load(f))
        bad = [o for o in overrides if "=" not in o]
        if bad:
            raise DemoError(f"overrides must look like key=value, got {bad}")
        cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(overrides)))
    except (ConfigKeyError, ValidationError) as err:
        raise DemoError(f"demo settings: {err}") from None
    settings: DemoSettings = OmegaConf.to_object(cfg)  # type: ignore[assignment]
    if settings.n_identities < 3:
        raise DemoError(f"n_identities={settings.n_identities}: the fakes need at least 3 identities")
    if settings.detector_weights not in ("best", "last"):
        raise DemoError(f"detector_weights={settings.detector_weights!r}: expected 'best' or 'last'")
    for key in ("pretrain_videos", "real_videos", "fake_videos_per_category"):
        if getattr(settings, key) < 1:
            raise DemoError(f"{key}={getattr(settings, key)}: must be >= 1")
    return settings


def _repo_path(path: str) -> Path:
    """A configuration path as given, or relative to the repository (``configs/...``)."""
    p = Path(path)
    return p if p.is_absolute() or p.exists() else REPO_DIR / p


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
class DemoPaths:
    """Where every stage reads and writes, under the run folder."""

    run_dir: Path

    def __post_init__(self) -> None:
        r = self.run_dir
        self.pretrain_data = r / "data" / "pretrain"
        self.detect_data = r / "data" / "detect"
        self.manifests = r / "manifests"
        self.pretrain_manifest = self.manifests / "pretrain.csv"
        self.detect_manifest = self.manifests / "detect.csv"
        self.test_manifest = self.manifests / "detect_test.csv"
        self.pretrain_cache = r / "cache" / "pretrain"
        self.detect_cache = r / "cache" / "detect"
        self.train = r / "train"
        self.scores = r / "scores"
        self.evaluation = r / "evaluation"

    def scores_of(self, method: str) -> Path:
        return self.scores / METHODS[method]


class Demo:
    """The demo pipeline over one run folder; call the stage methods in order, or :meth:`run`.

    Args:
        settings: what to generate and run.
        run_dir: the run folder (created).
        echo: where progress lines go (the CLI passes ``print``; default: this module's logger).
    """

    def __init__(self, settings: DemoSettings, run_dir: str | os.PathLike,
                 echo: Callable[[str], None] | None = None) -> None:
        self.settings = settings
        self.paths = DemoPaths(Path(run_dir))
        self.paths.run_dir.mkdir(parents=True, exist_ok=True)
        self.echo = echo if echo is not None else log.info
        self.timings: dict[str, float] = {}
        self.outputs: dict[str, Any] = {}

    # -- helpers ---------------------------------------------------------------------------------

    @staticmethod
    def _rel(path: str | os.PathLike) -> str:
        """``path`` relative to the working directory when it lies below it, else as given."""
        p = Path(path)
        try:
            return str(p.resolve().relative_to(Path.cwd().resolve()))
        except ValueError:
            return str(p)

    def _tool(self, stage: str, script: str, main: Callable[[list[str]], int], argv: list[str]) -> None:
        """Run a tool's ``main`` in this process, after printing the equivalent command."""
        self.echo("$ python " + " ".join(shlex.quote(a) for a in [f"tools/{script}", *argv]))
        try:
            rc = main(argv)
        except SystemExit as exit_:    # the tools exit with a message on bad input
            if isinstance(exit_.code, str):
                raise DemoError(f"stage {stage}: tools/{script}: {exit_.code}") from None
            rc = exit_.code
        if rc not in (0, None):
            raise DemoError(f"stage {stage}: tools/{script} exited with status {rc}")

    def _stage(self, index: int, name: str, what: str) -> float:
        self.echo("")
        self.echo(f"=== [{index}/{len(STAGES)}] {name}: {what}")
        return time.perf_counter()

    def _done(self, name: str, start: float) -> None:
        self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - start
        self.echo(f"--- {name} done in {self.timings[name]:.1f} s")

    def _synthetic_config(self) -> Any:
        from havic.data.synthetic import SyntheticConfig

        s = self.settings
        return SyntheticConfig(duration_s=s.duration_s, fps=s.fps, frame_size=s.frame_size,
                               n_identities=s.n_identities, seed=s.seed)

    # -- stages ----------------------------------------------------------------------------------

    def generate_data(self) -> None:
        """Stage 1: the pretraining corpus (real clips) and the detection set (real and fake clips)."""
        from havic.data.synthetic import CATEGORIES, plan_clips, write_clips

        s, p = self.settings, self.paths
        t0 = self._stage(1, "data", "synthetic talking faces (skimage astronaut, speech synthesised in code)")
        config = self._synthetic_config()
        corpus = plan_clips({"RVRA": s.pretrain_videos}, config, prefix="corpus", seed_offset=1)
        detect = plan_clips({"RVRA": s.real_videos, **{c: s.fake_videos_per_category for c in CATEGORIES[1:]}},
                            config, prefix="clip", seed_offset=0)
        for name, root, specs, layout in (("pretraining corpus", p.pretrain_data, corpus, "real_fake"),
                                          ("detection set", p.detect_data, detect, "category")):
            last = [-1.0]

            def progress(done: int, total: int, name: str = name, last: list[float] = last) -> None:
                if done == total or time.perf_counter() - last[0] > 5.0:
                    last[0] = time.perf_counter()
                    self.echo(f"  {name}: {done}/{total} videos")

            write_clips(root, specs, config, layout=layout, workers=s.workers, progress=progress)
        self.echo(f"  {len(corpus)} real corpus videos in {self._rel(p.pretrain_data)}; {len(detect)} detection "
                  f"videos ({s.real_videos} real, {s.fake_videos_per_category} per fake category) in "
                  f"{self._rel(p.detect_data)}; {s.duration_s:g} s each, {s.frame_size} px, {s.fps:g} fps, "
                  f"{s.n_identities} identities")
        self._done("data", t0)

    def build_manifests(self) -> None:
        """Stage 2: manifests with seeded splits (``tools/build_manifest.py generic``), and the test subset."""
        from havic.data.manifest import read_manifest, write_manifest
        from tools import build_manifest

        s, p = self.settings, self.paths
        t0 = self._stage(2, "manifest", "generic adapter, seeded split by video")
        self._tool("manifest", "build_manifest.py", build_manifest.main, [
            "generic", str(p.pretrain_data), "--out", str(p.pretrain_manifest), "--split", "paper",
            "--fractions", *map(str, s.pretrain_split_fractions), "--seed", str(s.seed)])
        self._tool("manifest", "build_manifest.py", build_manifest.main, [
            "generic", str(p.detect_data), "--labels-csv", str(p.detect_data / "labels.csv"),
            "--out", str(p.detect_manifest), "--split", "paper", "--fractions", *map(str, s.split_fractions),
            "--stratify", "category", "--seed", str(s.seed)])
        manifest = read_manifest(p.detect_manifest)
        test = manifest.subset("test")
        if not len(test):
            raise DemoError(f"stage manifest: {p.detect_manifest} has no test videos; use more videos")
        write_manifest(test, p.test_manifest)
        self.echo(f"  held-out test manifest: {self._rel(p.test_manifest)} ({len(test)} videos)")
        self._done("manifest", t0)

    def preprocess(self) -> None:
        """Stage 3: face crops and fbanks of every clip into the two caches (``tools/preprocess.py``)."""
        from tools import preprocess

        s, p = self.settings, self.paths
        t0 = self._stage(3, "preprocess", "decode, Haar face detector, fbank, clip cache")
        config = str(_repo_path(s.finetune_config))
        for manifest, root, cache in ((p.pretrain_manifest, p.pretrain_data, p.pretrain_cache),
                                      (p.detect_manifest, p.detect_data, p.detect_cache)):
            self._tool("preprocess", "preprocess.py", preprocess.main, [
                str(manifest), "--root", str(root), "--out", str(cache), config, "--workers", str(s.workers)])
        self._done("preprocess", t0)

    def _train(self, stage: str, name: str, files: list[str], overrides: list[str]) -> Path:
        """One ``tools/train.py`` run under ``train/``; returns its run folder."""
        from havic.utils.logging import setup_logging
        from tools import train

        argv = [*files, f"train.run_dir={self.paths.train}", f"train.name={name}", *overrides]
        before = set(self.paths.train.iterdir()) if self.paths.train.is_dir() else set()
        try:
            self._tool(stage, "train.py", train.main, argv)
        finally:
            setup_logging()  # the run attached its train.log to the root logger: detach it
        new = [q for q in self.paths.train.iterdir() if q not in before and q.name.startswith(f"{name}-")]
        if len(new) != 1:
            raise DemoError(f"stage {stage}: expected one new run folder {self.paths.train}/{name}-*, found {new}")
        return new[0]

    def pretrain(self) -> Path:
        """Stage 4: pretraining on the real corpus; returns the exported weights."""
        s = self.settings
        t0 = self._stage(4, "pretrain", "masked reconstruction + segment contrast + cross-modal prediction, "
                                        "real clips only")
        run = self._train("pretrain", "pretrain", [str(_repo_path(s.pretrain_config))],
                          [f"data.cache_dir={self.paths.pretrain_cache}", f"seed={s.seed}", *s.pretrain_overrides])
        weights = run / "export" / "best.safetensors"
        if not weights.is_file():
            raise DemoError(f"stage pretrain: {weights} was not written")
        self.outputs["pretrain_run"] = run
        self.outputs["pretrain_weights"] = weights
        self.echo(f"  pretraining export: {self._rel(weights)}")
        self._done("pretrain", t0)
        return weights

    def finetune(self, init_from: str | os.PathLike | None) -> dict[str, Path]:
        """Stage 5: the detector from the pretraining weights, and the same budget from scratch."""
        s = self.settings
        t0 = self._stage(5, "finetune", "detector on the labelled training split, validated on its val split; "
                                        "then the same budget without pretraining (w/o HCP)")
        common = [f"data.cache_dir={self.paths.detect_cache}", f"seed={s.seed}", *s.finetune_overrides]
        finetune = str(_repo_path(s.finetune_config))
        runs: dict[str, Path] = {}
        if init_from is not None:
            runs["HAVIC"] = self._train("finetune", "finetune", [finetune], [*common, f"train.init_from={init_from}"])
        runs["w/o HCP"] = self._train("finetune", "finetune-wo-hcp",
                                      [finetune, str(_repo_path(s.no_pretraining_config))],
                                      common)
        weights = {}
        for method, run in runs.items():
            w = run / "export" / f"{s.detector_weights}.safetensors"
            if not w.is_file():
                raise DemoError(f"stage finetune: {w} was not written")
            weights[method] = w
            self.echo(f"  {method} detector: {self._rel(w)}")
        self.outputs["finetune_runs"] = runs
        self.outputs["detectors"] = weights
        self._done("finetune", t0)
        return weights

    def score(self, detectors: dict[str, Path]) -> dict[str, Path]:
        """Stage 6: sliding-window scoring of the held-out videos with each detector (``tools/infer.py``)."""
        from tools import infer

        s, p = self.settings, self.paths
        t0 = self._stage(6, "score", f"held-out test videos, {s.hop_seconds:g} s hop, {s.aggregate} of the windows")
        predictions = {}
        for k, (method, weights) in enumerate(detectors.items()):
            out = p.scores_of(method)
            # Per-window plots (one PNG per video) of the first detector only: drawing them costs time.
            report = ["--report-dir", str(out / "report")] if k == 0 else []
            self._tool("score", "infer.py", infer.main, [
                str(p.test_manifest), "--root", str(p.detect_data), "--weights", str(weights),
                "--out", str(out / "predictions.csv"), "--json", str(out / "predictions.json"), *report,
                "--hop-seconds", str(s.hop_seconds), "--aggregate", s.aggregate, "--batch-size", str(s.batch_size),
                "--device", "cpu"])
            predictions[method] = out / "predictions.csv"
        self.outputs["predictions"] = predictions
        self._done("score", t0)
        return predictions

    def evaluate(self, predictions: dict[str, Path]) -> dict[str, dict[str, Any]]:
        """Stage 7: ACC / AP / AUC overall and per category for each detector (``tools/evaluate.py``)."""
        from tools import evaluate

        p = self.paths
        t0 = self._stage(7, "evaluate", "video level, overall and per category")
        argv = []
        for method, preds in predictions.items():
            argv += ["--compare", f"{method}={preds}"]
        argv += ["--manifest", str(p.test_manifest), "--by", "category", "--out-dir", str(p.evaluation)]
        self._tool("evaluate", "evaluate.py", evaluate.main, argv)
        metrics = json.loads((p.evaluation / "metrics.json").read_text(encoding="utf-8"))
        evaluations = {method: runs[0] for method, runs in metrics["runs"].items()}
        self.outputs["evaluations"] = evaluations
        self._done("evaluate", t0)
        return evaluations

    def write_report(self, evaluations: dict[str, dict[str, Any]]) -> Path:
        """Stage 8: ``report.md``, ``index.html`` and ``summary.json`` in the run folder."""
        from havic.data.synthetic import CATEGORIES

        p = self.paths
        t0 = self._stage(8, "report", "previews, per-window plots, metrics")
        table = format_table(evaluations, [c for c in CATEGORIES if any(
            c in ev.get("groups", {}).get("category", {}) for ev in evaluations.values())])
        self.outputs["table"] = table
        def rel(q: Path) -> str:
            return os.path.relpath(q, p.run_dir)

        previews = sorted((self.outputs["pretrain_run"] / "previews").glob("*.png")) \
            if "pretrain_run" in self.outputs else []
        plots = {m: p.scores_of(m) / "report" / "index.html" for m in evaluations
                 if m in METHODS and (p.scores_of(m) / "report" / "index.html").is_file()}
        atomic_write_text(p.run_dir / "results.txt", table + "\n")
        lines = ["# havic demo", "",
                 "Synthetic talking faces (havic.data.synthetic), held-out test split, video-level scores.", "",
                 "```", table, "```", "", "Values in %; a category of fakes is ranked against all real test "
                 "videos; the real category has ACC only.", "", "## Stage times", ""]
        lines += [f"- {k}: {v:.1f} s" for k, v in self.timings.items()]
        lines += ["", "## Files", "",
                  f"- metrics: [{rel(p.evaluation / 'report.md')}]({rel(p.evaluation / 'report.md')}), "
                  f"[{rel(p.evaluation / 'metrics.json')}]({rel(p.evaluation / 'metrics.json')})"]
        lines += [f"- per-window plots, {m}: [{rel(f)}]({rel(f)})" for m, f in plots.items()]
        lines += [f"- reconstruction preview: [{rel(f)}]({rel(f)})" for f in previews]
        for method, run in self.outputs.get("finetune_runs", {}).items():
            lines.append(f"- {method} training run: {rel(run)}")
        if "pretrain_run" in self.outputs:
            lines.append(f"- pretraining run: {rel(self.outputs['pretrain_run'])}")
        report = atomic_write_text(p.run_dir / "report.md", "\n".join(lines) + "\n")
        self._write_html(table, previews, plots)
        self._done("report", t0)
        atomic_write_json(p.run_dir / "summary.json", {
            "settings": dataclasses.asdict(self.settings),
            "timings_s": self.timings, "total_s": sum(self.timings.values()),
            "evaluations": evaluations, "table": table,
            "files": {k: str(v) for k, v in self.outputs.items() if isinstance(v, Path)},
        }, sort_keys=False)
        return report

    def _write_html(self, table: str, previews: list[Path], plots: dict[str, Path]) -> Path:
        p = self.paths

        def rel(q: Path) -> str:
            return html.escape(os.path.relpath(q, p.run_dir))

        parts = ["<!DOCTYPE html><html><head><meta charset='utf-8'><title>havic demo</title>",
                 "<style>body{font-family:sans-serif;margin:1em} img{max-width:100%}</style></head><body>",
                 "<h1>havic demo</h1><h2>Held-out test split (values in %)</h2>",
                 f"<pre>{html.escape(table)}</pre>", "<h2>Stage times</h2><ul>"]
        parts += [f"<li>{html.escape(k)}: {v:.1f} s</li>" for k, v in self.timings.items()]
        parts += ["</ul><h2>Per-window scores</h2><ul>"]
        parts += [f"<li><a href='{rel(f)}'>{html.escape(m)}</a></li>" for m, f in plots.items()]
        parts += [f"</ul><p><a href='{rel(p.evaluation / 'report.md')}'>evaluation report</a></p>",
                  "<h2>Reconstruction previews (pretraining)</h2>"]
        parts += [f"<p>{html.escape(f.stem)}<br><img src='{rel(f)}'></p>" for f in previews[-2:]]
        parts.append("</body></html>")
        return atomic_write_text(p.run_dir / "index.html", "\n".join(parts) + "\n")

    # -- everything ------------------------------------------------------------------------------

    def run(self, pretraining: bool = True) -> str:
        """All stages; returns the results table.

        Args:
            pretraining: False skips pretraining and scores the "w/o HCP" detector alone.
        """
        self.generate_data()
        self.build_manifests()
        self.preprocess()
        init = self.pretrain() if pretraining else None
        detectors = self.finetune(init)
        predictions = self.score(detectors)
        evaluations = self.evaluate(predictions)
        self.write_report(evaluations)
        return self.outputs["table"]


def default_run_dir(parent: str | os.PathLike = "runs", now: datetime | None = None) -> Path:
    """``<parent>/demo-<YYYYmmdd-HHMMSS>``."""
    return Path(parent) / f"demo-{(now or datetime.now()).strftime('%Y%m%d-%H%M%S')}"
