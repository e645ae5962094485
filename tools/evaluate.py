"""Evaluate detectors: ACC / AP / AUC overall and per group, with coverage, at video or clip level.

Usage:
    # (a) existing predictions (labels/categories joined from the manifest by path if missing)
    python tools/evaluate.py --predictions P.csv [--manifest M.csv] [--by category generator]
    # (b) score the manifest's test split first (video level, sliding windows), then evaluate
    python tools/evaluate.py --manifest M.csv --weights W --root R [--split test] [CONFIG ...] [key=value ...]
    # (c) several runs (seeds): mean ± std per method, paper-style table
    python tools/evaluate.py --predictions seed0.csv seed1.csv seed2.csv [--name havic]
    python tools/evaluate.py --compare havic=s0.csv,s1.csv --compare baseline=b0.csv,b1.csv --manifest M.csv
    # (d) clip level: the clips of a cache split (validation numbers of training)
    python tools/evaluate.py --cache CACHE --weights W [--split val]
Everything goes to --out-dir: report.md, metrics.json and, when scoring, the predictions CSV.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from havic import evaluation as ev
from havic.checkpoints import CheckpointError
from havic.config import ConfigError
from havic.data.manifest import ManifestError, read_manifest
from havic.inference import (
    VideoScorer, build_cropper, collect_inputs, load_detector, read_predictions, run_inference,
    write_predictions_csv,
)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("config", nargs="*", help="YAML config files and key=value overrides (with --weights)")
    p.add_argument("--predictions", nargs="+", type=Path, help="prediction CSV/JSON files (several: runs)")
    p.add_argument("--compare", action="append", default=[], metavar="NAME=P1,P2", help="a method and its runs")
    p.add_argument("--name", default="havic", help="method name of --predictions in the runs table")
    p.add_argument("--manifest", type=Path, help="manifest CSV: labels, categories, the split to score")
    p.add_argument("--weights", help="detector to score --manifest (video level) and/or --cache (clip level)")
    p.add_argument("--cache", type=Path, help="clip cache for clip-level evaluation")
    p.add_argument("--root", type=Path, help="dataset root of the manifest paths (default: data.root)")
    p.add_argument("--split", help="split to score (default: data.test_split; clip level: data.val_split); "
                                   "'all' scores every row (cross-dataset manifests without splits)")
    p.add_argument("--by", nargs="+", default=["category"], help="grouping columns")
    p.add_argument("--threshold", type=float, default=0.5)
    p.add_argument("--out-dir", type=Path, default=Path("evaluation"))
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--aggregate", default="mean", choices=("mean", "max", "lse"))
    p.add_argument("--max-seconds", type=float)
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32",
                   help="model arithmetic: bf16 autocast is about 2x faster on CPUs with AVX512-BF16 and on GPUs; "
                        "fp16 needs CUDA")
    ns = p.parse_intermixed_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return _run(p, ns)
    except (CheckpointError, ConfigError, ManifestError, ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def _run(p: argparse.ArgumentParser, ns: argparse.Namespace) -> int:
    manifest = read_manifest(ns.manifest) if ns.manifest else None
    runs: dict[str, list[ev.Evaluation]] = {}

    def add(method: str, name: str, preds, level: str = "video") -> None:
        if manifest is not None and level == "video":
            preds, _ = ev.join_manifest(preds, manifest)
        runs.setdefault(method, []).append(ev.evaluate(preds, ns.by, ns.threshold, name=name, level=level))

    for spec in ns.compare:
        method, _, files = spec.partition("=")
        if not files:
            p.error(f"--compare {spec!r}: expected NAME=P1.csv,P2.csv")
        for f in files.split(","):
            add(method, f, read_predictions(f))
    for f in ns.predictions or []:
        add(ns.name, str(f), read_predictions(f))
    if ns.weights:
        model, cfg = load_detector(ns.weights, ns.device, config_overrides=ns.config)
        if manifest is not None:
            split = ns.split or cfg.data.test_split
            items = [it for it in collect_inputs([ns.manifest], ns.root or cfg.data.root)
                     if split == "all" or it.extra.get("split") == split]
            scorer = VideoScorer(model, cfg, build_cropper(cfg), batch_size=ns.batch_size, aggregate=ns.aggregate,
                                 max_seconds=ns.max_seconds, device=ns.device, precision=ns.precision)
            out = ns.out_dir / "predictions.csv"
            add(ns.name, f"{out} (split {split})", run_inference(scorer, items, out, threshold=ns.threshold))
        if ns.cache:
            split = ns.split or cfg.data.val_split
            clips = ev.score_clips(model, cfg, ns.cache, split, ns.batch_size, ns.device, ns.precision)
            write_predictions_csv(clips, ns.out_dir / "clip_predictions.csv")
            add(f"{ns.name} (clip level)", f"{ns.cache} (split {split})", clips, level="clip")
    if not runs:
        p.error("nothing to evaluate: give --predictions, --compare, or --weights with --manifest/--cache")
    print(ev.write_report(runs, ns.out_dir, ns.by[0]))
    print(f"wrote {ns.out_dir / 'report.md'} and {ns.out_dir / 'metrics.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
