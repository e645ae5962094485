"""Extract frozen-encoder features of videos into a feature store, resumably.

Usage:
    havic extract-features EXTRACTOR WEIGHTS INPUT [INPUT ...] --out STORE [--workers N] [--shard i/N]
        [options] [key=value ...]

EXTRACTOR is havic, wav2vec2, clip or videomae. WEIGHTS is a HAVIC weights file (pretraining
export or detector) for havic; a Hugging Face model id (read from the local cache) or a folder
saved with save_pretrained for the others. INPUT: video files, folders, or manifest CSVs.

Examples:
    havic extract-features havic runs/finetune/detector.safetensors favc.csv --root /data/favc --out feats/havic
    havic extract-features wav2vec2 facebook/wav2vec2-xls-r-2b favc.csv --out feats/xlsr --shard 0/4

A rerun skips the videos already stored (failed ones too, unless --retry-failed); a store written
with other settings is refused and the keys that differ are named. key=value items override the
HAVIC weights' stored configuration (e.g. data.face.detector=haar).
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path

from havic.cli._common import default_device, fail, make_parser, terminate_cleanly
from havic.cli.preprocess import parse_shard
from havic.data.manifest import ManifestError
from havic.features.havic_encoder import HAVIC_MODES
from havic.features.registry import EXTRACTORS, build_extractor
from havic.features.run import extract_to_store
from havic.features.store import STORE_DTYPES
from havic.inference import collect_inputs
from havic.utils.io import remove_stale_temps


def main(argv: list[str] | None = None) -> int:
    p = make_parser(__doc__)
    p.add_argument("extractor", choices=sorted(EXTRACTORS), help="the encoder family")
    p.add_argument("weights", help="HAVIC weights file, or a Hugging Face model id or folder")
    p.add_argument("inputs", nargs="+", help="video files, folders, manifest CSVs; key=value HAVIC overrides")
    p.add_argument("--out", type=Path, required=True, help="the feature store folder")
    p.add_argument("--root", type=Path, help="dataset root of manifest paths (default: the manifest's folder)")
    p.add_argument("--device", default=default_device(), help="where the encoder runs")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"], help="encoder precision")
    p.add_argument("--batch-size", type=int, default=8, help="windows, frames or chunks per forward pass")
    p.add_argument("--mode", default="segments", choices=HAVIC_MODES,
                   help="havic: per-segment rows of non-overlapping windows, or one row per window")
    p.add_argument("--hop-s", type=float, help="havic --mode windows: window hop (default: infer.hop_s)")
    p.add_argument("--store-dtype", default="float32", choices=sorted(STORE_DTYPES), help="values on disk")
    p.add_argument("--shard", type=parse_shard, default="0/1", metavar="i/N",
                   help="this job's part: the inputs whose index modulo N is i")
    p.add_argument("--workers", type=int, default=1,
                   help="extraction processes, each with its own encoder (decoding and face crops in parallel)")
    p.add_argument("--random-init", type=int, nargs="?", const=0, metavar="SEED",
                   help="the encoder's random-initialisation twin (fresh weights from SEED, default 0): the "
                        "shortcut baseline; the store records it")
    p.add_argument("--retry-failed", action="store_true", help="redo inputs that failed before")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    ns = p.parse_intermixed_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    overrides = [a for a in ns.inputs if "=" in a and not Path(a).exists()]
    inputs = [a for a in ns.inputs if a not in overrides]
    if overrides and ns.extractor != "havic":
        return fail(f"key=value overrides ({', '.join(overrides)}) apply to the havic extractor only")
    if not inputs:
        return fail("no inputs given")
    try:
        items = collect_inputs(inputs, ns.root)
    except (ManifestError, FileNotFoundError) as err:
        return fail(err)
    if ns.workers < 1:
        return fail(f"--workers must be >= 1, got {ns.workers}")
    spec = dict(name=ns.extractor, weights=ns.weights, device=ns.device, precision=ns.precision,
                batch_size=ns.batch_size, config_overrides=overrides, mode=ns.mode, hop_s=ns.hop_s,
                random_init=ns.random_init)
    try:
        extractor = build_extractor(**spec)
    except (OSError, ValueError) as err:
        return fail(f"{ns.weights}: {err}")
    remove_stale_temps(ns.out, recursive=True)
    with terminate_cleanly():
        try:
            summary = extract_to_store(extractor, items, ns.out, shard=ns.shard, retry_failed=ns.retry_failed,
                                       store_dtype=ns.store_dtype, progress=not ns.no_progress,
                                       workers=ns.workers, extractor_spec=spec)
        except ValueError as err:
            return fail(err)
    print(summary.text())
    return 1 if summary.failed else 0


if __name__ == "__main__":
    sys.exit(main())
