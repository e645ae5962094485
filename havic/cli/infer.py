"""Score whole videos with sliding windows: one row per input in a CSV (and JSON), optional picture report.

Usage:
    python tools/infer.py INPUTS... --weights W [--official] [--out predictions.csv] [--json P.json]
        [--report-dir DIR] [--batch-size N] [--aggregate mean|max|lse] [--hop-seconds S]
        [--max-seconds S] [--preset corrected|official] [--device cpu|cuda]
        [--face-detector retinaface|haar] [--face-weights DIR] [--root R] [--resume | --resume-mixed]
        [--allow-untrained-heads] [CONFIG.yaml ...] [key=value ...]

INPUTS are video files, folders (searched recursively for video files; other files are listed in a
warning) and manifest CSVs (their labels and categories are carried into the rows; relative paths
start at --root, data.root, or the manifest's folder). Every input video gets exactly one row:
failures are rows with an error reason. A file reached by two paths is scored once.
Scoring settings default to the configuration's infer section: ``--hop-seconds 0.8`` and
``infer.hop_s=0.8`` are the same setting (the flag wins when both are given).

Every finished row is on disk at once, in <out>.journal.jsonl; the CSV (and JSON) are rewritten
from it every 20 videos and at the end, also on SIGTERM. --resume keeps the rows of an earlier run
of the same --out (CSV and journal) and scores the rest; rows made with other settings (weights,
windows, aggregation, precision, ...) are refused, naming them, unless --resume-mixed.
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path

from havic.checkpoints import CheckpointError, load_detector
from havic.cli._common import (
    EXIT_FAILED, EXIT_OK, default_device, default_out_dir, fail, make_parser, terminate_cleanly,
)
from havic.config import CHOICES, ConfigError, InferConfig
from havic.data.manifest import ManifestError
from havic.inference import (
    VIDEO_EXTENSIONS, VideoScorer, build_cropper, collect_inputs, infer_overrides, run_inference, summary_text,
)
from havic.inference.journal import ResumeError
from havic.metrics import AGGREGATIONS
from havic.precision import PRECISIONS


def main(argv: list[str] | None = None) -> int:
    d = InferConfig
    p = make_parser(__doc__)
    p.add_argument("inputs", nargs="+", help="videos, folders, manifest CSVs; also CONFIG.yaml and key=value")
    p.add_argument("--weights", required=True, help="detector weights (havic file/checkpoint or official HAVIC)")
    p.add_argument("--official", action="store_true", help="read --weights as an official HAVIC state dict")
    p.add_argument("--allow-untrained-heads", action="store_true",
                   help="score with a detector whose heads were never trained (e.g. convert_weights.py "
                        "pretrain-to-detector); every row is flagged untrained_heads")
    p.add_argument("--out", type=Path, help="predictions CSV (default: runs/infer-<timestamp>/predictions.csv)")
    p.add_argument("--json", type=Path, help="also write the predictions as JSON")
    p.add_argument("--report-dir", type=Path, help="write a PNG per video and index.html here")
    p.add_argument("--batch-size", type=int, help=f"windows per forward pass (infer.batch_size, {d.batch_size})")
    p.add_argument("--aggregate", choices=AGGREGATIONS, help=f"window logits -> video logit (infer.aggregate, "
                                                             f"{d.aggregate})")
    p.add_argument("--hop-seconds", type=float, help=f"distance between window starts (infer.hop_s, {d.hop_s})")
    p.add_argument("--max-seconds", type=float, help="score only the first seconds, flag truncated "
                                                     "(infer.max_seconds, whole videos)")
    p.add_argument("--device", default=default_device(), help="where the model runs: cuda where available, else cpu")
    p.add_argument("--precision", choices=PRECISIONS,
                   help=f"model arithmetic (infer.precision, {d.precision}): bf16 autocast is about 2x faster on "
                        "CPUs with AVX512-BF16 and on GPUs (window logits within about 0.01 of fp32, see README "
                        "Performance); fp16 needs CUDA")
    p.add_argument("--preset", choices=CHOICES["infer.preset"],
                   help=f"infer.preset ({d.preset}): official rebuilds the official script's windows (first 10 s, "
                        "crop margin 1.0, its audio sizing) to reproduce published numbers; see README Scoring")
    p.add_argument("--face-detector", choices=("retinaface", "haar"), help="overrides data.face.detector")
    p.add_argument("--face-weights", help="FaceX-Zoo models folder for retinaface (data.face.weights)")
    p.add_argument("--root", type=Path, help="root of relative manifest paths (default: data.root)")
    p.add_argument("--threshold", type=float, help=f"decision threshold in the report (infer.threshold, "
                                                   f"{d.threshold})")
    p.add_argument("--resume", action="store_true",
                   help="keep the rows of an existing --out (CSV and journal) made with the same settings, "
                        "score the rest")
    p.add_argument("--resume-mixed", action="store_true",
                   help="--resume, keeping rows made with other settings too (each row names its settings id)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    ns = p.parse_intermixed_args(argv)
    ns.resume = ns.resume or ns.resume_mixed
    if ns.resume and ns.out is None:
        return fail("--resume needs --out: the predictions CSV of the run to resume")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    config = [a for a in ns.inputs if "=" in a or a.endswith((".yaml", ".yml"))]
    inputs = [a for a in ns.inputs if a not in config]
    if ns.face_detector:
        config.append(f"data.face.detector={ns.face_detector}")
    if ns.face_weights:
        config.append(f"data.face.weights={ns.face_weights}")
    config += infer_overrides(hop_s=ns.hop_seconds, aggregate=ns.aggregate, batch_size=ns.batch_size,
                              max_seconds=ns.max_seconds, precision=ns.precision, threshold=ns.threshold,
                              preset=ns.preset)
    out = ns.out or default_out_dir("infer") / "predictions.csv"
    try:
        model, cfg = load_detector(ns.weights, ns.device, official=True if ns.official else None,
                                   config_overrides=config, allow_untrained_heads=ns.allow_untrained_heads)
        scorer = VideoScorer(model, cfg, build_cropper(cfg), device=ns.device, n_samples=6 if ns.report_dir else 0)
        items = collect_inputs(inputs, ns.root or cfg.data.root)
        if not items:
            return fail(f"nothing to score: no video files in {', '.join(inputs) or 'the inputs'} (folders are "
                        f"searched for files ending in {', '.join(VIDEO_EXTENSIONS)})")
    except (CheckpointError, ConfigError, ManifestError, ValueError, RuntimeError, OSError) as err:
        return fail(err)
    try:
        with terminate_cleanly():
            preds = run_inference(scorer, items, out, ns.json, ns.report_dir, resume=ns.resume,
                                  resume_mixed=ns.resume_mixed, progress=not ns.no_progress)
    except ResumeError as err:
        return fail(err)
    except KeyboardInterrupt:
        print(f"interrupted: the finished rows are in {out} and its journal; --resume goes on", file=sys.stderr)
        return 130
    print(summary_text(preds))
    print(f"wrote {out}" + (f", {ns.json}" if ns.json else "") + (f", {ns.report_dir}/index.html"
                                                                  if ns.report_dir else ""))
    listed = preds[:len(items)]
    return EXIT_FAILED if any(p.error for p in listed) else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
