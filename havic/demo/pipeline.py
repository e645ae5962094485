"""The demo pipeline: every stage of the method on the synthetic dataset, through the project's commands.

Every stage runs the project's own commands in this process (the ``main`` functions of
:mod:`havic.cli`, so nothing is re-implemented here) on files written to the run folder, and each
stage prints the equivalent shell command, so the same steps can be repeated by hand on real data:

1. ``data``: generate a pretraining corpus of real talking faces and a labelled detection set
   (real clips and the four fake categories of :mod:`havic.demo.world`) as mp4 files;
2. ``manifest``: ``tools/build_manifest.py generic`` (seeded split by video, stratified by
   category for the detection set);
3. ``preprocess``: ``tools/preprocess.py`` (Haar face detector, fbank, clip cache) for both;
4. ``pretrain``: ``tools/train.py configs/demo/pretrain.yaml`` on the real corpus only;
5. ``finetune``: ``tools/train.py configs/demo/finetune.yaml`` from the pretraining export, and the
   same budget from scratch (``configs/ablations/no_pretraining.yaml``, the paper's "w/o HCP");
6. ``score``: ``tools/infer.py`` on the held-out test videos with sliding windows, for both;
7. ``evaluate``: ``tools/evaluate.py --compare``: ACC / AP / AUC overall and per category;
8. ``report``: ``report.md``, ``index.html`` and ``summary.json`` in the run folder
   (:mod:`havic.demo.report`).

The commands are imported inside the stages that run them: the data stage's worker processes
import this package, and should not pay for loading the training stack.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from havic.data.manifest import read_manifest, write_manifest
from havic.demo.report import DemoReport, format_table
from havic.demo.settings import DemoError, DemoSettings, config_file
from havic.demo.world import CATEGORIES, SyntheticConfig, plan_clips, write_clips
from havic.utils.io import atomic_write_json
from havic.utils.logging import setup_logging

__all__ = ["METHODS", "STAGES", "Demo", "DemoPaths", "default_run_dir"]

log = logging.getLogger(__name__)

STAGES = ("data", "manifest", "preprocess", "pretrain", "finetune", "score", "evaluate", "report")
# The two detectors compared: method name in the table -> folder name.
METHODS = {"HAVIC": "havic", "w/o HCP": "wo_hcp"}


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

    def _tool(self, stage: str, script: str, main: Callable[[list[str]], int], argv: list[str],
              ok: tuple[int, ...] = (0,)) -> None:
        """Run a command's ``main`` (:mod:`havic.cli`) in this process, after printing its script's command line.

        `ok`: the exit codes that let the demo go on.
        """
        self.echo("$ python " + " ".join(shlex.quote(a) for a in [f"tools/{script}", *argv]))
        try:
            rc = main(argv)
        except SystemExit as exit_:    # the tools exit with a message on bad input
            if isinstance(exit_.code, str):
                raise DemoError(f"stage {stage}: tools/{script}: {exit_.code}") from None
            rc = exit_.code
        if rc not in (*ok, None):
            raise DemoError(f"stage {stage}: tools/{script} exited with status {rc}")

    def _stage(self, index: int, name: str, what: str) -> float:
        self.echo("")
        self.echo(f"=== [{index}/{len(STAGES)}] {name}: {what}")
        return time.perf_counter()

    def _done(self, name: str, start: float) -> None:
        self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - start
        self.echo(f"--- {name} done in {self.timings[name]:.1f} s")

    def _synthetic_config(self) -> SyntheticConfig:
        s = self.settings
        return SyntheticConfig(duration_s=s.duration_s, fps=s.fps, frame_size=s.frame_size,
                               n_identities=s.n_identities, seed=s.seed)

    # -- stages ----------------------------------------------------------------------------------

    def generate_data(self) -> None:
        """Stage 1: the pretraining corpus (real clips) and the detection set (real and fake clips)."""
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
        from havic.cli import build_manifest

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
        from havic.cli import preprocess

        s, p = self.settings, self.paths
        t0 = self._stage(3, "preprocess", "decode, Haar face detector, fbank, clip cache")
        config = str(config_file(s.finetune_config))
        for manifest, root, cache in ((p.pretrain_manifest, p.pretrain_data, p.pretrain_cache),
                                      (p.detect_manifest, p.detect_data, p.detect_cache)):
            self._tool("preprocess", "preprocess.py", preprocess.main, [
                str(manifest), "--root", str(root), "--out", str(cache), config, "--workers", str(s.workers)])
        self._done("preprocess", t0)

    def _train(self, stage: str, name: str, files: list[str], overrides: list[str]) -> Path:
        """One ``tools/train.py`` run under ``train/``; returns its run folder."""
        from havic.cli import train

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
        run = self._train("pretrain", "pretrain", [str(config_file(s.pretrain_config))],
                          [f"data.cache_dir={self.paths.pretrain_cache}", f"seed={s.seed}", *s.pretrain_overrides])
        weights = run / "export" / "best.safetensors"
        if not weights.is_file():  # no validation ran (fewer epochs than check_val_every_n_epoch): the last weights
            weights = run / "export" / "last.safetensors"
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
        finetune = str(config_file(s.finetune_config))
        runs: dict[str, Path] = {}
        if init_from is not None:
            runs["HAVIC"] = self._train("finetune", "finetune", [finetune], [*common, f"train.init_from={init_from}"])
        runs["w/o HCP"] = self._train("finetune", "finetune-wo-hcp",
                                      [finetune, str(config_file(s.no_pretraining_config))],
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
        from havic.cli import infer

        p = self.paths
        # Window hop, aggregation and batch size: the infer: settings, as in a plain tools/infer.py run.
        t0 = self._stage(6, "score", "held-out test videos, sliding windows (the infer: settings)")
        predictions = {}
        for k, (method, weights) in enumerate(detectors.items()):
            out = p.scores_of(method)
            # Per-window plots (one PNG per video) of the first detector only: drawing them costs time.
            report = ["--report-dir", str(out / "report")] if k == 0 else []
            self._tool("score", "infer.py", infer.main, [
                str(p.test_manifest), "--root", str(p.detect_data), "--weights", str(weights),
                "--out", str(out / "predictions.csv"), "--json", str(out / "predictions.json"), *report,
                "--device", "cpu"], ok=(0, 1))  # 1: some videos failed; their rows say why, the evaluation counts them
            predictions[method] = out / "predictions.csv"
        self.outputs["predictions"] = predictions
        self._done("score", t0)
        return predictions

    def evaluate(self, predictions: dict[str, Path]) -> dict[str, dict[str, Any]]:
        """Stage 7: ACC / AP / AUC overall and per category for each detector (``tools/evaluate.py``)."""
        from havic.cli import evaluate

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
        p = self.paths
        t0 = self._stage(8, "report", "previews, per-window plots, metrics")
        table = format_table(evaluations, [c for c in CATEGORIES if any(
            c in ev.get("groups", {}).get("category", {}) for ev in evaluations.values())])
        self.outputs["table"] = table
        previews = sorted((self.outputs["pretrain_run"] / "previews").glob("*.png")) \
            if "pretrain_run" in self.outputs else []
        plots = {m: p.scores_of(m) / "report" / "index.html" for m in evaluations
                 if m in METHODS and (p.scores_of(m) / "report" / "index.html").is_file()}
        runs = {f"{method} training run": run for method, run in self.outputs.get("finetune_runs", {}).items()}
        if "pretrain_run" in self.outputs:
            runs["pretraining run"] = self.outputs["pretrain_run"]
        report = DemoReport(run_dir=p.run_dir, table=table, timings=dict(self.timings), evaluation=p.evaluation,
                            plots=plots, previews=previews, runs=runs).write()
        self._done("report", t0)
        atomic_write_json(p.run_dir / "summary.json", {
            "settings": dataclasses.asdict(self.settings),
            "timings_s": self.timings, "total_s": sum(self.timings.values()),
            "evaluations": evaluations, "table": table,
            "files": {k: str(v) for k, v in self.outputs.items() if isinstance(v, Path)},
        }, sort_keys=False)
        return report

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
