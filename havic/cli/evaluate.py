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
Everything goes to --out-dir (default runs/evaluate-<timestamp>): report.md, metrics.json and, when
scoring, the predictions CSV (with its journal). Scoring settings and the threshold default to the
configuration's infer section (flags and infer.* overrides). An evaluation with nothing to evaluate
(e.g. a manifest without the split asked for) is an error.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from havic import evaluation as ev
from havic.checkpoints import CheckpointError, load_detector
from havic.cli._common import (
    EXIT_FAILED, EXIT_OK, default_device, default_out_dir, fail, make_parser, terminate_cleanly,
)
from havic.config import CHOICES, ConfigError, InferConfig, load_config, split_items
from havic.data.manifest import ManifestError, read_manifest
from havic.inference import VideoScorer, build_cropper, collect_inputs, infer_overrides, run_inference
from havic.metrics import AGGREGATIONS
from havic.precision import PRECISIONS
from havic.predictions import read_predictions, write_predictions_csv
from havic.utils.io import remove_stale_temps


def main(argv: list[str] | None = None) -> int:
    d = InferConfig
    p = make_parser(__doc__)
    p.add_argument("config", nargs="*", help="YAML config files and key=value overrides (infer.*, and with --weights)")
    p.add_argument("--predictions", nargs="+", type=Path, help="prediction CSV/JSON files (several: runs)")
    p.add_argument("--compare", action="append", default=[], metavar="NAME=P1,P2", help="a method and its runs")
    p.add_argument("--name", default="havic", help="method name of --predictions in the runs table")
    p.add_argument("--allow-untrained-heads", action="store_true",
                   help="score with a detector whose heads were never trained; every row is flagged untrained_heads")
    p.add_argument("--manifest", type=Path, help="manifest CSV: labels, categories, the split to score")
    p.add_argument("--weights", help="detector to score --manifest (video level) and/or --cache (clip level)")
    p.add_argument("--cache", type=Path, help="clip cache for clip-level evaluation")
    p.add_argument("--root", type=Path, help="dataset root of the manifest paths (default: data.root)")
    p.add_argument("--split", help="split to score (default: data.test_split; clip level: data.val_split); "
                                   "'all' scores every row (cross-dataset manifests without splits)")
    p.add_argument("--by", nargs="+", default=["category"], metavar="COLUMN", help="grouping columns")
    p.add_argument("--threshold", type=float, help=f"ACC threshold (infer.threshold, {d.threshold})")
    p.add_argument("--out-dir", type=Path, help="where the report goes (default: runs/evaluate-<timestamp>)")
    p.add_argument("--batch-size", type=int, help=f"windows/clips per forward pass (infer.batch_size, {d.batch_size})")
    p.add_argument("--aggregate", choices=AGGREGATIONS, help=f"infer.aggregate ({d.aggregate})")
    p.add_argument("--max-seconds", type=float, help="infer.max_seconds (whole videos)")
    p.add_argument("--device", default=default_device(), help="where the model runs: cuda where available, else cpu")
    p.add_argument("--precision", choices=PRECISIONS,
                   help=f"model arithmetic (infer.precision, {d.precision}): bf16 autocast is about 2x faster on "
                        "CPUs with AVX512-BF16 and on GPUs; fp16 needs CUDA")
    p.add_argument("--preset", choices=CHOICES["infer.preset"],
                   help=f"infer.preset ({d.preset}): official rebuilds the official script's windows to reproduce "
                        "published numbers (README Scoring)")
    ns = p.parse_intermixed_args(argv)
    ns.out_dir = ns.out_dir or default_out_dir("evaluate")
    remove_stale_temps(ns.out_dir)  # left by an evaluation killed while writing
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        with terminate_cleanly():
            return _run(p, ns)
    except (CheckpointError, ConfigError, ManifestError, ValueError, OSError) as err:
        return fail(err)
    except KeyboardInterrupt:
        print(f"interrupted: scored rows are in {ns.out_dir / 'predictions.csv'} and its journal", file=sys.stderr)
        return 130


def _run(p: argparse.ArgumentParser, ns: argparse.Namespace) -> int:
    tables = [c for c in ns.config if c.lower().endswith((".csv", ".json"))]
    if tables:
        p.error(f"{tables[0]}: prediction files go after --predictions (positional items are YAML configs "
                "and key=value overrides)")
    config = [*ns.config, *infer_overrides(batch_size=ns.batch_size, aggregate=ns.aggregate, max_seconds=ns.max_seconds,
                                           precision=ns.precision, threshold=ns.threshold, preset=ns.preset)]
    # Without a detector the configuration still gives the infer settings (the threshold).
    model, cfg = (load_detector(ns.weights, ns.device, config_overrides=config,
                                allow_untrained_heads=ns.allow_untrained_heads) if ns.weights
                  else (None, load_config(*split_items(config))))
    runs = ev.RunSet(ns.by, float(cfg.infer.threshold), read_manifest(ns.manifest) if ns.manifest else None)
    for spec in ns.compare:
        method, _, files = spec.partition("=")
        if not files:
            p.error(f"--compare {spec!r}: expected NAME=P1.csv,P2.csv")
        for f in files.split(","):
            runs.add(method, f, read_predictions(f))
    for f in ns.predictions or []:
        runs.add(ns.name, str(f), read_predictions(f))
    scored: list = []  # rows this command scored itself (their failures decide the exit code)
    if model is not None and runs.manifest is not None:
        split = ns.split or cfg.data.test_split
        items = [it for it in collect_inputs([ns.manifest], ns.root or cfg.data.root)
                 if split == "all" or it.extra.get("split") == split]
        if not items:
            splits = sorted({r.split for r in runs.manifest}) or ["none"]
            return fail(f"{ns.manifest}: no videos in split {split!r} (its splits: {', '.join(splits)}); "
                        "--split all scores every row")
        scorer = VideoScorer(model, cfg, build_cropper(cfg), device=ns.device)
        out = ns.out_dir / "predictions.csv"
        scored += run_inference(scorer, items, out)
        runs.add(ns.name, f"{out} (split {split})", scored)
    if model is not None and ns.cache:
        split = ns.split or cfg.data.val_split
        clips = ev.score_clips(model, cfg, ns.cache, split, device=ns.device)
        if not clips:
            return fail(f"{ns.cache}: no clips in split {split!r}; --split names another")
        write_predictions_csv(clips, ns.out_dir / "clip_predictions.csv")
        runs.add(f"{ns.name} (clip level)", f"{ns.cache} (split {split})", clips, level="clip")
    if not runs.runs:
        p.error("nothing to evaluate: give --predictions, --compare, or --weights with --manifest/--cache")
    empty = [ev_.name for evs in runs.runs.values() for ev_ in evs if ev_.coverage["n"] == 0]
    if empty:
        return fail(f"nothing to evaluate in {', '.join(empty)}: no rows")
    print(ev.write_report(runs.runs, ns.out_dir, ns.by[0]))
    print(f"wrote {ns.out_dir / 'report.md'} and {ns.out_dir / 'metrics.json'}")
    return EXIT_FAILED if any(row.error for row in scored) else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
