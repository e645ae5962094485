"""Preprocess the videos of a manifest into a clip cache (face crops + raw fbanks), resumably.

Usage:
    python tools/preprocess.py MANIFEST --root ROOT --out CACHE_DIR [CONFIG ...] [key=value ...]
        [--workers N] [--shard i/N] [--retry-failed] [--reindex]

Example:
    python tools/preprocess.py favc.csv --root /data/FakeAVCeleb_v1.2 --out /cache/favc \\
        data.face.weights=/models/facexzoo --workers 8

A re-run skips videos already done (failed ones too, unless --retry-failed); --shard i/N takes the
rows whose index modulo N is i, so N machines can share one cache folder. --reindex only rebuilds
index.csv and failures.csv. Clip length, fps, crop size and face and fbank settings come from the
configuration (data.*, model.video.image_size, model.audio.num_mel_bins).
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from havic.cli._common import fail, make_parser
from havic.config import ConfigError, load_config
from havic.data.cache import ClipCache, build_index
from havic.data.manifest import ManifestError, read_manifest
from havic.data.preprocess import PreprocessSettings, RunSummary, format_summary, run
from havic.utils.io import remove_stale_temps


def parse_shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected i/N, got {text!r}") from None
    if n < 1 or not 0 <= i < n:
        raise argparse.ArgumentTypeError(f"need 0 <= i < N, got {text!r}")
    return i, n


def main(argv: list[str] | None = None) -> int:
    p = make_parser(__doc__)
    p.add_argument("manifest", type=Path, help="manifest CSV (tools/build_manifest.py)")
    p.add_argument("args", nargs="*", help="YAML config files and key=value overrides")
    p.add_argument("--root", type=Path, help="dataset root of the manifest paths (default: data.root)")
    p.add_argument("--out", type=Path, help="cache folder (default: data.cache_dir)")
    p.add_argument("--workers", type=int, default=1, help="worker processes (each has its own detector)")
    p.add_argument("--shard", type=parse_shard, default="0/1", metavar="i/N",
                   help="this job's part: the rows whose index modulo N is i")
    p.add_argument("--retry-failed", action="store_true", help="redo videos that failed before")
    p.add_argument("--reindex", action="store_true", help="only rebuild index.csv and failures.csv")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    ns = p.parse_intermixed_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        cfg = load_config([a for a in ns.args if "=" not in a], [a for a in ns.args if "=" in a])
        rows = read_manifest(ns.manifest).rows
    except (ConfigError, ManifestError, FileNotFoundError) as err:
        return fail(err)
    out = ns.out or (Path(cfg.data.cache_dir) if cfg.data.cache_dir else None)
    root = ns.root or (Path(cfg.data.root) if cfg.data.root else None)
    if out is None:
        return fail("give --out or data.cache_dir")
    if root is not None and not root.is_dir():
        return fail(f"dataset root {root} is not a folder")
    settings = PreprocessSettings.from_config(cfg)
    remove_stale_temps(out, recursive=True)  # left by workers killed while writing; live workers keep theirs
    try:
        if ns.reindex:
            ClipCache(out).check_settings(settings.cache_settings())
            summary = RunSummary(index=build_index(out, rows))
        else:
            summary = run(rows, root, out, settings, workers=ns.workers, shard=ns.shard,
                          retry_failed=ns.retry_failed, progress=not ns.no_progress)
    except (ValueError, FileNotFoundError) as err:
        return fail(err)
    print(format_summary(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
