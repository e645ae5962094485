"""Score whole videos with sliding windows: one row per input in a CSV (and JSON), optional picture report.

Usage:
    python tools/infer.py INPUTS... --weights W [--official] [--out predictions.csv] [--json P.json]
        [--report-dir DIR] [--batch-size N] [--aggregate mean|max|lse] [--hop-seconds S]
        [--max-seconds S] [--device cpu|cuda] [--face-detector retinaface|haar] [--face-weights DIR]
        [--root R] [--resume] [CONFIG.yaml ...] [key=value ...]

INPUTS are video files, folders (searched recursively for video files) and manifest CSVs (their
labels and categories are carried into the rows; relative paths start at --root, data.root, or the
manifest's folder). Every input video gets exactly one row: failures are rows with an error reason.
Scoring settings default to the configuration's infer section: ``--hop-seconds 0.8`` and
``infer.hop_s=0.8`` are the same setting (the flag wins when both are given).
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import torch

from havic.checkpoints import CheckpointError, load_detector
from havic.config import ConfigError, InferConfig
from havic.data.manifest import ManifestError
from havic.inference import VideoScorer, build_cropper, collect_inputs, infer_overrides, run_inference, summary_text
from havic.metrics import AGGREGATIONS
from havic.precision import PRECISIONS


def main(argv: list[str] | None = None) -> int:
    d = InferConfig
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("inputs", nargs="+", help="videos, folders, manifest CSVs; also CONFIG.yaml and key=value")
    p.add_argument("--weights", required=True, help="detector weights (havic file/checkpoint or official HAVIC)")
    p.add_argument("--official", action="store_true", help="read --weights as an official HAVIC state dict")
    p.add_argument("--out", type=Path, default=Path("predictions.csv"), help="predictions CSV")
    p.add_argument("--json", type=Path, help="also write the predictions as JSON")
    p.add_argument("--report-dir", type=Path, help="write a PNG per video and index.html here")
    p.add_argument("--batch-size", type=int, help=f"windows per forward pass (infer.batch_size, {d.batch_size})")
    p.add_argument("--aggregate", choices=AGGREGATIONS, help=f"window logits -> video logit (infer.aggregate, "
                                                             f"{d.aggregate})")
    p.add_argument("--hop-seconds", type=float, help=f"distance between window starts (infer.hop_s, {d.hop_s})")
    p.add_argument("--max-seconds", type=float, help="score only the first seconds, flag truncated "
                                                     "(infer.max_seconds, whole videos)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--precision", choices=PRECISIONS,
                   help=f"model arithmetic (infer.precision, {d.precision}): bf16 autocast is about 2x faster on "
                        "CPUs with AVX512-BF16 and on GPUs (window logits within about 0.01 of fp32, see README "
                        "Performance); fp16 needs CUDA")
    p.add_argument("--face-detector", choices=("retinaface", "haar"), help="overrides data.face.detector")
    p.add_argument("--face-weights", help="FaceX-Zoo models folder for retinaface (data.face.weights)")
    p.add_argument("--root", type=Path, help="root of relative manifest paths (default: data.root)")
    p.add_argument("--threshold", type=float, help=f"decision threshold in the report (infer.threshold, "
                                                   f"{d.threshold})")
    p.add_argument("--resume", action="store_true", help="keep the rows of an existing --out, score the rest")
    p.add_argument("--no-progress", action="store_true")
    ns = p.parse_intermixed_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    config = [a for a in ns.inputs if "=" in a or a.endswith((".yaml", ".yml"))]
    inputs = [a for a in ns.inputs if a not in config]
    if ns.face_detector:
        config.append(f"data.face.detector={ns.face_detector}")
    if ns.face_weights:
        config.append(f"data.face.weights={ns.face_weights}")
    config += infer_overrides(hop_s=ns.hop_seconds, aggregate=ns.aggregate, batch_size=ns.batch_size,
                              max_seconds=ns.max_seconds, precision=ns.precision, threshold=ns.threshold)
    try:
        model, cfg = load_detector(ns.weights, ns.device, official=True if ns.official else None,
                                   config_overrides=config)
        items = collect_inputs(inputs, ns.root or cfg.data.root)
        scorer = VideoScorer(model, cfg, build_cropper(cfg), device=ns.device, n_samples=6 if ns.report_dir else 0)
    except (CheckpointError, ConfigError, ManifestError, ValueError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    preds = run_inference(scorer, items, ns.out, ns.json, ns.report_dir, resume=ns.resume,
                          progress=not ns.no_progress)
    print(summary_text(preds))
    print(f"wrote {ns.out}" + (f", {ns.json}" if ns.json else "") + (f", {ns.report_dir}/index.html"
                                                                     if ns.report_dir else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
